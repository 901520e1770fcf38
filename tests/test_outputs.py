"""Issue 18, item 2: every folder hf-ext writes is written all or nothing, into a fresh or emptied folder.

The commands refuse an existing file or a non-empty folder as their output before any model is loaded (a flag
replaces it); what they write appears in one step, with no file of an earlier run beside it; a failure leaves the
folder as it was. The Python `save_pretrained`s replace the earlier files of their own kind, as transformers' do.
"""

import json
import re
from pathlib import Path

import pytest
import torch
import transformers

from hf_ext.cli import main
from hf_ext.scripts.utils import CommandError, check_training_output, save_training_output
from hf_ext.seal.data import content_hash
from hf_ext.seal.filtering import SEALScores
from hf_ext.transactions import release_process_locks, run_folder


STALE = "stale-from-an-earlier-run.txt"


def _leftovers(folder):
    """Staging folders a write left beside `folder` (there must be none)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _command_argv(name, tmp_path, out):
    texts = tmp_path / "texts.txt"
    texts.write_text("a text\nanother text\n")
    table = tmp_path / "scores.jsonl"
    table.write_text("".join(json.dumps({"model": m, "r": r}) + "\n" for m in "ab" for r in range(4)))
    config = tmp_path / "merge.yml"
    config.write_text("merge_method: linear\nmodels: []\n")
    models = ["--base_model", "nobody/base", "--domain_model", "nobody/domain", "--alignment_model", "nobody/aligned"]
    return {
        "aot": ["--model_name_or_path", "nobody/model", "--dataset_name", "hf-ext-testing/synthetic-preferences"],
        "larimar-train": [
            "--encoder_name_or_path", "nobody/encoder", "--decoder_name_or_path", "nobody/decoder",
            "--dataset_name", "hf-ext-testing/larimar-facts", "--per_device_train_batch_size", "16",
        ],
        "seal-rank": [
            "--model_name_or_path", "nobody/model", "--dataset_name", "nobody/data",
            "--safe_dataset_name", "nobody/safe",
        ],
        "sasa-fit": ["--model_name_or_path", "nobody/model", "--desired_file", str(texts),
                     "--undesired_file", str(texts)],
        "seal-filter": ["--scores", "nobody/scores", "--dataset_name", "nobody/data"],
        "mergealign-sweep": [*models, "--safety_dataset", "nobody/safety", "--domain_dataset", "nobody/domain-data"],
        "merge": [str(config)],
        "risk": [str(table), "--metrics", "r"],
    }[name] + {"merge": [str(out)], "risk": ["--output-dir", str(out)]}.get(
        name, ["--output_dir", str(out)])  # fmt: skip


# command -> (its option that replaces a non-empty folder, or the message of its own policy)
OUTPUT_COMMANDS = {
    "aot": "pass --overwrite_output_dir",
    "larimar-train": "pass --overwrite_output_dir",
    "seal-rank": "pass --overwrite_output_dir",
    "sasa-fit": "pass --overwrite_output_dir",
    "seal-filter": "pass --overwrite_output_dir",
    "mergealign-sweep": "pass --overwrite_output_dir",
    "merge": "pass --overwrite",
    "risk": "not an earlier report; refusing to replace it",  # a report folder replaces only an earlier report
}


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    for auto_class in (transformers.AutoModelForCausalLM, transformers.AutoModel, transformers.AutoTokenizer):
        monkeypatch.setattr(auto_class, "from_pretrained", refuse)


@pytest.mark.parametrize("target", ["non-empty folder", "existing file"])
@pytest.mark.parametrize("name", sorted(OUTPUT_COMMANDS))
def test_commands_refuse_an_occupied_output_before_any_work(name, target, tmp_path, capsys, no_model_loading):
    out = tmp_path / "out"
    if target == "existing file":
        out.write_text("someone's file")
        expected = "is an existing file|exists and is a file"
    else:
        out.mkdir()
        (out / STALE).write_text("earlier run")
        expected = OUTPUT_COMMANDS[name]
    argv = [name, *_command_argv(name, tmp_path, out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"hf-ext {name}: error: ") and str(out) in line
    assert re.search(expected, line), line
    # untouched: the file or the stale entry is still there, nothing new beside it
    assert (out.read_text() == "someone's file") if out.is_file() else sorted(p.name for p in out.iterdir()) == [STALE]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(folder)` takes the write permission away from `folder` (chmod a-w) for the test. Root may write
    anywhere, so when the tests run as root `os.access` answers for such a folder as it does for any other user."""
    import os

    locked = []
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if mode & os.W_OK and any(os.path.samefile(path, folder) for folder in locked if os.path.exists(path)):
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)

    def lock(folder):
        folder.chmod(0o555)
        locked.append(folder)
        return folder

    yield lock
    for folder in locked:
        folder.chmod(0o755)


