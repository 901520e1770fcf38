import dataclasses
import subprocess
import sys

import pytest
import torch
import transformers

from hf_ext import cli
from hf_ext.cli import DataclassCommand, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hf_ext.cli", *args], capture_output=True, text=True, timeout=120)


def test_unknown_subcommand_is_a_one_line_error():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "invalid choice: 'frobnicate'" in errors[0]
    assert result.stderr.startswith("usage: hf-ext")


def test_bad_option_of_a_builtin_command(capsys):
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


def test_commands_are_unique_and_sorted():
    names = [command.name for command in cli.get_commands()]
    assert names == sorted(set(names)) and {"demo", "env"} <= set(names)


@dataclasses.dataclass
class ToyArguments:
    steps: int = dataclasses.field(default=1, metadata={"help": "how many"})
    name: str = dataclasses.field(default="x", metadata={"help": "a name"})


@pytest.fixture
def toy_command(monkeypatch):
    seen = []
    command = DataclassCommand("toy", "a toy", lambda: (ToyArguments,), lambda args: seen.append(args))
    builtin = cli._builtin_commands
    monkeypatch.setattr(cli, "_builtin_commands", lambda: [*builtin(), command])
    return seen


def test_dataclass_command_reads_config_and_overrides(tmp_path, toy_command):
    config = tmp_path / "toy.yaml"
    config.write_text("steps: 5\nname: from-yaml\n")
    assert main(["toy", "--config", str(config), "--name", "from-cli"]) == 0
    assert toy_command == [ToyArguments(steps=5, name="from-cli")]


def test_dataclass_command_rejects_unknown_option(toy_command, capsys):
    assert main(["toy", "--stepz", "3"]) == 2
    err = capsys.readouterr().err
    assert "hf-ext toy: error:" in err and "--stepz" in err and "Traceback" not in err
    assert toy_command == []


def test_demo_rejects_unknown_stage(capsys):
    assert main(["demo", "--stages", "nope"]) == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err
