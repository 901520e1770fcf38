"""`hf-ext sasa-fit` and `hf-ext sasa-generate`, run from the recipes in processors/ (offline, planted-task model)."""

import json
from pathlib import Path

import pytest
import torch

from hf_ext.cli import main
from hf_ext.sasa import SASAProbe
from hf_ext.testing.sasa import PlantedToxicityTask


ROOT = Path(__file__).resolve().parents[2]


def test_shipped_recipe_data_is_the_planted_tasks():
    task = PlantedToxicityTask()
    desired, undesired = task.probe_texts(300)
    data = ROOT / "processors" / "data"
    assert (data / "sasa_planted_desired.txt").read_text().splitlines() == desired
    assert (data / "sasa_planted_undesired.txt").read_text().splitlines() == undesired
    assert (data / "sasa_planted_prompts.txt").read_text().splitlines() == task.prompts(8, seed=2)


@pytest.fixture(scope="module")
def fitted_probe_dir(tmp_path_factory, planted):
    out = tmp_path_factory.mktemp("cli") / "probe"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        assert main(["sasa-fit", "--config", "processors/sasa_fit.yaml", "--output_dir", str(out)]) == 0
    return out


def test_sasa_fit_saves_the_probe_of_the_recipes_texts(fitted_probe_dir, planted, capsys):
    model, tokenizer = planted
    probe = SASAProbe.from_pretrained(fitted_probe_dir, model=model)
    data = ROOT / "processors" / "data"
    expected = SASAProbe.fit(
        model,
        tokenizer,
        (data / "sasa_planted_desired.txt").read_text().splitlines(),
        (data / "sasa_planted_undesired.txt").read_text().splitlines(),
        batch_size=64,
        show_progress=False,
    )
    torch.testing.assert_close(probe.direction, expected.direction, atol=1e-5, rtol=0)
    assert probe.fit_info["num_desired"] == 300 and probe.fit_info["train_accuracy"] > 0.9
    assert (fitted_probe_dir / "README.md").read_text().count("SASA probe") >= 1


