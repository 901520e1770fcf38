import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from hf_ext.cli import COMMANDS, main
from hf_ext.scripts.utils import (
    CommandError,
    dataclass_parser,
    launch_under_accelerate,
    parse_dataclasses,
    run_command,
)


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


def test_unknown_subcommand_is_a_one_line_error_with_a_suggestion():
    result = run_module("hf_ext", "sasa-fitt")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "unknown command 'sasa-fitt' (did you mean 'sasa-fit'?)" in errors[0]


def test_python_dash_m_hf_ext_is_the_command():
    result = run_module("hf_ext", "--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)
    from hf_ext import __version__

    assert run_module("hf_ext", "--version").stdout.strip() == f"hf-ext {__version__}"


def test_bad_option_of_a_plain_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["env", "--nope"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


def test_env_reports_versions_and_device(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"- torch: {torch.__version__}" in out
    assert f"- transformers: {transformers.__version__}" in out
    assert "- Device: cpu" in out or "- Device: cuda" in out
    assert "- bitsandbytes backend: " in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_a_script_module(name):
    # As trl/scripts/: make_parser() and main(argv), and runnable on its own (python -m hf_ext.scripts.<module>).
    module = importlib.import_module(COMMANDS[name])
    assert module.__name__ == f"hf_ext.scripts.{name.replace('-', '_')}"
    assert callable(module.make_parser) and callable(module.main) and module.HELP
    assert name == module.NAME
    assert 'if __name__ == "__main__":' in Path(module.__file__).read_text(encoding="utf-8")


def test_a_script_module_runs_alone():
    result = run_module("hf_ext.scripts.env")
    assert result.returncode == 0 and f"- torch: {torch.__version__}" in result.stdout


@dataclasses.dataclass
class ToyArguments:
    steps: int = dataclasses.field(default=1, metadata={"help": "how many"})
    name: str = dataclasses.field(default="x", metadata={"help": "a name"})


def test_dataclass_parser_reads_config_and_overrides(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text("steps: 5\nname: from-yaml\n")
    parser = dataclass_parser("toy", "a toy", (ToyArguments,))
    assert parse_dataclasses(parser, ["--config", str(config), "--name", "from-cli"]) == (
        ToyArguments(steps=5, name="from-cli"),
    )


def test_dataclass_parser_rejects_unknown_option_as_one_line(capsys):
    parser = dataclass_parser("toy", "a toy", (ToyArguments,))

    def run():
        parse_dataclasses(parser, ["--stepz", "3"])

    assert run_command("toy", run) == 2
    err = capsys.readouterr().err
    assert "hf-ext toy: error:" in err and "--stepz" in err and "Traceback" not in err


def test_launch_options_start_the_command_under_accelerate():
    launch, rest = launch_under_accelerate("hf_ext.scripts.aot", ["--num_processes", "2", "--config", "a.yaml"])
    assert launch == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
                      "hf_ext.scripts.aot", "--config", "a.yaml"]  # fmt: skip
    assert rest == ["--config", "a.yaml"]
    launch, _ = launch_under_accelerate("hf_ext.scripts.aot", ["--accelerate_config=fsdp.yaml", "--x", "1"])
    assert (
        launch[3:5] == ["--config_file", "fsdp.yaml"] and launch[-2:] == ["--x", "1"] and "--multi_gpu" not in launch
    )
    assert launch_under_accelerate("hf_ext.scripts.aot", ["--num_processes", "1", "--x", "1"]) == (None, ["--x", "1"])
    assert launch_under_accelerate("hf_ext.scripts.aot", ["--x", "1"]) == (None, ["--x", "1"])
    with pytest.raises(CommandError, match="--num_processes='two' is out of range"):
        launch_under_accelerate("hf_ext.scripts.aot", ["--num_processes", "two"])


def test_training_commands_take_the_launch_options(capsys):
    for name in ("aot", "larimar-train", "seal-rank"):
        assert main([name, "--num_processes", "0"]) == 2
        assert f"hf-ext {name}: error: --num_processes='0' is out of range" in capsys.readouterr().err


def test_demo_rejects_unknown_stage(capsys):
    assert main(["demo", "--stages", "nope"]) == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def _broken_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model_name_or_path: hf-ext-testing/tiny-llama\nbeta: [0.1\n")
    return str(path)


def _empty_yaml(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    return str(path)


def _typo_yaml(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model_name_or_path: hf-ext-testing/tiny-llama\nbeta_typo: 0.1\n")
    return str(path)


def _merge_yaml(tmp_path, method="mergealgin"):
    path = tmp_path / "merge.yaml"
    path.write_text(f"merge_method: {method}\nbase_model: a/b\nmodels:\n  - model: c/d\n")
    return str(path)


# (case, argv given tmp_path, the expected one-line error)
BAD_COMMAND_INPUT = [
    ("aot without arguments", lambda t: ["aot"], r"--model_name_or_path is required"),
    ("aot with an unknown split", lambda t: ["aot", "--model_name_or_path", "hf-ext-testing/tiny-llama",
     "--dataset_name", "hf-ext-testing/synthetic-preferences", "--dataset_train_split", "bogus", "--output_dir",
     str(t / "out")], r"dataset_train_split='bogus' is not a split .*expected one of \['train', 'test'\]"),
    ("broken YAML recipe", lambda t: ["aot", "--config", _broken_yaml(t)],
     r"--config='.*recipe.yaml' is not valid YAML at line 3, column 1: expected ',' or '\]'"),
    ("empty YAML recipe", lambda t: ["sasa-fit", "--config", _empty_yaml(t)],
     r"--config='.*empty.yaml' is empty; expected a YAML mapping of options"),
    ("unknown key in a YAML recipe", lambda t: ["aot", "--config", _typo_yaml(t)],
     r"--config='.*typo.yaml' sets unknown option\(s\) \['--beta_typo', '0.1'\]; see --help"),
    ("missing YAML recipe", lambda t: ["seal-rank", "--config", str(t / "nope.yaml")],
     r"--config='.*nope.yaml': no such file"),
    ("broken merge YAML", lambda t: ["merge", _broken_yaml(t), str(t / "out")],
     r"CONFIG_FILE='.*recipe.yaml' is not valid YAML at line 3"),
    ("empty merge YAML", lambda t: ["merge", _empty_yaml(t), str(t / "out")], r"CONFIG_FILE='.*empty.yaml' is empty"),
    ("misspelt merge method", lambda t: ["merge", _merge_yaml(t), str(t / "out")],
     r"merge_method='mergealgin' is not a merge method \(did you mean 'mergealign'\?\); expected one of \[.*'linear'"),
    ("broken sweep merge_config", lambda t: ["mergealign-sweep", "--merge_config", _broken_yaml(t), "--safety_dataset",
     "a.jsonl", "--domain_dataset", "b.jsonl", "--output_dir", str(t / "out")], r"merge_config='.*' is not valid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "expected"), BAD_COMMAND_INPUT, ids=[c[0] for c in BAD_COMMAND_INPUT])
def test_bad_command_input_is_one_line_before_any_work(case, argv, expected, tmp_path, monkeypatch, capsys):
    import re

    import transformers

    import hf_ext.aot.trainer

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(hf_ext.aot.trainer, "AOTTrainer", refuse)
    args = argv(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith(f"hf-ext {args[0]}: error: ") and re.search(expected, line), line
    assert not (tmp_path / "out").exists()


def test_a_components_check_reaches_the_user_as_one_line(tmp_path, capsys):
    """The components' own checks (here: a decoder checkpoint without a language-modeling head) are one line too."""
    argv = ["larimar-train", "--encoder_name_or_path", "hf-ext-testing/tiny-bert", "--decoder_name_or_path",
            "hf-ext-testing/tiny-bert", "--dataset_name", "hf-ext-testing/larimar-facts", "--output_dir",
            str(tmp_path / "out"), "--max_steps", "1", "--per_device_train_batch_size", "16"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith("hf-ext larimar-train: error: ") and "has no language-modeling head" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prompt_field", ["bogus", "None"])
def test_text_readout_training_needs_a_query_column(tmp_path, capsys, prompt_field):
    argv = ["larimar-train", "--encoder_name_or_path", "hf-ext-testing/tiny-bert", "--decoder_name_or_path",
            "hf-ext-testing/tiny-llama", "--dataset_name", "hf-ext-testing/larimar-natural-facts", "--num_episodes",
            "1", "--episode_size", "4", "--per_device_train_batch_size", "4", "--memory_readout", "text",
            "--prompt_field", prompt_field, "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "memory_readout=text trains the addressing" in line and "'query'" in line, line
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_lacking_weights_its_config_needs_is_one_line_before_training(tiny_llama_path, tmp_path, capsys):
    """Issue 29: a config.json that adds a layer the checkpoint lacks trained it from random init, without an error."""
    import json
    import shutil

    folder = shutil.copytree(tiny_llama_path, tmp_path / "grown")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    argv = ["aot", "--model_name_or_path", str(folder), "--dataset_name", "hf-ext-testing/synthetic-preferences",
            "--synthetic_train_size", "16", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith(f"hf-ext aot: error: The checkpoint '{folder}' lacks 9 weight(s) that LlamaForCausalLM"), (
        line
    )
    assert f"model.layers.{config['num_hidden_layers'] - 1}.input_layernorm.weight" in line
    assert not (tmp_path / "out").exists()
