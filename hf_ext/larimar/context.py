"""Deprecated: the splicing of remembered text before a prompt is now [`hf_ext.larimar.splicing`]."""

from __future__ import annotations

import warnings

from .splicing import SplicedBatch, padding_side
from .splicing import splice_tokens as splice_context


__all__ = ["SplicedBatch", "padding_side", "splice_context"]

warnings.warn(
    "hf_ext.larimar.context is deprecated; use hf_ext.larimar.splicing (splice_context is now splice_tokens).",
    FutureWarning,
    stacklevel=2,
)
