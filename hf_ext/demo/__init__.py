"""`hf-ext demo`: a tour of every method on tiny offline models, in a few minutes on a CPU.

[`DEMO_STAGES`] lists the stages in the order they run; each is a module of this package with a `STAGE`. The
real-model experiments (SmolLM2, MiniLM) are not part of the library: they live in `examples/` and run with
`make demo-real`, through the same [`run_demo`].
"""

from __future__ import annotations

from hf_ext.demo import aot, foundation, larimar, mergealign, risk, sasa, seal
from hf_ext.demo.runner import DemoContext, DemoStage, StageResult, run_demo


__all__ = ["DEMO_STAGES", "DemoContext", "DemoStage", "StageResult", "run_demo"]

DEMO_STAGES: list[DemoStage] = [
    foundation.STAGE,
    aot.STAGE,
    larimar.STAGE,
    sasa.STAGE,
    mergealign.STAGE,
    seal.STAGE,
    risk.STAGE,
]
"""The stages of `hf-ext demo`, in the order they run (the risk stage ranks what the earlier ones measured)."""
