"""Issue 29: a writer killed at any point leaves the old result or the new one, never a mix; two writers never share a
folder; files the user owns are never replaced.

The writers run in subprocesses killed with SIGKILL (no cleanup runs) at the named points of `hf_ext.transactions`
(`HF_EXT_FAULT_POINT`), or held there (`<point>:pause`) while a second writer tries the same folder.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hf_ext import transactions
from hf_ext.serialization import atomic_directory, staged_save


POINTS = ["staged", "journaled", "moving", "committed"]

# A writer in a fresh interpreter: `mode` "install" saves two files into the folder (as a save_pretrained does), "swap"
# replaces the folder as a whole (as a command does). The new files hold "new"; the old ones "old".
WRITER = """
import sys
from pathlib import Path
from hf_ext.serialization import atomic_directory, staged_save
mode, folder = sys.argv[1], Path(sys.argv[2])
if mode == "swap-fallback":  # a system without an atomic exchange: two journaled renames
    import hf_ext.transactions
    hf_ext.transactions._exchange = lambda first, second: False
if mode == "install":
    with staged_save(folder, replace=["weights-*.bin", "memory.bin", "config.json"]) as staging:
        (staging / "weights-1.bin").write_text("new")
        (staging / "memory.bin").write_text("new")
        (staging / "config.json").write_text("new")
else:
    with atomic_directory(folder, overwrite=True) as staging:
        (staging / "weights-1.bin").write_text("new")
        (staging / "result.json").write_text("new")