def test_sasa_generate_with_and_without_sasa(fitted_probe_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "gen.jsonl"
    plot = tmp_path / "margins.png"
    args = ["sasa-generate", "--config", "processors/sasa_generate.yaml", "--probe", str(fitted_probe_dir)]
    assert main([*args, "--output_file", str(out), "--trace_plot", str(plot), "--beta", "0"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sasa = [r["continuation"] for r in records if r["sasa"]]
    base = [r["continuation"] for r in records if not r["sasa"]]
    assert len(sasa) == len(base) == 16  # 8 prompts x 2 continuations
    assert sasa == base  # beta = 0 is plain nucleus sampling, token for token, with the same seed
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "32 continuations written" in capsys.readouterr().out  # both settings
    more = ["--prompt", "n01 t0", "--compare", "false", "--trace_plot", str(tmp_path / "second.png")]
    assert main([*args, "--output_file", str(out), "--beta", "16", *more]) == 0
    steered = [json.loads(line) for line in out.read_text().splitlines()]
    # --prompt replaces the recipe's prompts file: the one prompt, twice (num_return_sequences 2)
    assert len(steered) == 2 and {r["prompt"] for r in steered} == {"n01 t0"} and all(r["sasa"] for r in steered)
    task = PlantedToxicityTask()
    toxic = task.judge([r["continuation"] for r in steered], [r["prompt"] for r in steered])
    base_toxic = task.judge(base, [r["prompt"] for r in records if not r["sasa"]])
    assert sum(toxic) == 0 and sum(base_toxic) >= 3


def test_bad_configuration_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    model = ["--model_name_or_path", "hf-ext-testing/sasa-planted"]
    assert (
        main(["sasa-fit", *model, "--desired_file", "x.txt", "--undesired_file", "y.txt", "--shrinkage", "lots"]) == 2
    )
    assert "shrinkage='lots' is out of range" in capsys.readouterr().err
    assert main(["sasa-fit", *model, "--desired_file", "x.txt"]) == 2
    assert "desired_file and undesired_file are both required" in capsys.readouterr().err
    assert main(["sasa-fit", *model, "--desired_file", "missing.txt", "--undesired_file", "y.txt"]) == 2
    assert "desired_file='missing.txt' does not exist" in capsys.readouterr().err
    assert main(["sasa-generate", *model, "--prompt", "n01", "--top_p", "0"]) == 2
    assert "top_p=0.0 is out of range" in capsys.readouterr().err
    assert main(["sasa-generate", *model, "--prompt", "n01", "--probe", str(tmp_path)]) == 2
    assert "is not a SASA probe" in capsys.readouterr().err
    assert (
        main(["sasa-fit", *model, "--desired_file", "x.txt", "--undesired_file", "y.txt", "--prompts_file", "p.txt"])
        == 2
    )
    assert "Give exactly one source of texts" in capsys.readouterr().err
    assert main(["sasa-fit", *model, "--prompts_file", "p.txt", "--layer", "best"]) == 2
    assert "layer='best' is not supported; expected 'auto' or an integer" in capsys.readouterr().err
    assert main(["sasa-fit", *model, "--prompts_file", "p.txt", "--judge", "gpt"]) == 2
    assert "judge='gpt' is not supported" in capsys.readouterr().err
    assert main(["sasa-fit", "--desired_file", "x.txt", "--undesired_file", "y.txt"]) == 2
    assert "model_name_or_path is required" in capsys.readouterr().err


def test_sasa_fit_from_a_corpus_labelled_by_the_judge(tmp_path, tiny_llama_path, capsys):
    pytest.importorskip("profanity_check")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(
            [
                "You are a stupid idiot and I hate you.",
                "Shut up, you worthless piece of crap.",
                "What a damn useless moron he is.",
                "Thank you, that was very kind of you.",
                "We walked along the river at dawn.",
                "A cup of tea and a good book tonight.",
                "She smiled and waved at the neighbours.",
            ]
        )
    )
    out = tmp_path / "probe"
    args = ["sasa-fit", "--model_name_or_path", str(tiny_llama_path), "--texts_file", str(corpus)]
    assert main([*args, "--output_dir", str(out), "--layer", "-1"]) == 0
    probe = SASAProbe.from_pretrained(out)
    assert probe.fit_info["labelled_by"] == "ProfanityCheckJudge" and probe.fit_info["source_texts"] == 7
    assert probe.fit_info["num_undesired"] > 0 and probe.fit_info["prefixes"] is True
    assert "undesired texts, layer -1 (given)" in capsys.readouterr().out


def test_sasa_fit_says_when_the_judge_finds_nothing_undesired(tmp_path, capsys):
    pytest.importorskip("profanity_check")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("n01 t0\nn02 n03\n")  # the planted model writes no English, so nothing is profane
    args = ["sasa-fit", "--model_name_or_path", "hf-ext-testing/sasa-planted", "--prompts_file", str(prompts)]
    assert main([*args, "--num_continuations", "2", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "o")]) == 2
    assert "judge labelled no text undesired" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


CHECK = [
    "--check_prompts", "processors/data/sasa_planted_prompts.txt", "--judge", "hf-ext-testing/sasa-planted",
    "--check_beta", "4", "--check_normalize", "none", "--check_max_candidates", "10", "--check_max_new_tokens", "6",
    "--max_texts", "80", "--layer", "-1", "--batch_size", "64",
]  # fmt: skip


def test_sasa_fit_checks_the_steering_before_saving(tmp_path, planted, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    data = ["--model_name_or_path", "hf-ext-testing/sasa-planted"]
    desired, undesired = "processors/data/sasa_planted_desired.txt", "processors/data/sasa_planted_undesired.txt"
    # the labels swapped: a probe whose desired side is the toxic one steers towards toxicity, and is not saved
    swapped = ["--desired_file", undesired, "--undesired_file", desired, "--output_dir", str(tmp_path / "swapped")]
    assert main(["sasa-fit", *data, *swapped, *CHECK]) == 2
    error = capsys.readouterr().err
    assert "raises the judge's mean toxicity" in error and "WORSE than no steering" in error
    assert "The probe was not saved" in error and not (tmp_path / "swapped").exists()
    # the right labels: checked, saved, and the check's figures recorded with the probe
    right = ["--desired_file", desired, "--undesired_file", undesired, "--output_dir", str(tmp_path / "probe")]
    assert main(["sasa-fit", *data, *right, *CHECK]) == 0
    assert "Steering check: SASA at beta=4 lowers the judge's mean toxicity" in capsys.readouterr().out
    check = SASAProbe.from_pretrained(tmp_path / "probe").fit_info["steering_check"]
    assert check["harmful"] is False and check["change"] < 0 and check["num_prompts"] == 8
    assert check["continuations_per_prompt"] == 4 and check["judge"] == "PlantedToxicityTask.judge"


def test_bad_check_settings_are_one_line_errors(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["sasa-fit", "--model_name_or_path", "hf-ext-testing/sasa-planted", "--desired_file", "x.txt"]
    args += ["--undesired_file", "y.txt", "--check_prompts", "p.txt"]
    assert main([*args, "--check_beta", "0"]) == 2
    assert "check_beta=0.0 is out of range" in capsys.readouterr().err
    assert main([*args, "--check_normalize", "minmax"]) == 2
    assert "check_normalize='minmax' is not supported" in capsys.readouterr().err
    assert main([*args, "--check_seeds", "3", "3"]) == 2
    assert "check_seeds=[3, 3] must be one or more distinct integers" in capsys.readouterr().err
