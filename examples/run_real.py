"""Every real-model experiment of `examples/` on the real offline models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2,
the alt-profanity-check judge), through `hf_ext.demo.run_demo`: a summary table and `report.md` with the plots.

    python examples/run_real.py [--stages aot,larimar,...] [--output-dir hf-ext-demo-real]

Needs `make real` first (`make demo-real` does both). Each experiment's protocol is in its folder's README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make `examples` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.aot.experiment import STAGE as AOT_STAGE  # noqa: E402
from examples.larimar.experiment import NATURAL_STAGE as LARIMAR_NATURAL_STAGE  # noqa: E402
from examples.larimar.experiment import STAGE as LARIMAR_STAGE  # noqa: E402
from examples.mergealign.experiment import STAGE as MERGEALIGN_STAGE  # noqa: E402
from examples.risk.experiment import STAGE as RISK_STAGE  # noqa: E402
from examples.sasa.experiment import STAGE as SASA_STAGE  # noqa: E402
from examples.seal.experiment import STAGE as SEAL_STAGE  # noqa: E402


REAL_STAGES = [AOT_STAGE, LARIMAR_STAGE, LARIMAR_NATURAL_STAGE, SASA_STAGE, MERGEALIGN_STAGE, SEAL_STAGE, RISK_STAGE]
"""The real experiments in the order they run (the risk stage ranks the models the others measured)."""


def run_real(output_dir: str = "hf-ext-demo-real", stages: list[str] | None = None, seed: int = 0) -> int:
    """Run the real experiments (all, or those named in `stages`); returns 0 when every one succeeded."""
    from hf_ext.demo import run_demo
    from hf_ext.real_models import RealModelUnavailable, real_models_available

    if not real_models_available():
        raise RealModelUnavailable("The real offline models are not installed: run `make real` first.")
    unknown = sorted(set(stages or []) - {stage.name for stage in REAL_STAGES})
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; expected names from {[s.name for s in REAL_STAGES]}")
    return run_demo(output_dir, stages=stages, real=True, seed=seed, available=REAL_STAGES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all)")
    parser.add_argument("--output-dir", default="hf-ext-demo-real")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stages = [name.strip() for name in args.stages.split(",") if name.strip()] if args.stages else None
    return run_real(args.output_dir, stages, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
