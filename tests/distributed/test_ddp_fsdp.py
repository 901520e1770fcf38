"""Two CPU processes on gloo (torchrun) give the loss and gradients of one process on the whole batch.

AOT paired and unpaired, with the reference log-probabilities computed live or precomputed; SEAL `penalty` and `full`.
Each under DDP (what `accelerate launch` gives) and under FSDP2 (`torch.distributed.fsdp.fully_shard`, every decoder
layer and the whole model sharded over the two processes).

Tolerance: float32 throughout; one process sees the whole batch padded to its longest row, each of two processes
sees half of it padded to its own longest row, so matrix products of other shapes sum in other orders (~1e-7
relative), and the gradients are averaged by an all-reduce (DDP) or a reduce-scatter (FSDP). 1e-6 absolute on the
loss and 1e-6 absolute + 1e-5 relative on every gradient is ~10x that noise, and far below the differences a wrong
share, a missing reduction or a rank using other reference log-probabilities makes (checked by the `local` sort
in tests/aot/test_aot_distributed.py, by the precomputed == live check and by the adapter check below).
"""

from pathlib import Path

import pytest
import torch
from gloo_launch import run_two_processes

from hf_ext.serialization import load_tensors


HERE = Path(__file__).parent
ATOL, RTOL = 1e-6, 1e-5


def torchrun(script, *args):
    run_two_processes(HERE / script, *args)


def assert_gradients_equal(got, expected, context):
    names = [k for k in expected if k.startswith("grad.")]
    assert names and set(names) == {k for k in got if k.startswith("grad.")}, context
    for name in names:
        torch.testing.assert_close(got[name], expected[name], atol=ATOL, rtol=RTOL, msg=f"{context} {name}")


@pytest.fixture(scope="module")
def aot_single(tiny_llama_path, tmp_path_factory):
    import aot_worker

    out = tmp_path_factory.mktemp("aot-single")
    for variant, precompute in aot_worker.CASES:
        aot_worker.run(tiny_llama_path, out, variant, precompute, world_size=1)
    return out


@pytest.fixture(scope="module")
def seal_single(tmp_path_factory):
    import seal_worker

    out = tmp_path_factory.mktemp("seal-single")
    for algorithm in seal_worker.ALGORITHMS:
        seal_worker.run(out, algorithm, world_size=1)
    return out


@pytest.mark.slow
def test_single_process_runs_are_informative(aot_single, seal_single):
    """The oracle itself: precomputed = live reference log-probabilities, non-trivial losses, both SEAL adapters."""
    import aot_worker

    for variant in ("paired", "unpaired"):
        live = load_tensors(aot_single / f"{aot_worker.tag(variant, False, 0)}.safetensors")
        pre = load_tensors(aot_single / f"{aot_worker.tag(variant, True, 0)}.safetensors")
        torch.testing.assert_close(pre["ref_logps"], live["ref_logps"], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(pre["loss"], live["loss"], atol=ATOL, rtol=0)
        assert abs(live["loss"].item() - 0.6931) > 1e-3  # not log 2: the reference differs from the policy
    full = load_tensors(seal_single / "full-rank0.safetensors")
    for adapter in ("default", "seal_aux"):
        grads = [v for k, v in full.items() if k.startswith("grad.") and f".{adapter}." in k]
        assert grads and all(g.abs().max() > 0 for g in grads), adapter


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_aot_two_processes_equal_one(tmp_path, tiny_llama_path, aot_single, strategy):
    import aot_worker

    torchrun("aot_worker.py", tiny_llama_path, tmp_path, strategy)
    for variant, precompute in aot_worker.CASES:
        single = load_tensors(aot_single / f"{aot_worker.tag(variant, precompute, 0)}.safetensors")
        for rank in (0, 1):
            context = f"{strategy} {aot_worker.tag(variant, precompute, rank)}"
            got = load_tensors(tmp_path / f"{aot_worker.tag(variant, precompute, rank)}.safetensors")
            # With a global sort every rank computes the loss of the whole batch.
            torch.testing.assert_close(got["loss"], single["loss"], atol=ATOL, rtol=0, msg=context)
            share = len(single["ref_logps"]) // 2
            if variant == "paired":  # [chosen..., rejected...] of this rank's pairs
                half = len(single["ref_logps"]) // 2
                pairs = slice(rank * share // 2, (rank + 1) * share // 2)
                expected = torch.cat([single["ref_logps"][:half][pairs], single["ref_logps"][half:][pairs]])
            else:
                expected = single["ref_logps"][rank * share : (rank + 1) * share]
            torch.testing.assert_close(got["ref_logps"], expected, atol=1e-5, rtol=1e-6, msg=context)
            assert_gradients_equal(got, single, context)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_seal_two_processes_equal_one(tmp_path, seal_single, strategy):
    import seal_worker

    torchrun("seal_worker.py", tmp_path, strategy)
    for algorithm in seal_worker.ALGORITHMS:
        single = load_tensors(seal_single / f"{algorithm}-rank0.safetensors")
        ranks = [load_tensors(tmp_path / f"{algorithm}-rank{rank}.safetensors") for rank in (0, 1)]
        # Each rank's loss is its half's (means over its own rows); the gradient reduction averages the two halves.
        mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
        torch.testing.assert_close(mean_loss, single["loss"], atol=ATOL, rtol=0, msg=f"{strategy} {algorithm}")
        for rank, got in enumerate(ranks):
            assert_gradients_equal(got, single, f"{strategy} {algorithm} rank{rank}")
