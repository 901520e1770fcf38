"""What every `hf-ext` command shares: its parser, its one-line errors, and the launch under accelerate.

A command is a module of `hf_ext.scripts` with `make_parser()` and `main(argv=None) -> int`, runnable alone
(`python -m hf_ext.scripts.aot --config trainers/aot.yaml`) and listed in `hf_ext.cli.COMMANDS`.

What every command does the same way:
- bad input is one `hf-ext NAME: error: ...` line and exit status 2 ([`CommandError`]), raised before any model loads;
- names are fixture ids first, then local paths, then Hub ids ([`resolve_name_or_path`], [`load_causal_lm`],
  [`load_any_dataset`]); a missing local path says so, a failing Hub id says what the Hub said ([`load_error`]);
- an output folder must be absent or empty unless its overwrite flag is given, and writable by the user
  ([`check_output`], [`check_training_output`]); it is locked for the run (a second run into it fails at once) and
  written all at once (`hf_ext.serialization.atomic_directory`); a training run works beside it and replaces it when
  it ends ([`save_training_output`]), so an interrupted run leaves it as it was.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


__all__ = [
    "OVERWRITE_OUTPUT_HELP",
    "PROG",
    "CommandError",
    "check_config_file",
    "check_output",
    "check_training_output",
    "dataclass_parser",
    "launch_or_run",
    "launch_under_accelerate",
    "load_any_dataset",
    "load_causal_lm",
    "load_error",
    "load_errors",
    "parse_dataclasses",
    "read_lines",
    "resolve_name_or_path",
    "run_command",
    "save_training_output",
]

PROG = "hf-ext"


class CommandError(Exception):
    """A user error a command reports as one line (no traceback), exiting with status 2."""


def dataclass_parser(name: str, help_text: str, dataclass_types: Sequence[type]):
    """A `TrlParser` over `dataclass_types`: `--config recipe.yaml` and `--any_field value`, as `trl dpo` takes."""
    from trl import TrlParser

    return TrlParser(tuple(dataclass_types), prog=f"{PROG} {name}", description=help_text)


def _config_option(argv: Sequence[str]) -> str | None:
    for index, token in enumerate(argv):
        if token == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith("--config="):
            return token.partition("=")[2]
    return None


def check_config_file(path: str, what: str = "--config") -> dict:
    """The options of a `--config` YAML file; a missing, unparsable, empty or non-mapping file is a [`CommandError`]
    naming the file (and the line of a syntax error), instead of a parser traceback."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{what}={path!r}: no such file {file.resolve()}.")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CommandError(f"{what}={path!r} is not valid YAML{where}: {problem}.") from None
    except UnicodeDecodeError:
        raise CommandError(f"{what}={path!r} is not a UTF-8 text file; expected a YAML file of options.") from None
    if data is None:
        raise CommandError(f"{what}={path!r} is empty; expected a YAML mapping of options (field: value).")
    if not isinstance(data, dict):
        raise CommandError(
            f"{what}={path!r} holds a YAML {type(data).__name__}; expected a mapping of options (field: value)."
        )
    return data


def parse_dataclasses(parser, argv: Sequence[str] | None) -> tuple:
    """One instance per dataclass of `parser`; a bad option or value, or a bad `--config` file, is a
    [`CommandError`] (with the usage)."""
    config = _config_option(sys.argv[1:] if argv is None else list(argv))
    if config is not None:
        check_config_file(config)
    try:
        return tuple(parser.parse_args_and_config(None if argv is None else list(argv)))
    except ValueError as error:  # HfArgumentParser reports unknown options and bad values this way
        parser.print_usage(sys.stderr)
        message = str(error).splitlines()[0]
        unknown = re.match(r"Unknown arguments from config file: (\[.*?\])", message)
        if unknown:  # TrlParser's advice (fail_with_unknown_args=False) is for Python callers
            message = f"--config={config!r} sets unknown option(s) {unknown.group(1)}; see --help for the options"
        raise CommandError(message) from None


