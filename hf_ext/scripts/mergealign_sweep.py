"""`hf-ext mergealign-sweep`: score MergeAlign merges over a grid of alpha (and scale) in memory.

The options are the fields of [`~hf_ext.mergealign.AlphaSweepConfig`] (`--config sweep.yaml` and `--any_field
value`, as with `trl`). Model fixture ids (`hf-ext-testing/<name>`, see `hf_ext.testing`), in the options or in
the `merge_config` YAML, are built offline.

```bash
hf-ext mergealign-sweep --config processors/mergealign_sweep.yaml
```
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_ext.scripts.utils import CommandError, dataclass_parser, parse_dataclasses, run_command


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
    import os

    import yaml

    from hf_ext.testing import resolve_fixture_ids, resolve_model_name_or_path

    changes = {}
    for name in ("base_model", "domain_model", "alignment_model"):
        value = getattr(config, name)
        if value is not None:
            changes[name] = resolve_model_name_or_path(value)
    if config.merge_config is not None and os.path.isfile(config.merge_config):
        with open(config.merge_config, encoding="utf-8") as file:
            data = yaml.safe_load(file)
        resolved = resolve_fixture_ids(data)
        if resolved != data:
            changes["merge_config"] = yaml.safe_dump(resolved, sort_keys=False)
    return dataclasses.replace(config, **changes) if changes else config


def main(argv: Sequence[str] | None = None) -> int:
    """`hf-ext mergealign-sweep OPTIONS`; returns the exit status."""

    def run() -> int:
        from hf_ext.mergealign.sweep import run_sweep

        (config,) = parse_dataclasses(make_parser(), argv)
        try:
            run_sweep(resolve_sweep_inputs(config))
        except ValueError as error:
            raise CommandError(str(error)) from None
        return 0

    return run_command(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
