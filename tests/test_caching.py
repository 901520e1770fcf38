import multiprocessing
import time

import pytest

from hf_ext.caching import build_once, cache_root


def _slow_build(log_path):
    def build(staging):
        with open(log_path, "a") as log:
            log.write("built\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one builds
        (staging / "config.json").write_text("{}")

    return build


def _build_in_process(target, log_path):
    build_once(target, _slow_build(log_path))


def test_concurrent_callers_build_once(tmp_path):
    target, log_path = tmp_path / "cache" / "model-abc", tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_build_in_process, args=(target, log_path)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert log_path.read_text().splitlines() == ["built"]
    assert (target / "config.json").read_text() == "{}"
    assert build_once(target, _slow_build(log_path)) == target  # cached: no third build
    assert log_path.read_text().splitlines() == ["built"]


def test_a_failed_or_incomplete_build_leaves_nothing(tmp_path):
    target = tmp_path / "model"

    def failing(staging):
        (staging / "half.bin").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, failing)
    with pytest.raises(RuntimeError, match="wrote no 'done'"):
        build_once(target, lambda staging: None, marker="done")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_an_interrupted_older_folder_is_replaced(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")  # no marker: an earlier build that did not finish
    build_once(target, lambda staging: (staging / "config.json").write_text("{}"))
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


def test_cache_root_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_EXT_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    assert cache_root(tmp_path / "given") == tmp_path / "given"


def test_hash_recipe_names_the_settings_not_their_order():
    from hf_ext.caching import hash_recipe

    recipe = {"version": 1, "steps": 200, "nested": {"a": 1, "b": [1, 2]}}
    reordered = {"nested": {"b": [1, 2], "a": 1}, "steps": 200, "version": 1}
    assert hash_recipe(recipe) == hash_recipe(reordered)
    assert hash_recipe(recipe) != hash_recipe({**recipe, "steps": 201})
    assert len(hash_recipe(recipe)) == 12 and int(hash_recipe(recipe), 16) >= 0
