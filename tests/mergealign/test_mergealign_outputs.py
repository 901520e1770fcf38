"""Issue 18: a merge is written all or nothing, and never beside the files of an earlier merge.

The reported case: a folder holding a single-file merge, merged again with `--out-shard-size 100K`, kept the old
`model.safetensors` beside the new shards, and `from_pretrained` loaded the OLD weights.
"""

import pytest
import torch
from mergealign_files import write_config
from safetensors.torch import load_file

from hf_ext.cli import main
from hf_ext.mergealign import merge


def _weights(folder):
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _loaded(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _run(kind, config, out, *options):
    """Merge with the command (`--overwrite` where the folder is not empty) or with the Python API."""
    if kind == "command":
        flags = ["--overwrite"] if out.exists() and any(out.iterdir()) else []
        assert main(["merge", str(config), str(out), "--quiet", "--no-copy-tokenizer", *options, *flags]) == 0
    else:
        shard = dict(zip(options[::2], options[1::2])).get("--out-shard-size")
        merge(config, out, quiet=True, copy_tokenizer=False, **({"out_shard_size": 100_000} if shard else {}))


@pytest.mark.parametrize("kind", ["command", "python"])
def test_a_sharded_merge_replaces_an_earlier_single_file_merge(tmp_path, triple, kind):
    out = tmp_path / "merged"
    _run(kind, write_config(tmp_path / "first.yaml", triple, alpha=0.2), out)
    assert (out / "model.safetensors").is_file()
    (out / "notes.txt").write_text("the user's notes")
    second = write_config(tmp_path / "second.yaml", triple, alpha=0.9)
    _run(kind, second, out, "--out-shard-size", "100K")
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert len([f for f in files if f.endswith(".safetensors")]) > 1
    # the command replaces the folder as a whole; the API, as save_pretrained, keeps files of other kinds
    assert ("notes.txt" in files) == (kind == "python")
    merge(second, tmp_path / "expected", quiet=True, copy_tokenizer=False)
    expected = _weights(tmp_path / "expected")
    loaded = _loaded(out)
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)  # the NEW weights
    assert "alpha: 0.9" in (out / "mergekit_config.yml").read_text()


def test_the_command_refuses_a_non_empty_folder_without_overwrite(tmp_path, triple, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"earlier")
    assert main(["merge", str(write_config(tmp_path / "c.yaml", triple)), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "hf-ext merge: error: The output folder" in err and "pass --overwrite" in err and "Traceback" not in err
    assert (out / "model.safetensors").read_bytes() == b"earlier"


@pytest.mark.parametrize("kind", ["command", "python"])
def test_a_failed_merge_leaves_the_folder_as_it_was(tmp_path, triple, monkeypatch, kind):
    out = tmp_path / "merged"
    config = write_config(tmp_path / "c.yaml", triple)
    _run(kind, config, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import mergekit.merge

    real_run_merge = mergekit.merge.run_merge

    def crash_after_writing(*args, **kwargs):
        real_run_merge(*args, **kwargs)  # every tensor written to the staging folder, then a crash
        raise RuntimeError("killed")

    monkeypatch.setattr(mergekit.merge, "run_merge", crash_after_writing)
    with pytest.raises(RuntimeError, match="killed"):
        _run(kind, write_config(tmp_path / "other.yaml", triple, alpha=0.9), out, "--out-shard-size", "100K")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")] == []


def test_a_missing_local_model_path_in_the_config_is_named(tmp_path, triple, capsys):
    config = write_config(tmp_path / "c.yaml", triple)
    config.write_text(config.read_text().replace(str(triple["domain"]), "./models/domain-typo"))
    with pytest.raises(FileNotFoundError, match=r"model='./models/domain-typo'.*tried it as a local path"):
        merge(config, tmp_path / "out")
    assert main(["merge", str(config), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "tried it as a local path" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def _sweep_argv(tmp_path, triple, out):
    from datasets import Dataset

    Dataset.from_list([{"text": "Q: hi\nA: I cannot help with that."}] * 2).to_json(tmp_path / "safety.jsonl")
    Dataset.from_list([{"text": "The dose of Valorin is 20 mg."}] * 2).to_json(tmp_path / "domain.jsonl")
    config = write_config(tmp_path / "merge.yaml", triple)
    return ["mergealign-sweep", "--merge_config", str(config), "--safety_dataset", str(tmp_path / "safety.jsonl"),
            "--domain_dataset", str(tmp_path / "domain.jsonl"), "--alphas", "0.5", "--output_dir", str(out)]  # fmt: skip


def test_the_sweep_replaces_its_folder_whole_or_not_at_all(tmp_path, triple, monkeypatch, capsys):
    import hf_ext.mergealign.sweep

    out = tmp_path / "sweep"
    out.mkdir()
    (out / "stale.txt").write_text("an earlier sweep")
    argv = _sweep_argv(tmp_path, triple, out)
    assert main(argv) == 2 and "pass --overwrite_output_dir" in capsys.readouterr().err
    real_sweep = hf_ext.mergealign.sweep.sweep_alpha

    def crash_after_writing(*args, **kwargs):
        real_sweep(*args, **kwargs)  # the table, the scores and the plot written, then a crash
        raise RuntimeError("killed")

    monkeypatch.setattr(hf_ext.mergealign.sweep, "sweep_alpha", crash_after_writing)
    with pytest.raises(RuntimeError, match="killed"):
        main([*argv, "--overwrite_output_dir", "true"])
    assert sorted(p.name for p in out.iterdir()) == ["stale.txt"]
    monkeypatch.setattr(hf_ext.mergealign.sweep, "sweep_alpha", real_sweep)
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "per_sample_scores.safetensors", "sweep.json",
                                                      "sweep.md"]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sweep")] == []


def test_a_sweep_killed_before_its_swap_leaves_the_earlier_one(tmp_path, triple):
    """Issue 29: killed with SIGKILL (no cleanup runs) once its new folder is written beside the earlier one."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "sweep"
    argv = _sweep_argv(tmp_path, triple, out)
    assert main(argv) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    env = {**os.environ, "HF_EXT_FAULT_POINT": "staged"}
    killed = subprocess.run([sys.executable, "-m", "hf_ext", *argv, "--overwrite_output_dir", "true"], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0  # and the next run removes what the killed one left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sweep")] == []
