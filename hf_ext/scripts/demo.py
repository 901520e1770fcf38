"""`hf-ext demo`: a tour of every method on tiny offline models, in a few minutes on a CPU.

The stages are listed in `hf_ext.demo.DEMO_STAGES`; the real-model experiments live in `examples/` (`make demo-real`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hf_ext.scripts.utils import PROG, CommandError, run_command


__all__ = ["HELP", "main", "make_parser"]

NAME = "demo"
HELP = "run a tour of every method on tiny offline models"


def make_parser() -> argparse.ArgumentParser:
    """The parser of `hf-ext demo`."""
    parser = argparse.ArgumentParser(prog=f"{PROG} {NAME}", description=HELP)
    parser.add_argument("--output-dir", default="hf-ext-demo", help="where the report and plots go")
    parser.add_argument("--stages", default=None, help="comma-separated stage names to run (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tour (or list its stages); returns 0 when every stage succeeded."""
    args = make_parser().parse_args(None if argv is None else list(argv))

    def run() -> int:
        from hf_ext._validation import check_writable_directory
        from hf_ext.demo import DEMO_STAGES, run_demo

        if args.list:
            for stage in DEMO_STAGES:
                print(f"{stage.name:<14} {stage.title}")
            return 0
        selected = None
        if args.stages:
            selected = [name.strip() for name in args.stages.split(",") if name.strip()]
            unknown = sorted(set(selected) - {stage.name for stage in DEMO_STAGES})
            if unknown:
                raise CommandError(f"unknown stage(s) {unknown}; expected names from {[s.name for s in DEMO_STAGES]}")
        from hf_ext.transactions import OutputLockedError, hold_output_lock

        try:  # every stage writes inside the output folder, which one demo at a time holds
            check_writable_directory(args.output_dir, replaced_whole=False)
            hold_output_lock(args.output_dir)
        except (OSError, OutputLockedError) as error:
            raise CommandError(str(error)) from None
        return run_demo(args.output_dir, stages=selected, seed=args.seed)

    return run_command(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