def run_command(name: str, function: Callable[[], int | None]) -> int:
    """Run a command's body: its exit status, or 2 with `hf-ext NAME: error: ...` for a [`CommandError`]."""
    from hf_ext.transactions import release_process_locks

    try:
        return function() or 0
    except CommandError as error:
        print(f"{PROG} {name}: error: {error}", file=sys.stderr)
        return 2
    finally:
        release_process_locks()  # the output folders' locks (the process's end would release them too)


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


def resolve_name_or_path(name_or_path: str, what: str) -> str:
    """The local path or Hub id a command option names: a fixture id (`hf-ext-testing/<name>`) built offline and
    replaced by its folder, then a local path tried first (see [`~hf_ext.paths.resolve_local_or_hub`]); a missing
    local path or an unknown fixture is a [`CommandError`]."""
    from hf_ext.paths import resolve_local_or_hub
    from hf_ext.testing import resolve_model_name_or_path

    try:
        return resolve_local_or_hub(resolve_model_name_or_path(name_or_path), what)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None


def load_errors() -> tuple[type[BaseException], ...]:
    """What loading a checkpoint raises for a bad name or file: `OSError` (not found, not on the Hub) and
    safetensors' error for a truncated or corrupt weights file (which transformers lets through unnamed)."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def load_error(name: str, path: str, what: str, error: BaseException, repo_type: str = "model") -> CommandError:
    """The [`CommandError`] for `name` (resolved to `path`) that failed to load with `error`: a local folder that
    cannot be read (naming a truncated safetensors file in it), or a Hub id, with what the Hub said."""
    from hf_ext.paths import hub_load_error
    from hf_ext.serialization import open_safetensors

    if Path(path).is_dir() and not isinstance(error, OSError):
        for file in sorted(Path(path).glob("*.safetensors")):
            try:
                open_safetensors(file)
            except ValueError as named:
                return CommandError(f"{what}={name!r}: {named}")
    if Path(path).exists():
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return CommandError(f"{what}={name!r}: cannot load the local {repo_type} {path}: {said}")
    return CommandError(str(hub_load_error(name, what, error, repo_type)))


def load_causal_lm(name_or_path: str, load_in_4bit: bool = False, what: str = "model_name_or_path"):
    """`(model, tokenizer)` in eval mode for a command: a fixture id built offline, a local folder (tried first) or
    a Hub id; 4-bit bitsandbytes on request; the tokenizer padded with its end-of-sequence token when it has no
    padding token. A model that cannot be loaded is a [`CommandError`] saying whether it was a local folder or
    what the Hub said."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_name_or_path(name_or_path, what)
    try:
        if load_in_4bit:
            from hf_ext.quantization import load_quantized

            model = load_quantized(path, bits=4)
        else:
            model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except load_errors() as error:
        raise load_error(name_or_path, path, what, error) from None
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
"""Local data files a command reads, by suffix -> the `datasets` builder that reads them."""


def load_any_dataset(
    name: str,
    config: str | None = None,
    split: str | None = None,
    *,
    what: str = "dataset_name",
    streaming: bool = False,
):
    """A dataset by fixture id (built offline), local folder (`save_to_disk`, or a folder of data files), local data
    file (.json / .jsonl / .parquet / .csv: one `train` split), or Hub id; local paths are tried first.

    `split=None` gives every split (a `DatasetDict`); an unknown split is a [`CommandError`] listing the available
    ones, and so is a missing local path or a Hub id the Hub does not give (with what the Hub said).
    """
    import datasets

    from hf_ext.paths import resolve_local_or_hub
    from hf_ext.testing import TESTING_PREFIX, load_fixture_dataset

    if name.startswith(TESTING_PREFIX):
        try:
            return _select_split(load_fixture_dataset(name), split, name, what)
        except ValueError as error:
            raise CommandError(str(error)) from None
    try:
        resolved = resolve_local_or_hub(name, what)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    path = Path(resolved)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = datasets.load_from_disk(str(path))
        return _select_split(
            dataset if isinstance(dataset, datasets.DatasetDict) else None, split, name, what, dataset
        )
    try:
        if path.is_file():
            builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                kinds = " / ".join(DATA_FILE_BUILDERS)
                raise CommandError(f"{what}={name!r}: cannot read a {path.suffix or 'suffix-less'} file; expected a "
                                   f"{kinds} file, a folder or a Hub dataset id.")  # fmt: skip
            if builder != "parquet" and _blank_file(path):  # datasets says only "StopIteration"
                raise CommandError(f"{what}={name!r}: the file {path.resolve()} is empty; expected rows of data.")
            dataset = datasets.load_dataset(builder, data_files=str(path), streaming=streaming)
        else:  # a Hub id (or a folder of data files): only the split asked for is downloaded
            return datasets.load_dataset(resolved, config, split=split, streaming=streaming)
    except CommandError:
        raise
    except Exception as error:  # not found, gated, offline, a malformed file: datasets raises many kinds
        raise load_error(name, resolved, what, error, "dataset") from None
    return _select_split(dataset, split, name, what)


