"""Issue 18, item 3: every entry point that takes a name or path tries it as a local path first; a Hub id only when
it cannot be one; the error says which was tried (and, for a Hub id, what the Hub said). Truncated safetensors
files are named in their error."""

import json

import pytest
import torch

import hf_ext.aot.trainer
from hf_ext.cli import main
from hf_ext.mergealign.lora import LoraAdapter, lora_task_vector
from hf_ext.mergealign.sweep import load_evaluation_dataset
from hf_ext.mergealign.weights import CheckpointWeights
from hf_ext.sasa.probe import SASAProbe
from hf_ext.scripts.utils import CommandError, load_any_dataset, load_causal_lm
from hf_ext.seal.filtering import SEALScores
from hf_ext.serialization import load_tensors, save_tensors


LOCAL = "tried it as a local path"

# entry point -> a call with a name that can only be a local path, which does not exist
LIBRARY_ENTRY_POINTS = {
    "SEALScores.from_pretrained": lambda: SEALScores.from_pretrained("./seal-scores-typo"),
    "SASAProbe.from_pretrained": lambda: SASAProbe.from_pretrained("runs/probes/sasa-probe"),
    "lora_task_vector": lambda: lora_task_vector("path/to/adapter"),
    "load_evaluation_dataset": lambda: load_evaluation_dataset("safety.jsonl"),
    "load_causal_lm": lambda: load_causal_lm("./models/tiny-typo"),
    "load_any_dataset": lambda: load_any_dataset("train.jsonl"),
}


@pytest.mark.parametrize("entry_point", sorted(LIBRARY_ENTRY_POINTS))
def test_a_missing_local_path_is_named_as_a_local_path(entry_point, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((FileNotFoundError, CommandError), match=LOCAL) as error:
        LIBRARY_ENTRY_POINTS[entry_point]()
    assert "Hub said" not in str(error.value) and "Repo id must" not in str(error.value)


def _texts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Hello\n")
    return path


def _preferences(tmp_path, n=6):
    path = tmp_path / "preferences.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": " yes", "rejected": " no"} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# command -> its arguments with one missing local path, the option that names it
COMMAND_CASES = {
    "sasa-generate --probe": lambda t: ["sasa-generate", "--probe", "./probe-typo", "--model_name_or_path",
                                        "hf-ext-testing/tiny-llama", "--prompts_file", str(_texts(t))],
    "seal-filter --scores": lambda t: ["seal-filter", "--scores", "./scores-typo", "--dataset_name", "x/y",
                                       "--output_dir", str(t / "out")],
    "seal-filter --dataset_name": lambda t: ["seal-filter", "--scores", str(t / "scores"), "--dataset_name",
                                             "data.jsonl", "--output_dir", str(t / "out")],
    "aot --dataset_name": lambda t: ["aot", "--model_name_or_path", "hf-ext-testing/tiny-llama", "--dataset_name",
                                     "prefs.jsonl", "--output_dir", str(t / "out")],
    "aot --model_name_or_path": lambda t: ["aot", "--model_name_or_path", "./my-model", "--dataset_name",
                                           str(_preferences(t)), "--output_dir", str(t / "out")],
    "larimar-train --encoder_name_or_path": lambda t: [
        "larimar-train", "--encoder_name_or_path", "./encoder-typo", "--decoder_name_or_path",
        "hf-ext-testing/tiny-gpt2", "--dataset_name", "hf-ext-testing/larimar-facts", "--num_episodes", "2",
        "--per_device_train_batch_size", "16", "--output_dir", str(t / "out")],
    "seal-rank --safe_dataset_name": lambda t: ["seal-rank", "--model_name_or_path", "x/y", "--dataset_name",
                                                str(_preferences(t)), "--safe_dataset_name", "safe.jsonl",
                                                "--output_dir", str(t / "out")],
    "mergealign-sweep --base_model": lambda t: ["mergealign-sweep", "--base_model", "./base-typo", "--domain_model",
                                                "a/b", "--alignment_model", "c/d", "--safety_dataset", "s.jsonl",
                                                "--domain_dataset", "d.jsonl", "--output_dir", str(t / "out")],
    "risk INPUT": lambda t: ["risk", "./lm-eval-out-typo", "--output-dir", str(t / "out")],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_commands_name_a_missing_local_path_in_one_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    SEALScores(["00" * 16], [1.0], hash_fields=("text",)).save_pretrained(tmp_path / "scores")
    assert main(COMMAND_CASES[case](tmp_path)) == 2
    err = capsys.readouterr().err
    name = case.split()[0]
    assert "Traceback" not in err and "Repo id must" not in err and "Hub said" not in err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"hf-ext {name}: error: ")
    assert LOCAL in line or "no such file or folder" in line, line
    assert not (tmp_path / "out").exists()


