"""Quiet, actionable output: the one notice `import hf_ext` drops, and what hf-ext's commands and demo switch off.

- `import hf_ext` drops the log records of bitsandbytes' attempt to fetch a kernel: on CPUs with AVX512-BF16,
  bitsandbytes asks the `kernels` package, when imported, for an optional 4-bit kernel from the Hub, and when it
  cannot have it (`kernels` missing, the Hub unreachable, or offline with the kernel not in the cache) logs so and
  uses its own kernel (the same results). With `kernels` installed (transformers >= 5.25 requires it) and
  `HF_HUB_OFFLINE=1`, `kernels` also logs that it skips the publisher trust check of that repository. These two
  records ([`BITSANDBYTES_KERNEL_NOTICE`], [`KERNELS_OFFLINE_TRUST_NOTICE`]) are dropped; nothing else that
  bitsandbytes, `kernels` (another repository's trust check included) or a user's code logs or warns is touched.
- The `hf-ext` commands and the demo call [`configure_command_output`]: besides, a progress bar appears only for work
  that lasts longer than [`PROGRESS_BAR_DELAY`] seconds (loading a tiny model or mapping a small dataset shows none;
  a training run or a download still does), and the Hugging Face stack's warnings about its own calls among
  themselves ([`UPSTREAM_WARNINGS`]), which no option of the command can avoid, are not shown.
"""

from __future__ import annotations

import logging
import os
import re
import warnings


__all__ = [
    "BITSANDBYTES_KERNEL_NOTICE",
    "KERNELS_OFFLINE_TRUST_NOTICE",
    "PROGRESS_BAR_DELAY",
    "UPSTREAM_WARNINGS",
    "configure_command_output",
    "silence_bitsandbytes_kernel_notice",
]

BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
"""The start of the message bitsandbytes (>= 0.49, `bitsandbytes.backends.cpu.ops`) logs at import when the optional
`kernels` package is missing; installing it would make bitsandbytes download a kernel from the Hub at import."""

_BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"

BITSANDBYTES_KERNEL_REPO = "kernels-community/quantization-bitsandbytes"
"""The Hub repository of the kernel bitsandbytes' CPU backend asks `kernels` for at import."""

KERNELS_OFFLINE_TRUST_NOTICE = f"Skipping publisher trust check for '{BITSANDBYTES_KERNEL_REPO}'"
"""The start of the message `kernels` (>= 0.19, `kernels._internals.hf_hub`) logs when bitsandbytes asks it for its
kernel with `HF_HUB_OFFLINE=1`: the trust of the repository's publisher cannot be checked offline. The same message
for any other repository (a kernel a user loads) is kept."""

_KERNELS_HUB_LOGGER = "kernels._internals.hf_hub"

_KERNEL_FETCH_NOTICES = (
    (_BITSANDBYTES_CPU_LOGGER, BITSANDBYTES_KERNEL_NOTICE),
    (_KERNELS_HUB_LOGGER, KERNELS_OFFLINE_TRUST_NOTICE),
)
"""(logger, start of the message) of the records dropped: a logger's filters see only the records logged on that
logger itself, so each is attached to the logger that emits the record."""

PROGRESS_BAR_DELAY = 2.0
"""Seconds of work before the commands' progress bars (tqdm's `delay`) appear."""

UPSTREAM_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # peft 0.21 (PeftModel.__init__) and TRL 1.16 (trl/models/utils.py) read `model.is_gradient_checkpointing`,
    # which transformers 5.24 deprecates (also ignored in pyproject's pytest filterwarnings).
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),
    # Trainer pins its data loaders' memory by default (`dataloader_pin_memory=True`); torch warns on a machine
    # without an accelerator, where pinning does nothing.
    ("'pin_memory' argument is set as true but no accelerator is found", UserWarning),
)
"""(start of the message, category) of the warnings the commands and the demo do not show."""


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with `prefix`; lets every other record through."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def silence_bitsandbytes_kernel_notice() -> None:
    """Drop bitsandbytes' [`BITSANDBYTES_KERNEL_NOTICE`] and, offline, `kernels`' [`KERNELS_OFFLINE_TRUST_NOTICE`]
    about bitsandbytes' kernel, and nothing else (idempotent). Both are logged once, when bitsandbytes is imported:
    call this before that (`import hf_ext` does)."""
    for name, prefix in _KERNEL_FETCH_NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))


def configure_command_output() -> None:
    """The output settings of an `hf-ext` command or of the demo, for this process and the processes it starts
    (`accelerate launch` ranks): progress bars only after [`PROGRESS_BAR_DELAY`] seconds of work, no
    [`UPSTREAM_WARNINGS`], no notice of bitsandbytes' kernel fetch. Not for library code: it changes process-wide settings.

    The progress-bar delay is tqdm's own setting (the `TQDM_DELAY` environment variable, read when tqdm is first
    imported: call this before importing transformers or datasets). A `TQDM_DELAY` already set is kept.
    """
    silence_bitsandbytes_kernel_notice()
    os.environ.setdefault("TQDM_DELAY", str(PROGRESS_BAR_DELAY))
    for message, category in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
