"""`hf-ext mergealign-sweep`: score MergeAlign merges over a grid of alpha (and scale) in memory.

The options are the fields of [`~hf_ext.mergealign.AlphaSweepConfig`] (`--config sweep.yaml` and `--any_field
value`, as with `trl`). Model fixture ids (`hf-ext-testing/<name>`, see `hf_ext.testing`), in the options or in
the `merge_config` YAML, are built offline; other model and dataset names (a local `.jsonl` file, for example) are
tried as local paths first, then as Hub ids. `output_dir` must be absent or empty, or `--overwrite_output_dir` given,
and writable; it is replaced as a whole at the end, so a failed sweep leaves it as it was.

```bash
hf-ext mergealign-sweep --config processors/mergealign_sweep.yaml
```
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_ext.scripts.utils import (
    CommandError,
    check_config_file,
    check_output,
    dataclass_parser,
    parse_dataclasses,
    resolve_name_or_path,
    run_command,
)


__all__ = ["HELP", "main", "make_parser", "resolve_sweep_inputs"]

NAME = "mergealign-sweep"
HELP = "score MergeAlign merges over a grid of alpha / scale in memory; Pareto plot and choice under a safety floor"


def make_parser():
    """The parser of `hf-ext mergealign-sweep`: the fields of `AlphaSweepConfig`."""
    from hf_ext.mergealign.sweep import AlphaSweepConfig

    return dataclass_parser(NAME, HELP, (AlphaSweepConfig,))


def resolve_sweep_inputs(config):
    """`config` with its model fixture ids built and replaced by their folders (those of `merge_config` too, which
    is then passed on as the resolved YAML text)."""
    import dataclasses

    import yaml

    from hf_ext.testing import resolve_fixture_ids

    changes = {}
    for name in ("base_model", "domain_model", "alignment_model"):
        value = getattr(config, name)
        if value is not None:
            changes[name] = resolve_name_or_path(value, name)
    if config.merge_config is not None and "\n" not in config.merge_config:
        data = check_config_file(config.merge_config, "merge_config")
        try:
            resolved = resolve_fixture_ids(data)
        except ValueError as error:  # an unknown fixture id
            raise CommandError(f"merge_config={config.merge_config!r}: {error}") from None
        if resolved != data:
            changes["merge_config"] = yaml.safe_dump(resolved, sort_keys=False)
    return dataclasses.replace(config, **changes) if changes else config


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext mergealign-sweep OPTIONS`; returns the exit status."""

    def run() -> int:
        from hf_ext.mergealign.sweep import run_sweep

        (config,) = parse_dataclasses(make_parser(), argv)
        check_output(config.output_dir, config.overwrite_output_dir)
        try:
            run_sweep(resolve_sweep_inputs(config))
        except (ValueError, OSError) as error:  # bad settings, a missing path, an output folder to keep
            raise CommandError(str(error)) from None
        return 0

    return run_command(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
