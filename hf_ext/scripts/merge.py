"""`hf-ext merge`: `mergekit-yaml` with the `mergealign` method loaded.

`hf-ext merge CONFIG OUT [options]` is `mergekit-yaml CONFIG OUT [options]` with the `mergealign` method loaded:
it takes every `mergekit-yaml` option (they are mergekit's own click options), validates a mergealign
configuration before reading any tensor, and writes the similarity report and the MergeAlign card next to the
merged model. Configurations with another merge method run exactly as `mergekit-yaml` would run them. Model
fixture ids (`hf-ext-testing/<name>`, see `hf_ext.testing`) in the configuration are built offline; other model
paths are tried as local paths first, then as Hub ids.

`OUT` must be absent or empty, or `--overwrite` given: the merge is written to a staging folder and replaces `OUT` as
a whole in one rename, so no file of an earlier merge survives beside the new one (e.g. a `model.safetensors` beside
new shards), and a failed merge leaves `OUT` as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_ext.scripts.utils import CommandError, check_config_file, check_output, run_command


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
    @click.option(
        "--overwrite",
        is_flag=True,
        default=False,
        help="Replace a non-empty OUT_PATH as a whole (without it, such a folder is refused before any work)",
    )
    @add_merge_options
    def command(merge_options, config_file: str, out_path: str, report: bool, overwrite: bool):
        """Merge models as `mergekit-yaml` does, with hf-ext's merge methods (`merge_method: mergealign`)."""
        merge_options.apply_global_options()
        run_merge_file(config_file, out_path, merge_options, report=report, overwrite=overwrite)

    return command


def merge_method_names() -> list[str]:
    """The merge methods mergekit knows (hf-ext's `mergealign` included)."""
    import mergekit.merge_methods

    import hf_ext.mergealign  # noqa: F401 (registers the method)

    return sorted(method.spec.name for method in mergekit.merge_methods.registered_methods())


def check_merge_method(data: dict, config_file: str) -> str:
    """The configuration's `merge_method`, which must be one mergekit knows; otherwise a [`CommandError`] listing
    them (mergekit's own error is a `RuntimeError` traceback)."""
    import difflib

    method = data.get("merge_method")
    names = merge_method_names()
    if method not in names:
        close = difflib.get_close_matches(str(method), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CommandError(
            f"{config_file}: merge_method={method!r} is not a merge method{hint}; expected one of {names}."
        )
    return method


def run_merge_file(config_file: str, out_path: str, merge_options, report: bool = True, overwrite: bool = False):
    """Run a mergekit YAML file into `out_path` (replaced as a whole, which needs `overwrite` when it is not empty):
    MergeAlign configurations through `hf_ext.mergealign.merge`, any other one through mergekit's `run_merge`, as
    `mergekit-yaml` does."""
    from hf_ext.mergealign.merging import check_model_paths, merge
    from hf_ext.serialization import atomic_directory
    from hf_ext.testing import resolve_fixture_ids

    check_output(out_path, overwrite, "--overwrite")
    data = check_config_file(config_file, "CONFIG_FILE")
    with open(config_file, encoding="utf-8") as file:
        source = file.read()
    method = check_merge_method(data, config_file)
    try:
        resolved = resolve_fixture_ids(data)
    except ValueError as error:  # an unknown fixture id
        raise CommandError(f"{config_file}: {error}") from None
    if method == "mergealign":
        config = config_file if resolved == data else resolved
    else:
        from mergekit.config import MergeConfiguration

        try:
            config = MergeConfiguration.model_validate(resolved)
        except Exception as error:  # pydantic's ValidationError, or mergekit's RuntimeError from its validators
            raise CommandError(f"{config_file}: invalid mergekit configuration: {error}") from None
        try:
            check_model_paths(config)
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(f"{config_file}: {error}") from None
    with atomic_directory(out_path, overwrite=overwrite, option="--overwrite") as staging:
        if method == "mergealign":
            merge(config, staging, options=merge_options, report=report)
        else:
            from mergekit.merge import run_merge

            run_merge(config, str(staging), options=merge_options, config_source=source)


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
        except (ValueError, FileNotFoundError) as error:
            raise CommandError(str(error)) from None
        except OSError as error:  # a Hub id mergekit could not fetch
            raise CommandError(f"cannot read a model of the merge: {error}") from None

    return run_command(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
