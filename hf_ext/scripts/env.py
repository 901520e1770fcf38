"""`hf-ext env`: versions (checked against the tested range), devices and the bitsandbytes backend, for bug reports."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hf_ext.scripts.utils import PROG


__all__ = ["HELP", "environment_report", "main", "make_parser"]

NAME = "env"
HELP = "print versions (checked against the tested range), devices and the bitsandbytes backend"


def environment_report() -> dict[str, str]:
    """Versions, devices and the bitsandbytes backend, as `hf-ext env` prints them. A package outside the tested
    range is flagged (see [`hf_ext.versions`])."""
    import platform

    import torch

    from hf_ext.versions import version_report

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
    from hf_ext import __version__

    return __version__


def _bitsandbytes_backend() -> str:
    try:
        from bitsandbytes import cextension
    except Exception as error:  # a broken install should not stop `env`, whose job is to diagnose it
        return f"unavailable ({type(error).__name__}: {error})"
    return str(getattr(cextension, "BNB_BACKEND", "unknown"))


def make_parser() -> argparse.ArgumentParser:
    """The parser of `hf-ext env` (no options)."""
    return argparse.ArgumentParser(prog=f"{PROG} {NAME}", description=HELP)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the environment report; returns 0."""
    make_parser().parse_args(None if argv is None else list(argv))
    for key, value in environment_report().items():
        print(f"- {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