@pytest.mark.parametrize("target", ["read-only parent", "read-only folder"])
@pytest.mark.parametrize("name", sorted([*OUTPUT_COMMANDS, "demo"]))
def test_commands_refuse_an_output_folder_they_cannot_write_before_any_work(
    name, target, tmp_path, capsys, no_model_loading, read_only
):
    """Issue 29: a read-only output folder (or a folder it would be created in) was a bare PermissionError after the
    work; it is one line naming the folder, before any model loads or any input is read."""
    parent = tmp_path / "locked"
    parent.mkdir()
    out = parent / "out"
    if target == "read-only folder":
        out.mkdir()
        read_only(out)
        expected = rf"The output folder {re.escape(str(out))} cannot be written: it is not writable by this user"
    else:
        read_only(parent)
        expected = (
            rf"The output folder {re.escape(str(out))} cannot be written: {re.escape(str(parent))}, where it would be "
            "created, is not writable by this user"
        )
    argv = [name, "--output-dir", str(out), "--stages", "aot"] if name == "demo" else [
        name, *_command_argv(name, tmp_path, out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"hf-ext {name}: error: "), line
    assert re.search(expected, line) and "(permission denied). Choose an output folder you can write to" in line, line
    assert sorted(p.name for p in parent.iterdir()) == ([out.name] if out.exists() else [])


def test_an_output_folder_whose_parent_cannot_receive_the_staging_folder_is_refused(tmp_path, read_only):
    """An output replaced as a whole is built beside the folder: the folder holding it must be writable too."""
    from hf_ext._validation import check_writable_directory

    (tmp_path / "locked" / "out").mkdir(parents=True)
    read_only(tmp_path / "locked")
    with pytest.raises(PermissionError, match=r"the folder holding it, .*locked, is not writable by this user"):
        check_writable_directory(tmp_path / "locked" / "out")
    check_writable_directory(tmp_path / "locked" / "out", replaced_whole=False)  # a training run writes inside it
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cannot be created: .*file is an existing file, not a folder"):
        check_writable_directory(tmp_path / "file" / "out")


def test_risk_with_a_bad_alpha_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["risk", *_command_argv("risk", tmp_path, out)[:-2], "--alpha", "2", "--output-dir", str(out)]) == 2
    assert "hf-ext risk: error: --alpha=2.0 is out of range" in capsys.readouterr().err
    assert not out.exists() and _leftovers(out) == []


# ------------------------------------------------------------------ SEAL scores and seal-filter, written for real


