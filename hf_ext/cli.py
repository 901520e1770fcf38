"""The `hf-ext` command.

One program with subcommands, like `trl`'s own CLI. `cli.py` only collects them: `env` and `demo` are built in,
and every method package that has a `commands` module (`hf_ext/<method>/commands.py` with a `get_commands()`
returning [`Command`] objects) adds its own. A subcommand that runs a method parses that method's config
dataclasses with `TrlParser` (see [`DataclassCommand`]), so `--config recipe.yaml` and `--any_field value`
both work, as with `trl dpo`.

Under `accelerate launch`, run it as a module: `accelerate launch -m hf_ext.cli aot --config trainers/aot.yaml`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.util import find_spec


__all__ = ["ArgvCommand", "Command", "DataclassCommand", "FunctionCommand", "get_commands", "main"]

PROG = "hf-ext"


class CommandError(Exception):
    """A user error a command reports as one line (no traceback), exiting with status 2."""


class Command(ABC):
    """A subcommand of `hf-ext`.

    Args:
        name (`str`): The subcommand as typed on the command line.
        help_text (`str`): One line shown in `hf-ext --help`.
    """

    def __init__(self, name: str, help_text: str):
        self.name = name
        self.help_text = help_text

    @abstractmethod
    def register(self, subparsers) -> None:
        """Add this command's parser to `subparsers`."""

    @abstractmethod
    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        """Run the command; `argv` holds the tokens after the subcommand's name. Returns the exit status."""


class FunctionCommand(Command):
    """A command with a plain argparse parser.

    Args:
        name, help_text: See [`Command`].
        configure (`Callable[[argparse.ArgumentParser], None]`): Adds the command's arguments.
        function (`Callable[[argparse.Namespace], int | None]`): Runs it; `None` means success.
    """

    def __init__(self, name: str, help_text: str, configure: Callable, function: Callable):
        super().__init__(name, help_text)
        self.configure = configure
        self.function = function

    def register(self, subparsers) -> None:
        parser = subparsers.add_parser(self.name, help=self.help_text, description=self.help_text)
        self.configure(parser)

    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        return self.function(args) or 0


class DataclassCommand(Command):
    """A command whose options are the fields of config dataclasses, parsed by `TrlParser`.

    Args:
        name, help_text: See [`Command`].
        dataclass_types (`Callable[[], tuple[type, ...]]`):
            Returns the dataclasses to parse (called only when the command runs, so that `hf-ext --help` stays
            fast).
        function (`Callable[..., int | None]`):
            Called with one instance per dataclass, in order.
    """

    def __init__(self, name: str, help_text: str, dataclass_types: Callable[[], tuple], function: Callable):
        super().__init__(name, help_text)
        self.dataclass_types = dataclass_types
        self.function = function

    def register(self, subparsers) -> None:
        subparsers.add_parser(self.name, help=self.help_text, add_help=False)

    def make_parser(self):
        from trl import TrlParser

        return TrlParser(self.dataclass_types(), prog=f"{PROG} {self.name}", description=self.help_text)

    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        parser = self.make_parser()
        try:
            parsed = parser.parse_args_and_config(argv)
        except ValueError as error:  # HfArgumentParser reports unknown options and bad values this way
            parser.print_usage(sys.stderr)
            raise CommandError(str(error).splitlines()[0]) from None
        return self.function(*parsed) or 0


class ArgvCommand(Command):
    """A command that parses the tokens after its name itself (for instance with a click command it wraps).

    Args:
        name, help_text: See [`Command`].
        function (`Callable[[list[str]], int | None]`): Runs the command on the raw tokens; `None` means success.
    """

    def __init__(self, name: str, help_text: str, function: Callable):
        super().__init__(name, help_text)
        self.function = function

    def register(self, subparsers) -> None:
        subparsers.add_parser(self.name, help=self.help_text, add_help=False)

    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        return self.function(argv) or 0


def _env(args: argparse.Namespace) -> int:
    for key, value in environment_report().items():
        print(f"- {key}: {value}")
    return 0