print("done", flush=True)
"""


def _write(mode, folder, point=None, **popen):
    env = {**os.environ, "HF_EXT_FAULT_POINT": point or ""}
    return subprocess.Popen([sys.executable, "-c", WRITER, mode, str(folder)], env=env, text=True, **popen)


def _old_result(folder, mode):
    folder.mkdir()
    if mode == "install":  # fmt: skip
        (folder / "weights-1.bin").write_text("old")
        (folder / "weights-2.bin").write_text("old")  # an earlier save's shard the new save does not write
        (folder / "memory.bin").write_text("old")
        (folder / "config.json").write_text("old")
        (folder / "notes.txt").write_text("the user's")  # not a file of the artefact: always kept
        return {"weights-1.bin": "old", "weights-2.bin": "old", "memory.bin": "old", "config.json": "old",
                "notes.txt": "the user's"}  # fmt: skip
    (folder / "weights-1.bin").write_text("old")
    (folder / "report.md").write_text("old")
    return {"weights-1.bin": "old", "report.md": "old"}


NEW = {
    "install": {"weights-1.bin": "new", "memory.bin": "new", "config.json": "new", "notes.txt": "the user's"},
    "swap": {"weights-1.bin": "new", "result.json": "new"},
}
NEW["swap-fallback"] = NEW["swap"]
# The points each kind of write passes (an atomic exchange has no journal and nothing half-moved)
CASES = [(mode, point) for mode in ("install", "swap-fallback") for point in POINTS]
CASES += [("swap", point) for point in ("staged", "committed")]


def _content(folder):
    return {p.name: p.read_text() for p in folder.iterdir()} if folder.is_dir() else None


def _beside(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


@pytest.mark.parametrize(("mode", "point"), CASES)
def test_a_writer_killed_at_any_point_leaves_the_old_or_the_new_result(tmp_path, mode, point):
    folder = tmp_path / "out"
    old = _old_result(folder, mode)
    process = _write(mode, folder, point)
    assert process.wait(timeout=60) == -signal.SIGKILL
    # what a reader finds once the next writer or loader has recovered the folder
    with transactions.output_lock(folder):
        transactions.remove_litter(folder)
    found = _content(folder)
    assert found in (old, NEW[mode]), found
    # killed before the journal was removed: rolled back to the old result; after it: the new one
    assert found == (NEW[mode] if point == "committed" else old)
    assert _beside(folder) == []  # no journal, staging, backup or lock survives
    # and the next run completes normally
    assert _write(mode, folder).wait(timeout=60) == 0
    assert _content(folder) == NEW[mode] and _beside(folder) == []


def test_the_swap_is_one_atomic_exchange_where_the_system_has_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    if transactions._exchange(tmp_path / "a", tmp_path / "b"):  # Linux, on a filesystem that takes RENAME_EXCHANGE
        assert (tmp_path / "b" / "x").read_text() == "a" and not (tmp_path / "a" / "x").exists()
    else:  # elsewhere nothing moved, and replace_directory falls back to its journaled renames
        assert (tmp_path / "a" / "x").read_text() == "a" and not (tmp_path / "b" / "x").exists()


def test_a_loader_rolls_back_a_save_killed_half_way(tmp_path):
    from hf_ext.seal.filtering import SEALScores

    folder = tmp_path / "scores"
    SEALScores(["a" * 64, "b" * 64], [1.0, 2.0], hash_fields=("text",)).save_pretrained(folder)
    code = (
        "import sys; from hf_ext.seal.filtering import SEALScores; "
        "SEALScores(['c' * 64], [3.0], hash_fields=('text',)).save_pretrained(sys.argv[1])"
    )
    env = {**os.environ, "HF_EXT_FAULT_POINT": "moving"}
    assert subprocess.run([sys.executable, "-c", code, str(folder)], env=env).returncode == -signal.SIGKILL
    assert transactions.interrupted(folder)
    loaded = SEALScores.from_pretrained(folder)  # recovers first: the save before the killed one, whole
    assert len(loaded) == 2 and not transactions.interrupted(folder) and _beside(folder) == []


@pytest.mark.parametrize("mode", ["install", "swap"])
def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, mode):
    folder = tmp_path / "out"
    _old_result(folder, mode)
    env_pause = {"HF_EXT_FAULT_PAUSE": "30"}
    first = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode, str(folder)],
        env={**os.environ, **env_pause, "HF_EXT_FAULT_POINT": "staged:pause"},
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):  # the first writer is mid-write
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        started = time.monotonic()
        locked = pytest.raises(
            transactions.OutputLockedError, match=rf"being written by another run \(pid {first.pid} "
        )
        with locked, transactions.output_lock(folder):
            pass
        second = _write(mode, folder, stderr=subprocess.PIPE)
        _, err = second.communicate(timeout=60)
        assert second.returncode != 0 and f"pid {first.pid}" in err and str(folder) in err
        assert time.monotonic() - started < 20  # at once: not after the first one's 30 s pause
        # killed while holding the lock: the lock goes with the process, and the half-made write is rolled back
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert _write(mode, folder).wait(timeout=60) == 0
        assert _content(folder) == NEW[mode] and _beside(folder) == []
    finally:
        if first.poll() is None:
            first.kill()


def test_the_lock_is_reentrant_and_released(tmp_path):
    folder = tmp_path / "out"
    with transactions.output_lock(folder):
        assert transactions.holds_lock(folder)
        with transactions.output_lock(folder):  # a command saving into the folder it locked
            pass
        assert transactions.holds_lock(folder) and transactions.lock_path(folder).exists()
        holder = json.loads(transactions.lock_path(folder).read_text())
        assert holder["pid"] == os.getpid()
    assert not transactions.holds_lock(folder) and not transactions.lock_path(folder).exists()


def test_a_symlinked_folder_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "report.md").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with atomic_directory(link, overwrite=True) as staging:
        (staging / "report.md").write_text("new")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "report.md").read_text() == "new"
    with staged_save(link, replace=["report.md"]) as staging:
        (staging / "report.md").write_text("newer")
    assert link.is_symlink() and (real / "report.md").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_litter_of_other_folders_is_not_touched(tmp_path):
    # ".a.b.<random>.partial" is the staging of folder "a.b", not of "a"
    other = tmp_path / ".a.b.abcd1234.partial"
    other.mkdir()
    own = tmp_path / ".a.abcd1234.partial"
    own.mkdir()
    with transactions.output_lock(tmp_path / "a"):
        removed = transactions.remove_litter(tmp_path / "a")
    assert removed == [own] and other.is_dir()


def test_a_users_readme_is_never_replaced_and_our_card_is_refreshed(tmp_path, caplog):
    from hf_ext.seal.filtering import SEALScores

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("# My model\nthe user's own card\n")
    scores = SEALScores(["a" * 64], [1.0], hash_fields=("text",))
    scores.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# My model\nthe user's own card\n"
    assert "README.md that hf-ext did not write; it is kept" in caplog.text
    own = tmp_path / "scores"
    scores.save_pretrained(own)
    assert (own / "README.md").read_text() == str(scores.model_card())
    newer = SEALScores(["a" * 64, "b" * 64], [1.0, 2.0], hash_fields=("text",), metadata={"keep_ratio": 0.5})
    newer.save_pretrained(own)  # a card hf-ext wrote is refreshed on every save
    assert (own / "README.md").read_text() == str(newer.model_card()) != str(scores.model_card())


def test_a_file_of_another_kind_is_never_replaced(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text('{"the user": "config"}')
    refused = pytest.raises(FileExistsError, match="already holds config.json, which this save would replace but did")
    with refused, staged_save(folder, replace=["weights.bin"]) as staging:
        (staging / "weights.bin").write_text("new")
        (staging / "config.json").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert (folder / "config.json").read_text() == '{"the user": "config"}'
    assert _beside(folder) == []