class HubSaysNo(Exception):
    pass


def test_a_hub_id_that_fails_says_it_was_not_a_local_path_and_what_the_hub_said(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub
    import transformers

    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise HubSaysNo("401 Client Error: Repository Not Found for url")

    def refuse_os(*args, **kwargs):
        raise OSError("owner/missing is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse_os)
    cases = [
        (lambda: SEALScores.from_pretrained("owner/missing"), OSError, "Repository Not Found"),
        (lambda: load_any_dataset("owner/missing"), CommandError, "Repository Not Found"),
        (lambda: load_causal_lm("owner/missing"), CommandError, "not a valid model identifier"),
        (lambda: load_evaluation_dataset("owner/missing"), OSError, "Repository Not Found"),
    ]
    for call, error_type, said in cases:
        with pytest.raises(error_type) as error:
            call()
        message = str(error.value)
        assert "'owner/missing' is not a local path (nothing at" in message and "tried as a Hub" in message
        assert "the Hub said: " in message and said in message


def test_an_existing_file_where_a_folder_is_expected(tmp_path):
    (tmp_path / "scores.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; expected a folder"):
        SEALScores.from_pretrained(tmp_path / "scores.txt")


def test_local_jsonl_files_feed_aot_and_the_sweep(tmp_path, monkeypatch):
    data = _preferences(tmp_path)
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model, **kwargs):
        seen.update(model=model, **kwargs)
        raise Stop

    monkeypatch.setattr(hf_ext.aot.trainer, "AOTTrainer", fake_trainer)
    with pytest.raises(Stop):
        main(["aot", "--model_name_or_path", "hf-ext-testing/tiny-llama", "--dataset_name", str(data),
              "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert seen["train_dataset"]["prompt"] == [f"p{i}" for i in range(6)]
    assert load_evaluation_dataset(str(data))["chosen"] == [" yes"] * 6


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _scores_folder(tmp_path):
    SEALScores(["00" * 16, "11" * 16], [1.0, 2.0], hash_fields=("text",)).save_pretrained(tmp_path / "scores")
    _truncated(tmp_path / "scores" / "seal_scores.safetensors")
    return lambda: SEALScores.from_pretrained(tmp_path / "scores"), tmp_path / "scores" / "seal_scores.safetensors"


def _checkpoint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    save_tensors(folder / "model.safetensors", {"w": torch.ones(64, 64)})
    file = _truncated(folder / "model.safetensors")
    return lambda: CheckpointWeights(folder).get("w"), file


def _adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    save_tensors(folder / "adapter_model.safetensors", {"a": torch.ones(64, 64)})
    file = _truncated(folder / "adapter_model.safetensors")
    return lambda: LoraAdapter(folder), file


def _plain_file(tmp_path):
    save_tensors(tmp_path / "t.safetensors", {"t": torch.ones(64, 64)})
    file = _truncated(tmp_path / "t.safetensors")
    return lambda: load_tensors(file), file


def _model_for_a_command(tmp_path):
    import shutil

    from hf_ext.testing import resolve_model_name_or_path

    folder = shutil.copytree(resolve_model_name_or_path("hf-ext-testing/tiny-llama"), tmp_path / "model")
    file = _truncated(folder / "model.safetensors")
    return lambda: load_causal_lm(str(folder)), file


@pytest.mark.parametrize("make", [_plain_file, _scores_folder, _checkpoint, _adapter, _model_for_a_command])
def test_a_truncated_safetensors_file_is_named(make, tmp_path):
    call, file = make(tmp_path)
    with pytest.raises((ValueError, CommandError), match="truncated or corrupt") as error:
        call()
    assert str(file) in str(error.value)
