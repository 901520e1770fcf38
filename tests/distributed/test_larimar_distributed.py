"""Larimar training under DDP and FSDP2 (`fully_shard`): two CPU processes on gloo, each with one episode, give the
loss and the gradients of one process on both episodes, over two optimizer steps.

Tolerances: the processes sum the same float32 terms in another order (1e-7 relative at the first step); the second
step starts from parameters that already differ by that rounding, amplified by the update, hence 10x looser.
Gradients that are zero in exact arithmetic (attention key biases, ~1e-12 of the total) are compared through the
total only.
"""

from pathlib import Path

import pytest
import torch
from gloo_launch import load_worker, run_two_processes

from hf_ext.serialization import load_tensors


WORKER = Path(__file__).with_name("larimar_worker.py")
TOLERANCE = {0: {"total": 1e-5, "parameter": 1e-4}, 1: {"total": 1e-4, "parameter": 1e-3}}


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """One process on both episodes, for each read-out."""
    results = {}
    for wrapper in ("ddp", "ddp-text"):
        out = tmp_path_factory.mktemp("larimar-single")
        load_worker(WORKER).run(out, wrapper, world_size=1)
        results[wrapper] = load_tensors(out / f"{wrapper}-rank0.safetensors")
    return results


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2", "ddp-text"])
def test_two_gloo_processes_equal_one_process(wrapper, single_process, tmp_path):
    run_two_processes(WORKER, tmp_path, wrapper, timeout=300)
    single_process = single_process["ddp-text" if wrapper == "ddp-text" else "ddp"]
    readout = "text" if wrapper == "ddp-text" else "latent"

    ranks = [load_tensors(tmp_path / f"{wrapper}-rank{rank}.safetensors") for rank in (0, 1)]
    for step, tolerance in TOLERANCE.items():
        # Each rank's loss is the mean over its own episode; the episodes differ, their mean is the global loss.
        losses = [ranks[rank][f"loss.{step}"] for rank in (0, 1)]
        assert abs(losses[0] - losses[1]).item() > 1e-3
        torch.testing.assert_close((losses[0] + losses[1]) / 2, single_process[f"loss.{step}"], rtol=1e-6, atol=0)

        names = sorted(k for k in single_process if k.startswith(f"grad.{step}."))
        trainable = [p for p in load_worker(WORKER).build(readout).parameters() if p.requires_grad]
        assert len(names) == len(trainable)  # every trainable parameter has a gradient
        total = torch.cat([single_process[n].flatten() for n in names])
        for rank in (0, 1):
            assert sorted(k for k in ranks[rank] if k.startswith(f"grad.{step}.")) == names
            assert _rel(torch.cat([ranks[rank][n].flatten() for n in names]), total) < tolerance["total"]
            for name in names:
                if single_process[name].norm() > 1e-6 * total.norm():
                    assert _rel(ranks[rank][name], single_process[name]) < tolerance["parameter"], (step, name)
