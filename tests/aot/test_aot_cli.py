"""`hf-ext aot --config trainers/aot.yaml [--any_field value]`."""

import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import hf_ext.aot.trainer
from hf_ext.cli import main


RECIPE = Path(__file__).resolve().parents[2] / "trainers" / "aot.yaml"
QUICK = ["--max_steps", "2", "--save_steps", "2", "--synthetic_train_size", "32", "--disable_tqdm", "true"]


@pytest.mark.slow
def test_recipe_trains_offline_and_saves_model_card_and_plot(tmp_path):
    out = tmp_path / "run"
    assert main(["aot", "--config", str(RECIPE), "--output_dir", str(out), "--aot_cost", "hinge", *QUICK]) == 0
    assert (out / "model.safetensors").exists() and (out / "checkpoint-2" / "aot_reward_quantiles.png").exists()
    assert (out / "aot_reward_quantiles.png").read_bytes()[:4] == b"\x89PNG"
    data = ModelCard.load(out / "README.md").data.to_dict()
    assert data["datasets"] == "hf-ext-testing/synthetic-preferences"
    config = data["hf_ext"]["config"]
    # from the recipe, and from the command line over the recipe
    assert (config["aot_variant"], config["beta"], config["sorted_batch_size"]) == ("paired", 0.01, 16)
    assert config["aot_cost"] == "hinge"


@pytest.mark.slow
def test_unpaired_recipe(tmp_path):
    out = tmp_path / "run"
    argv = ["aot", "--config", str(RECIPE), "--output_dir", str(out), "--aot_variant", "unpaired"]
    assert main([*argv, "--dataset_name", "hf-ext-testing/synthetic-unpaired", *QUICK]) == 0
    assert ModelCard.load(out / "README.md").data.to_dict()["hf_ext"]["config"]["aot_variant"] == "unpaired"


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    assert main(["aot", "--config", str(RECIPE), "--output_dir", str(tmp_path), "--beta", "0"]) == 2
    err = capsys.readouterr().err
    assert "hf-ext aot: error: beta=0.0 is out of range" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["aot", "--config", str(RECIPE), "--output_dir", str(tmp_path), "--aot_cost", "cubic"])
    assert exit_info.value.code == 2 and "invalid choice: 'cubic'" in capsys.readouterr().err


def test_a_hub_model_id_is_passed_through(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(model, **kwargs):
        seen.update(model=model, **kwargs)
        raise Stop

    monkeypatch.setattr(hf_ext.aot.trainer, "AOTTrainer", fake_trainer)
    with pytest.raises(Stop):
        main(["aot", "--config", str(RECIPE), "--output_dir", str(tmp_path),
              "--model_name_or_path", "HuggingFaceTB/SmolLM2-135M-Instruct", "--use_peft", "true", "--lora_r", "4"])  # fmt: skip
    assert seen["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not replaced by a tiny model
    assert seen["peft_config"].r == 4 and seen["args"].aot_variant == "paired"
    assert len(seen["train_dataset"]) == 256 and set(seen["train_dataset"].column_names) == {
        "prompt",
        "chosen",
        "rejected",
    }
    monkeypatch.undo()
    # the default is offline
    with pytest.raises(Stop):
        monkeypatch.setattr(hf_ext.aot.trainer, "AOTTrainer", fake_trainer)
        main(["aot", "--config", str(RECIPE), "--output_dir", str(tmp_path)])
    assert Path(seen["model"]).is_dir() and (Path(seen["model"]) / "config.json").exists()


@pytest.mark.slow
def test_runs_as_a_module_for_launchers():
    # `accelerate launch -m hf_ext.cli aot ...` / `torchrun -m hf_ext.cli aot ...` run the CLI as `__main__`.
    result = subprocess.run(
        [sys.executable, "-m", "hf_ext.cli", "aot", "--config", str(RECIPE), "--beta", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "hf-ext aot: error: beta=0.0 is out of range" in result.stderr