def environment_report() -> dict[str, str]:
    """Versions, devices and the bitsandbytes backend, as `hf-ext env` prints them. A package outside the tested
    range is flagged (see [`hf_ext.versions`])."""
    import platform

    import torch

    from .versions import version_report

    report = {"hf-ext": _own_version(), "Python": platform.python_version(), "Platform": platform.platform()}
    outside = []
    for name, (version, problem) in version_report().items():
        report[name] = version if problem is None else f"{version}  <- {problem}"
        if problem is not None:
            outside.append(name)
    report["Tested range"] = (
        "every package above is inside it"
        if not outside
        else f"{', '.join(outside)} outside it: hf-ext may still work, but its suite did not run on these versions"
    )
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        report["Device"] = f"cuda x{torch.cuda.device_count()} ({', '.join(names)})"
        report["bf16 supported"] = str(torch.cuda.is_bf16_supported())
    else:
        report["Device"] = "cpu"
    report["CPU threads"] = str(torch.get_num_threads())
    report["bitsandbytes backend"] = _bitsandbytes_backend()
    return report


def _own_version() -> str:
    from . import __version__

    return __version__


def _bitsandbytes_backend() -> str:
    try:
        from bitsandbytes import cextension
    except Exception as error:  # a broken install should not stop `env`, whose job is to diagnose it
        return f"unavailable ({type(error).__name__}: {error})"
    return str(getattr(cextension, "BNB_BACKEND", "unknown"))


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="hf-ext-demo", help="where the report and plots go")
    parser.add_argument("--stages", default=None, help="comma-separated stage names to run (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--real", action="store_true", help="run the stages on the real offline models")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")


def _demo(args: argparse.Namespace) -> int:
    from .demo import discover_stages, run_demo

    stages = discover_stages()
    if args.list:
        for stage in stages:
            print(f"{stage.name:<14} {stage.title}")
        return 0
    selected = None
    if args.stages:
        selected = [name.strip() for name in args.stages.split(",") if name.strip()]
        unknown = sorted(set(selected) - {stage.name for stage in stages})
        if unknown:
            raise CommandError(f"unknown stage(s) {unknown}; expected names from {[s.name for s in stages]}")
    return run_demo(args.output_dir, stages=selected, real=args.real, seed=args.seed)


def _builtin_commands() -> list[Command]:
    return [
        FunctionCommand(
            "env",
            "print versions (checked against the tested range), devices and the bitsandbytes backend",
            lambda parser: None,
            _env,
        ),
        FunctionCommand("demo", "run a tour of every method on tiny offline models", _configure_demo, _demo),
    ]


def method_packages() -> list[str]:
    """Names of hf-ext's subpackages, in alphabetical order."""
    from . import __path__ as package_path

    return sorted(info.name for info in pkgutil.iter_modules(package_path) if info.ispkg)


def get_commands() -> list[Command]:
    """The built-in commands followed by every method package's, sorted by name."""
    commands = _builtin_commands()
    for package in method_packages():
        module_name = f"hf_ext.{package}.commands"
        if find_spec(module_name) is not None:
            commands.extend(importlib.import_module(module_name).get_commands())
    names = [command.name for command in commands]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"hf-ext subcommands registered twice: {duplicates}")
    return sorted(commands, key=lambda command: command.name)


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="IBM Research methods as native Hugging Face components.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_own_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in commands:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hf-ext` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {command.name: command for command in get_commands()}
    parser = build_parser(list(commands.values()))
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = commands[args.command]
    if extra and not isinstance(command, (DataclassCommand, ArgvCommand)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return command.run(args, argv[argv.index(args.command) + 1 :])
    except CommandError as error:
        print(f"{PROG} {command.name}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Under `python -m hf_ext.cli` this file runs as `__main__`; run the imported module instead, so that the method
    # packages' commands (built on `hf_ext.cli`'s classes) pass the isinstance checks of `main`.
    from hf_ext.cli import main as _main

    raise SystemExit(_main())
