"""What every `hf-ext` command shares: its parser, its one-line errors, and the launch under accelerate.

A command is a module of `hf_ext.scripts` with `make_parser()` and `main(argv=None) -> int`, runnable alone
(`python -m hf_ext.scripts.aot --config trainers/aot.yaml`) and listed in `hf_ext.cli.COMMANDS`.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


__all__ = [
    "PROG",
    "CommandError",
    "dataclass_parser",
    "launch_or_run",
    "launch_under_accelerate",
    "load_any_dataset",
    "load_causal_lm",
    "parse_dataclasses",
    "read_lines",
    "run_command",
]

PROG = "hf-ext"


class CommandError(Exception):
    """A user error a command reports as one line (no traceback), exiting with status 2."""


def dataclass_parser(name: str, help_text: str, dataclass_types: Sequence[type]):
    """A `TrlParser` over `dataclass_types`: `--config recipe.yaml` and `--any_field value`, as `trl dpo` takes."""
    from trl import TrlParser

    return TrlParser(tuple(dataclass_types), prog=f"{PROG} {name}", description=help_text)


def parse_dataclasses(parser, argv: Sequence[str] | None) -> tuple:
    """One instance per dataclass of `parser`; a bad option or value is a [`CommandError`] (with the usage)."""
    try:
        return tuple(parser.parse_args_and_config(None if argv is None else list(argv)))
    except ValueError as error:  # HfArgumentParser reports unknown options and bad values this way
        parser.print_usage(sys.stderr)
        raise CommandError(str(error).splitlines()[0]) from None


def run_command(name: str, function: Callable[[], int | None]) -> int:
    """Run a command's body: its exit status, or 2 with `hf-ext NAME: error: ...` for a [`CommandError`]."""
    try:
        return function() or 0
    except CommandError as error:
        print(f"{PROG} {name}: error: {error}", file=sys.stderr)
        return 2


LAUNCH_OPTIONS = ("--num_processes", "--accelerate_config")
"""Options a training command takes before its own: start it under `accelerate launch` with these."""


def launch_under_accelerate(module: str, argv: Sequence[str]) -> tuple[list[str] | None, list[str]]:
    """The `accelerate launch` command line for a training command, when `argv` asks for it; and `argv` without the
    launch options.

    `--num_processes N` (N > 1) or `--accelerate_config FILE` (an `accelerate config` file: DDP, FSDP, DeepSpeed)
    start the command as `accelerate launch ... -m <module> <argv>`; otherwise the first item is `None` and the
    command runs in this process.
    """
    argv = list(argv)
    launch: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        key, equals, value = token.partition("=")
        if key in LAUNCH_OPTIONS:
            if not equals:
                if index + 1 >= len(argv):
                    raise CommandError(f"{key} needs a value")
                value = argv[index + 1]
                index += 1
            launch[key] = value
        else:
            rest.append(token)
        index += 1
    processes = launch.get("--num_processes")
    if processes is not None and (not processes.isdigit() or int(processes) < 1):
        raise CommandError(f"--num_processes={processes!r} is out of range; expected an integer >= 1")
    if not launch or (processes is not None and int(processes) == 1 and "--accelerate_config" not in launch):
        return None, rest
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if "--accelerate_config" in launch:
        command += ["--config_file", launch["--accelerate_config"]]
    if processes is not None:
        if int(processes) > 1 and "--accelerate_config" not in launch:
            # accelerate's flag for a torchrun-style launch of several processes (NCCL on GPUs, gloo on a CPU);
            # without it, and without a config file, `accelerate launch` starts one process.
            command.append("--multi_gpu")
        command += ["--num_processes", processes]
    return [*command, "-m", module, *rest], rest


def launch_or_run(name: str, module: str, argv: Sequence[str] | None, run: Callable[[list[str]], int]) -> int:
    """Run a training command here, or under `accelerate launch` when its launch options ask for it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        launch, rest = launch_under_accelerate(module, argv)
    except CommandError as error:
        print(f"{PROG} {name}: error: {error}", file=sys.stderr)
        return 2
    if launch is None:
        return run(rest)
    print(f"{PROG} {name}: launching {shlex.join(launch)}", file=sys.stderr, flush=True)
    return subprocess.call(launch)


def load_causal_lm(name_or_path: str, load_in_4bit: bool = False):
    """`(model, tokenizer)` in eval mode for a command: a fixture id built offline, a folder or a Hub id; 4-bit
    bitsandbytes on request; the tokenizer padded with its end-of-sequence token when it has no padding token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ext.testing import resolve_model_name_or_path

    path = resolve_model_name_or_path(name_or_path)
    if load_in_4bit:
        from hf_ext.quantization import load_quantized

        model = load_quantized(path, bits=4)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_any_dataset(name: str, config: str | None = None, split: str | None = None):
    """A dataset by fixture id (built offline), local folder (`save_to_disk`), local data file, or Hub id."""
    import datasets

    from hf_ext.testing import TESTING_PREFIX, load_fixture_dataset

    if name.startswith(TESTING_PREFIX):
        try:
            dataset = load_fixture_dataset(name)
        except ValueError as error:
            raise CommandError(str(error)) from None
        return dataset if split is None else dataset[split]
    path = Path(name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = datasets.load_from_disk(str(path))
        if split is not None and isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        return dataset
    if path.is_file():
        builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if builder is None:
            raise CommandError(f"cannot read {name}: expected a .json, .jsonl, .parquet or .csv file")
        return datasets.load_dataset(builder, data_files=str(path), split=split)
    return datasets.load_dataset(name, config, split=split)


def read_lines(path: str, what: str) -> list[str]:
    """The non-empty lines of a text file a command was given as option `what` (stripped); a missing or empty file is
    a [`CommandError`]."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{what}={path!r} does not exist.")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise CommandError(f"{what}={path!r} has no non-empty line.")
    return lines