def _blank_file(path: Path) -> bool:
    """Whether a text file holds nothing but whitespace (read in chunks: data files can be large)."""
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _select_split(dataset, split: str | None, name: str, what: str, whole=None):
    """`dataset[split]` (or the whole dataset for `split=None`); a split it lacks is a [`CommandError`]."""
    if dataset is None:  # a single saved Dataset: no splits to choose from
        return whole
    if split is None:
        return dataset
    if split not in dataset:
        raise CommandError(f"split {split!r} is not a split of {what}={name!r}; expected one of {list(dataset)}.")
    return dataset[split]


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


def check_output(path: str, overwrite: bool = False, option: str = "--overwrite_output_dir") -> Path:
    """Check, before any work, that the output folder `path` is absent, empty, or to be replaced (`overwrite`), that
    this user can write it (see [`~hf_ext._validation.check_writable_directory`]), and take its lock for the rest of
    the command (a second run into it fails at once, naming this one); an existing file, a non-empty folder without
    `option`, a folder that is not writable or that another run is writing is a [`CommandError`] naming the folder.
    What killed runs left beside the folder is cleaned up (see `hf_ext.transactions`)."""
    from hf_ext._validation import check_writable_directory
    from hf_ext.serialization import OutputExistsError, check_output_directory
    from hf_ext.transactions import OutputLockedError, hold_output_lock, resolve_output

    try:
        folder = check_writable_directory(resolve_output(path), replaced_whole=True)  # built beside, renamed onto it
        folder = hold_output_lock(folder)
        return check_output_directory(folder, overwrite=overwrite, option=option)
    except (OutputLockedError, OutputExistsError, NotADirectoryError, PermissionError) as error:
        raise CommandError(str(error)) from None


OVERWRITE_OUTPUT_HELP = (
    "Replace the content of a non-empty output_dir. Without it a training command refuses such a folder before "
    "loading anything; with it the run trains beside the folder and replaces it only when it ends (an interrupted "
    "run leaves it as it was)."
)


RESUME_LAST = ("true", "last")
"""`--resume_from_checkpoint` values meaning "the last checkpoint of this output folder's run"."""


