"""The `hf-ext` command: one program with subcommands, like `trl`'s own CLI.

Each subcommand is a module of `hf_ext.scripts` with `make_parser()` and `main(argv)`, runnable on its own
(`python -m hf_ext.scripts.aot --config trainers/aot.yaml`); [`COMMANDS`] lists them. A subcommand that runs a
method parses that method's config dataclasses with `TrlParser`, so `--config recipe.yaml` and `--any_field
value` both work, as with `trl dpo`. The training commands (`aot`, `larimar-train`, `seal-rank`) start themselves
under `accelerate launch` when given `--num_processes N` or `--accelerate_config FILE`. Every command prints only
what its user can act on (`hf_ext.logging_utils.configure_command_output`): no progress bar for work that takes less
than two seconds, no warning about the Hugging Face stack's calls among themselves.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence

from hf_ext.logging_utils import configure_command_output


__all__ = ["COMMANDS", "main"]

PROG = "hf-ext"

COMMANDS: dict[str, str] = {
    "env": "hf_ext.scripts.env",
    "demo": "hf_ext.scripts.demo",
    "aot": "hf_ext.scripts.aot",
    "larimar-train": "hf_ext.scripts.larimar_train",
    "sasa-fit": "hf_ext.scripts.sasa_fit",
    "sasa-generate": "hf_ext.scripts.sasa_generate",
    "merge": "hf_ext.scripts.merge",
    "mergealign-sweep": "hf_ext.scripts.mergealign_sweep",
    "seal-rank": "hf_ext.scripts.seal_rank",
    "seal-filter": "hf_ext.scripts.seal_filter",
    "risk": "hf_ext.scripts.risk",
}
"""Subcommand -> the module of `hf_ext.scripts` that implements it."""


def _own_version() -> str:
    from hf_ext import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: `--help` lists every command with its one-line help (the modules' `HELP`)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="IBM Research methods as native Hugging Face components.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_own_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, module in COMMANDS.items():
        subparsers.add_parser(name, help=importlib.import_module(module).HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hf-ext` console script (and of `python -m hf_ext`); returns the exit status."""
    configure_command_output()  # first: progress bars are configured when tqdm is first imported
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        parser = build_parser()
        parser.parse_args(argv)  # --help and --version exit here; an unknown option is a usage error
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"{PROG}: error: unknown command {name!r}{hint}; expected one of {list(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name]).main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