def _text_dataset_file(tmp_path, n=8):
    rows = [{"text": f"example number {i}"} for i in range(n)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    scores = SEALScores([content_hash(row, ("text",)) for row in rows], torch.arange(n, dtype=torch.float32),
                        hash_fields=("text",))  # fmt: skip
    return path, scores


@pytest.mark.parametrize("fail", [False, True])
def test_seal_filter_replaces_the_folder_or_leaves_it_as_it_was(tmp_path, monkeypatch, capsys, fail):
    # a local .jsonl works as --dataset_name (as --help says), and so does a local scores folder
    data, scores = _text_dataset_file(tmp_path)
    scores.save_pretrained(tmp_path / "scores")
    out = tmp_path / "kept"
    out.mkdir()
    (out / STALE).write_text("earlier run")
    if fail:
        import hf_ext.plotting

        def broken(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(hf_ext.plotting, "save_figure", broken)
    argv = ["seal-filter", "--scores", str(tmp_path / "scores"), "--dataset_name", str(data), "--keep_ratio", "0.5"]
    argv += ["--output_dir", str(out), "--overwrite_output_dir", "true"]
    if fail:
        with pytest.raises(RuntimeError, match="disk full"):
            main(argv)
        assert sorted(p.name for p in out.iterdir()) == [STALE]
    else:
        assert main(argv) == 0
        import datasets

        kept = datasets.load_from_disk(str(out))
        assert sorted(kept["train"]["text"]) == [f"example number {i}" for i in range(4, 8)]  # the top half
        assert not (out / STALE).exists() and (out / "README.md").is_file() and (out / "seal_scores.png").is_file()
    assert _leftovers(out) == []


def test_save_pretrained_replaces_the_files_of_its_kind_and_keeps_others(tmp_path, monkeypatch):
    _, scores = _text_dataset_file(tmp_path)
    folder = tmp_path / "scores"
    SEALScores(scores.hashes[:2], [1.0, 2.0], hash_fields=("text",)).save_pretrained(folder)
    (folder / "notes.txt").write_text("the user's own notes")
    scores.save_pretrained(folder)
    assert len(SEALScores.from_pretrained(folder)) == 8
    assert (folder / "notes.txt").read_text() == "the user's own notes"
    # a save that fails leaves the earlier one whole
    monkeypatch.setattr(SEALScores, "model_card", lambda self: (_ for _ in ()).throw(RuntimeError("card failed")))
    with pytest.raises(RuntimeError, match="card failed"):
        SEALScores(scores.hashes[:1], [1.0], hash_fields=("text",)).save_pretrained(folder)
    assert len(SEALScores.from_pretrained(folder)) == 8 and _leftovers(folder) == []
    with pytest.raises(NotADirectoryError, match="existing file"):
        scores.save_pretrained(folder / "notes.txt")


# ------------------------------------------------------------------ the training commands' output folder


class FakeArgs:
    def __init__(self, output_dir, resume_from_checkpoint=None):
        self.output_dir = str(output_dir)
        self.resume_from_checkpoint = resume_from_checkpoint
        self.should_save = True

    def to_dict(self):
        return {"output_dir": self.output_dir}


class FakeTrainer:
    """What the output helpers use of a `Trainer`: `args` and `accelerator.wait_for_everyone`."""

    def __init__(self, output_dir, **kwargs):
        self.args = FakeArgs(output_dir, **kwargs)
        self.accelerator = type("Accelerator", (), {"wait_for_everyone": staticmethod(lambda: None)})()


def _earlier_run(folder):
    folder.mkdir()
    (folder / "model.safetensors").write_text("the earlier run's weights")
    (folder / "config.json").write_text("{}")
    (folder / "checkpoint-3").mkdir()
    (folder / "checkpoint-3" / "trainer_state.json").write_text("{}")


def _write_final(folder):
    (folder / "model-00001-of-00002.safetensors").write_text("new shard 1")
    (folder / "model-00002-of-00002.safetensors").write_text("new shard 2")
    (folder / "config.json").write_text('{"new": true}')
    (folder / "training_args.bin").write_bytes(b"a pickle, as Trainer.save_model writes")


@pytest.mark.parametrize("resume", [False, True])
def test_a_training_run_never_leaves_an_earlier_runs_file_beside_its_model(tmp_path, resume):
    out = tmp_path / "run"
    _earlier_run(out)
    args = FakeArgs(out, resume_from_checkpoint="true" if resume else None)
    if resume:  # a resumed finished run continues in its folder: no flag needed, its checkpoints stay
        final = check_training_output(args, overwrite=False)
        assert args.resume_from_checkpoint == str(out / "checkpoint-3") and Path(args.output_dir) == out
    else:
        with pytest.raises(CommandError, match="already holds 3 entries .* pass --overwrite_output_dir"):
            check_training_output(FakeArgs(out), overwrite=False)
        release_process_locks()
        final = check_training_output(args, overwrite=True)
        # the new run works beside the folder: the earlier run is untouched until the new one ends
        assert Path(args.output_dir) == run_folder(out) and (out / "model.safetensors").exists()
    trainer = FakeTrainer(out)
    trainer.args = args
    save_training_output(trainer, _write_final, final)
    release_process_locks()
    expected = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    expected.append("training_args.json")  # never the pickle Trainer.save_model writes
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + (["checkpoint-3"] if resume else []))
    assert json.loads((out / "config.json").read_text()) == {"new": True}
    assert json.loads((out / "training_args.json").read_text()) == {"output_dir": str(out)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no run folder, backup or lock left beside it


def test_resume_true_without_any_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="holds a complete checkpoint-\\* folder to resume from"):
        check_training_output(FakeArgs(tmp_path / "run", resume_from_checkpoint="last"), overwrite=False)
    release_process_locks()


def test_a_failed_final_save_leaves_no_final_model(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint-2").mkdir()  # what a run has written before its final save

    def failing(folder):
        (folder / "model.safetensors").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        save_training_output(FakeTrainer(out), failing)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["checkpoint-2"]
    release_process_locks()


def test_an_existing_file_as_output_dir_is_a_clear_error(tmp_path):
    (tmp_path / "run").write_text("x")
    for resume in (None, True):
        with pytest.raises(CommandError, match="is an existing file; expected a folder"):
            check_training_output(FakeArgs(tmp_path / "run", resume_from_checkpoint=resume), overwrite=True)
        release_process_locks()


@pytest.mark.slow
def test_aot_overwrite_output_dir_replaces_an_earlier_run(tmp_path):
    out = tmp_path / "run"
    _earlier_run(out)
    recipe = Path(__file__).resolve().parents[1] / "trainers" / "aot.yaml"
    argv = ["aot", "--config", str(recipe), "--synthetic_train_size", "16", "--max_steps", "1", "--save_strategy",
            "no", "--disable_tqdm", "true", "--output_dir", str(out)]  # fmt: skip
    assert main(argv) == 2  # refused without the flag
    assert main([*argv, "--overwrite_output_dir", "true"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "checkpoint-3" not in names and "model.safetensors" in names and "config.json" in names
    assert (out / "model.safetensors").read_bytes()[:8] != b"the earl"
    assert transformers.AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


@pytest.mark.parametrize("where", ["working directory", "its parent", "home"])
def test_overwrite_never_replaces_the_working_directory_or_home(where, tmp_path, monkeypatch):
    from hf_ext.serialization import OutputExistsError, atomic_directory

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "precious.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path))
    target = {"working directory": ".", "its parent": "..", "home": "~"}[where]
    with (
        pytest.raises(OutputExistsError, match="Choose a folder of its own"),
        atomic_directory(target, overwrite=True),
    ):
        raise AssertionError("the folder was accepted")
    with pytest.raises(CommandError, match="would replace everything in it"):
        check_training_output(FakeArgs(target), overwrite=True)
    # risk replaces an earlier report without a flag: never when that report sits in the working directory or home
    from hf_ext.risk.outputs import atomic_directory as report_directory

    (Path(target).expanduser() / "report.md").write_text("# an earlier report")
    with pytest.raises(ValueError, match="would replace everything in it"), report_directory(target):
        raise AssertionError("the folder was accepted")
    assert (tmp_path / "work" / "precious.txt").read_text() == "keep me"


def test_outputs_get_the_permissions_of_a_plain_mkdir_and_open(tmp_path):
    import os

    from hf_ext.serialization import atomic_directory, write_text

    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "report") as staging:
            write_text(staging / "report.md", "# report")
        SEALScores(["00" * 16], [1.0], hash_fields=("text",)).save_pretrained(tmp_path / "scores")
    finally:
        os.umask(mask)
    for folder in (tmp_path / "report", tmp_path / "scores"):
        assert folder.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0o700
        for file in folder.iterdir():
            assert file.stat().st_mode & 0o777 == 0o644, file  # not mkstemp's 0o600