def check_training_output(training_args, overwrite: bool) -> Path:
    """Before any model is loaded: check and lock a training run's `output_dir` (see [`check_output`]; a resumed run
    needs no flag), and point `training_args.output_dir` at the folder the run works in; returns the output folder
    the result goes to ([`save_training_output`] puts it there).

    A new run trains in a hidden folder beside `output_dir` (`.<name>.hf-ext-run`, its checkpoints included) and
    replaces `output_dir` with it when it ends, so an interrupted run leaves `output_dir` as it was, and its own
    checkpoints to resume from. `--resume_from_checkpoint true` (or `last`) resumes the last checkpoint of that
    interrupted run, or, without one, of `output_dir` itself (a finished run, continued in place).
    """
    from hf_ext.transactions import is_main_process, remove_litter, run_folder

    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in RESUME_LAST:
        resume = training_args.resume_from_checkpoint = True
    output_dir = check_output(training_args.output_dir, overwrite or bool(resume), "--overwrite_output_dir")
    run = run_folder(output_dir)
    if is_main_process():  # it prepares the folders; every process trains in the same one
        remove_litter(output_dir, keep_run_folder=bool(resume))
    if resume is True and _last_checkpoint(run) is None and _last_checkpoint(output_dir) is not None:
        run = output_dir  # a finished run, continued in its own folder
    if resume is True:
        last = _last_checkpoint(run)
        if last is None:
            raise CommandError(
                f"--resume_from_checkpoint true: neither {output_dir} nor its interrupted run "
                f"({run_folder(output_dir)}) holds a complete checkpoint-* folder to resume from."
            )
        # the last complete one: a run killed while saving leaves a checkpoint folder without its trainer state
        resume = training_args.resume_from_checkpoint = str(last)
    if isinstance(resume, str):  # a checkpoint path: continue in place if it is one of output_dir's own
        run = output_dir if Path(resume).resolve().parent == output_dir.resolve() else run_folder(output_dir)
    training_args.output_dir = str(run)
    if run != output_dir:
        print(
            f"Training in {run} (checkpoints there); it replaces {output_dir} when the run ends. If the run is "
            "interrupted, the output folder stays as it was: resume with --resume_from_checkpoint true."
        )
    return output_dir


def _last_checkpoint(folder: Path) -> Path | None:
    """The `checkpoint-<step>` folder of `folder` with the highest step among the complete ones (holding
    `trainer_state.json`, which `Trainer` writes last), or None."""
    if not folder.is_dir():
        return None
    steps = [
        (int(entry.name.split("-", 1)[1]), entry)
        for entry in folder.iterdir()
        if re.fullmatch(r"checkpoint-\d+", entry.name) and (entry / "trainer_state.json").is_file()
    ]
    return max(steps)[1] if steps else None


FINAL_MARKER = "config.json"


def save_training_output(trainer, write: Callable[[Path], None], output_dir: str | Path | None = None) -> Path:
    """Give a training run's result to `output_dir` (the folder [`check_training_output`] returned) so that it never
    appears half-written.

    `write(folder)` runs on every process (saving a sharded model gathers it) with the same staging folder inside the
    run's working folder; the main process then moves its files there, `config.json` last (replacing the top-level
    files an earlier save left, keeping folders such as `checkpoint-*`), and, when the run worked beside
    `output_dir`, makes the working folder `output_dir` in one journaled swap (see `hf_ext.transactions`). A run that
    fails before this leaves `output_dir` as it was. The arguments `Trainer.save_model` pickles
    (`training_args.bin`) are kept as `training_args.json` instead.
    """
    import os
    import shutil

    from hf_ext.transactions import replace_directory

    working = Path(trainer.args.output_dir)
    output_dir = Path(output_dir) if output_dir is not None else working
    staging = working / ".partial" / working.resolve().name
    main = trainer.args.should_save
    if main:
        shutil.rmtree(staging.parent, ignore_errors=True)
        staging.mkdir(parents=True)
    trainer.accelerator.wait_for_everyone()
    write(staging)
    trainer.accelerator.wait_for_everyone()
    if main:
        trainer.args.output_dir = str(output_dir)
        _replace_pickled_arguments(trainer.args, staging)
        new = {entry.name for entry in staging.iterdir()}
        for entry in working.iterdir():
            if entry.name not in new and (entry.is_file() or entry.is_symlink()):
                entry.unlink()
        for entry in sorted(staging.iterdir(), key=lambda entry: (entry.name == FINAL_MARKER, entry.name)):
            destination = working / entry.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(entry, destination)
        shutil.rmtree(staging.parent, ignore_errors=True)
        if working.resolve() != output_dir.resolve():
            replace_directory(working, output_dir)
    trainer.args.output_dir = str(output_dir)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def _replace_pickled_arguments(training_args, folder: Path) -> None:
    """`Trainer.save_model` pickles its arguments (`training_args.bin`); hf-ext's outputs keep JSON only."""
    from hf_ext.serialization import save_json

    pickled = folder / "training_args.bin"
    if pickled.exists():
        pickled.unlink()
    save_json(folder / "training_args.json", training_args.to_dict())
