from pathlib import Path

import pytest
from datasets import load_from_disk

from hf_ext.cli import main


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_seal_rank_then_seal_filter_offline(tmp_path, aligned_path, capsys):
    out = tmp_path / "rank"
    status = main(
        [
            "seal-rank",
            "--config",
            str(ROOT / "trainers" / "seal.yaml"),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--disable_tqdm",
            "true",
        ]
    )
    assert status == 0
    assert "SEAL scores of 160 examples saved" in capsys.readouterr().out
    assert (out / "seal_scores" / "seal_scores.safetensors").exists() and (out / "model.safetensors").exists()

    filtered = tmp_path / "filtered"
    status = main(
        [
            "seal-filter",
            "--config",
            str(ROOT / "processors" / "seal_filter.yaml"),
            "--scores",
            str(out / "seal_scores"),
            "--output_dir",
            str(filtered),
            "--keep_ratio",
            "0.75",
        ]
    )
    assert status == 0
    kept = load_from_disk(str(filtered))
    assert len(kept["train"]) == 120  # floor(0.75 * 160)
    card = (filtered / "README.md").read_text()
    assert "| train | 120 | 40 |" in card and "Safe reference set: hf-ext-testing/seal-planted-safe" in card
    assert (filtered / "seal_scores.png").stat().st_size > 0


def test_seal_commands_report_bad_input_in_one_line(tmp_path, capsys):
    dataset = ["--dataset_name", "hf-ext-testing/seal-planted-finetune"]
    assert main(["seal-filter", "--scores", str(tmp_path / "missing"), *dataset, "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-ext seal-filter: error: cannot load SEAL scores") and len(err.strip().splitlines()) == 1
    assert main(["seal-filter", "--scores", "s", *dataset, "--keep_ratio", "1.5"]) == 2
    assert "keep_ratio=1.5 is out of range; expected a number in (0, 1]" in capsys.readouterr().err
    assert main(["seal-filter", *dataset]) == 2
    assert "scores is required" in capsys.readouterr().err
    assert main(["seal-rank", "--model_name_or_path", "hf-ext-testing/seal-aligned"]) == 2
    assert "--safe_dataset_name is required" in capsys.readouterr().err
    assert main(["seal-rank", "--safe_dataset_name", "hf-ext-testing/seal-planted-safe"]) == 2
    assert "--model_name_or_path is required" in capsys.readouterr().err
