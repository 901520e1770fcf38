import doctest

import pytest

from hf_ext.demo import DemoContext


def test_demo_stage_shows_the_mean_picking_the_risky_model(tmp_path):
    from hf_ext.demo.risk import STAGE

    assert STAGE.name == "risk"
    result = STAGE.run(DemoContext(output_dir=tmp_path, seed=0))
    assert result.figures["ranking by mean"].startswith("risky")
    assert result.figures["ranking, second order"].startswith("aligned")
    assert result.figures["risky: TVaR@5%"] < result.figures["aligned: TVaR@5%"]
    assert all(plot.exists() and plot.parent == tmp_path for plot in result.plots)
    assert (tmp_path / "report.md").exists()


@pytest.mark.parametrize("module", ["violation", "dominance", "aggregation"])
def test_docstring_examples(module):
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(f"hf_ext.risk.{module}"))
    assert tried > 0 and failures == 0
