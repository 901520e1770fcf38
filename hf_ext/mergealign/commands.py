"""`hf-ext merge` and `hf-ext mergealign-sweep`.

`hf-ext merge CONFIG OUT [options]` is `mergekit-yaml CONFIG OUT [options]` with the `mergealign` method loaded:
it takes every `mergekit-yaml` option (they are mergekit's own click options), validates a mergealign
configuration before reading any tensor, and writes the similarity report and the MergeAlign card next to the
merged model. Configurations with another merge method run exactly as `mergekit-yaml` would run them.

`hf-ext mergealign-sweep` scores merges over a grid of alpha (and scale) in memory; its options are the fields of
`AlphaSweepConfig` (`--config sweep.yaml` and `--any_field value`, as with `trl`).
"""

from __future__ import annotations

from ..cli import ArgvCommand, CommandError, DataclassCommand


def _merge_click_command():
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

    from .merging import merge

    with open(config_file, encoding="utf-8") as file:
        source = file.read()
    data = yaml.safe_load(source)
    if isinstance(data, dict) and data.get("merge_method") == "mergealign":
        merge(config_file, out_path, options=merge_options, report=report)
        return
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge

    run_merge(MergeConfiguration.model_validate(data), out_path, options=merge_options, config_source=source)


def _merge(argv: list[str]) -> int:
    import click

    command = _merge_click_command()
    try:
        return command.main(args=argv, prog_name="hf-ext merge", standalone_mode=False) or 0
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except ValueError as error:
        raise CommandError(str(error)) from None


def _sweep_dataclasses():
    from .sweep import AlphaSweepConfig

    return (AlphaSweepConfig,)


def _sweep(config) -> int:
    from .sweep import run_sweep

    try:
        run_sweep(config)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return 0


def get_commands():
    return [
        ArgvCommand(
            "merge",
            "merge models with mergekit (every mergekit-yaml option), MergeAlign included, with its similarity report",
            _merge,
        ),
        DataclassCommand(
            "mergealign-sweep",
            "score MergeAlign merges over a grid of alpha / scale in memory; Pareto plot and choice under a safety floor",
            _sweep_dataclasses,
            _sweep,
        ),
    ]
