import json
import sys
from pathlib import Path

import pytest
import torch
from gloo_launch import run_two_processes


HERE = Path(__file__).parent


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_ddp_matches_a_single_process_run(aligned_path, tmp_path):
    run_two_processes(HERE / "seal_ddp_worker.py", tmp_path, timeout=300, pythonpath=HERE)

    sys.path.insert(0, str(HERE))
    try:
        from seal_ddp_worker import NUM_EXAMPLES, make_trainer
    finally:
        sys.path.remove(str(HERE))
    single = make_trainer(tmp_path / "single", per_device_train_batch_size=16)
    single.train()

    # Every step, the two ranks feed disjoint halves of the single-process batch: each example's loss reaches the
    # ranker from exactly one rank.
    ranks = [json.loads((tmp_path / f"contributions-{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single.contributions) == 2 * NUM_EXAMPLES // 16
    for (step0, local0), (step1, local1), (step, batch) in zip(ranks[0], ranks[1], single.contributions):
        assert step0 == step1 == step
        assert not set(local0) & set(local1)
        assert local0 + local1 == batch
    per_epoch = [i for _, local in ranks[0][:4] + ranks[1][:4] for i in local]
    assert sorted(per_epoch) == list(range(NUM_EXAMPLES))

    from hf_ext.seal import SEALScores

    gathered = SEALScores.from_pretrained(tmp_path / "scores")
    reference = single.scores()
    assert gathered.hashes == reference.hashes
    assert torch.allclose(gathered.scores, reference.scores, atol=1e-4)
    # Same ranking: every pair the single-process run separates by more than float noise is ordered the same way.
    a, b = gathered.scores.double(), reference.scores.double()
    separated = (b[:, None] - b[None, :]).abs() > 1e-4
    assert torch.equal(torch.sign(a[:, None] - a[None, :])[separated], torch.sign(b[:, None] - b[None, :])[separated])
    assert gathered.kept_hashes(0.8) == reference.kept_hashes(0.8)
