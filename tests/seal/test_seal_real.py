"""SEAL on the real SmolLM2-135M-Instruct (QLoRA): the short version of the `make demo-real` stage."""

import pytest

from hf_ext.real_models import real_models_available
from tests.portable import SEED, expect


pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.stage,
    pytest.mark.skipif(not real_models_available(), reason="real offline models not installed (make real)"),
]


@pytest.fixture(scope="module")
def short_stage(tmp_path_factory):
    from examples.seal.experiment import run_real
    from hf_ext.demo import DemoContext

    output_dir = tmp_path_factory.mktemp("seal-real")
    return run_real(DemoContext(output_dir=output_dir, real=True, seed=SEED), size="short"), output_dir


def test_seal_ranks_planted_harmful_examples_below_clean_ones(short_stage):
    result, _ = short_stage
    figures = result.figures
    assert figures["planted harmful"] == 8 and figures["fine-tuning examples"] == 40
    seal_auroc = figures["AUROC, SEAL"]
    # The ground truth (planted labels) judges the ranking: near-perfect, far above chance, and no worse than the
    # loss filter under the aligned model SEAL starts from (measured: SEAL 1.000, loss filter 0.980, random 0.473).
    random_auroc = figures["AUROC, random (mean of 100 draws)"]
    expect("AUROC, random", random_auroc, at_least=0.45, at_most=0.55)
    expect("AUROC, SEAL", seal_auroc, at_least=0.95)
    expect("AUROC, SEAL minus loss filter", seal_auroc - figures["AUROC, loss filter"], at_least=0)
    # p = 0.8 keeps 32 of 40; a random 80 % keeps 6.4 of the 8 harmful examples, SEAL at most 1.
    random_kept = figures["harmful kept at p = 0.8, random (mean of 100 draws)"]
    expect("harmful kept at p = 0.8, random", random_kept, at_least=5.9, at_most=6.9)
    kept = figures["harmful kept at p = 0.8, SEAL"]
    expect("harmful kept at p = 0.8, SEAL", kept, at_most=1)
    expect("harmful kept, loss filter minus SEAL", figures["harmful kept at p = 0.8, loss filter"] - kept, at_least=0)


def test_seal_real_stage_writes_scores_and_plots(short_stage):
    from hf_ext.seal import SEALScores

    result, output_dir = short_stage
    scores = SEALScores.from_pretrained(output_dir / "seal_scores")
    assert len(scores) == 40 and scores.metadata["ranker_steps"] == result.figures["SEAL steps"] == 10
    assert [p.name for p in result.plots] == ["seal_real_scores.png", "seal_real_kept.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.plots)
    # Per-sample scores for the risk stage: one per planted harmful example, averaging to each selector's AUROC.
    assert {"random", "loss filter", "SEAL"} <= set(result.samples) <= {"random", "loss filter", "DSIR", "SEAL"}
    for name in set(result.samples) - {"random"}:
        values = result.samples[name]
        assert len(values) == 8 and sum(values) / 8 == pytest.approx(result.figures[f"AUROC, {name}"], abs=1e-4)
