"""Where the `evaluate` module of stochastic dominance lives: `evaluate.load(EVALUATE_MODULE_PATH)` (no Hub access)."""

from __future__ import annotations

from pathlib import Path


__all__ = ["EVALUATE_MODULE_PATH"]

EVALUATE_MODULE_PATH = str(Path(__file__).resolve().parent / "stochastic_dominance")
"""Local path of the `evaluate` module: `evaluate.load(EVALUATE_MODULE_PATH)` (no Hub access needed)."""
