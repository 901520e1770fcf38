"""`hf-ext merge`: `mergekit-yaml` with the `mergealign` method loaded.

`hf-ext merge CONFIG OUT [options]` is `mergekit-yaml CONFIG OUT [options]` with the `mergealign` method loaded:
it takes every `mergekit-yaml` option (they are mergekit's own click options), validates a mergealign
configuration before reading any tensor, and writes the similarity report and the MergeAlign card next to the
merged model. Configurations with another merge method run exactly as `mergekit-yaml` would run them. Model
fixture ids (`hf-ext-testing/<name>`, see `hf_ext.testing`) in the configuration are built offline.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_ext.scripts.utils import CommandError, run_command


__all__ = ["HELP", "main", "make_parser", "run_merge_file"]

NAME = "merge"
HELP = "merge models with mergekit (every mergekit-yaml option), MergeAlign included, with its similarity report"


def make_parser():
    """The click command of `hf-ext merge` (mergekit's own options, as `mergekit-yaml` takes them)."""
    import click
    from mergekit.options import PrettyPrintHelp, add_merge_options

    @click.command("hf-ext merge", cls=PrettyPrintHelp)
    @click.argument("config_file")
    @click.argument("out_path")
    @click.option(
        "--report/--no-report",
        default=True,
        show_default=True,
        help="Write the similarity report of the domain and alignment vectors (mergealign only)",
    )
    @add_merge_options
    def command(merge_options, config_file: str, out_path: str, report: bool):
        """Merge models as `mergekit-yaml` does, with hf-ext's merge methods (`merge_method: mergealign`)."""
        merge_options.apply_global_options()
        run_merge_file(config_file, out_path, merge_options, report=report)

    return command


def run_merge_file(config_file: str, out_path: str, merge_options, report: bool = True) -> None:
    """Run a mergekit YAML file: MergeAlign configurations through `hf_ext.mergealign.merge`, any other one
    through mergekit's `run_merge`, exactly as `mergekit-yaml` does."""
    import yaml

    import hf_ext.mergealign  # noqa: F401 (registers the method)
    from hf_ext.mergealign.merging import merge
    from hf_ext.testing import resolve_fixture_ids

    with open(config_file, encoding="utf-8") as file:
        source = file.read()
    data = yaml.safe_load(source)
    resolved = resolve_fixture_ids(data)
    if isinstance(data, dict) and data.get("merge_method") == "mergealign":
        merge(config_file if resolved == data else resolved, out_path, options=merge_options, report=report)
        return
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge

    run_merge(MergeConfiguration.model_validate(resolved), out_path, options=merge_options, config_source=source)


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext merge CONFIG OUT [mergekit-yaml options]`; returns the exit status."""
    import sys

    import click

    def run() -> int:
        try:
            return make_parser().main(args=list(sys.argv[1:] if argv is None else argv), prog_name="hf-ext merge",
                                      standalone_mode=False) or 0  # fmt: skip
        except click.ClickException as error:
            error.show()
            return error.exit_code
        except ValueError as error:
            raise CommandError(str(error)) from None

    return run_command(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
