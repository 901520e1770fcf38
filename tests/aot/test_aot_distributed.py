"""Global sort under DDP: two CPU processes on gloo give the loss and gradients of one process on the whole batch."""

from pathlib import Path

import pytest
import torch
from gloo_launch import load_worker, run_two_processes

from hf_ext.serialization import load_tensors


WORKER = Path(__file__).with_name("aot_ddp_worker.py")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_on_the_concatenated_batch(tmp_path, tiny_llama_path):
    run_two_processes(WORKER, tiny_llama_path, tmp_path / "ddp", timeout=300)

    worker = load_worker(WORKER)
    for variant in ("paired", "unpaired"):
        worker.run(tiny_llama_path, tmp_path / "single", variant, world_size=1, sorts=(True,))
        single = load_tensors(tmp_path / "single" / f"{variant}-global-rank0.safetensors")
        grad_names = [k for k in single if k.startswith("grad.")]
        assert len(grad_names) > 10 and abs(single["loss"].item() - 0.6931) > 1e-3
        for rank in (0, 1):
            ddp = load_tensors(tmp_path / "ddp" / f"{variant}-global-rank{rank}.safetensors")
            torch.testing.assert_close(ddp["loss"], single["loss"], atol=1e-6, rtol=0)
            for name in grad_names:
                torch.testing.assert_close(ddp[name], single[name], atol=1e-6, rtol=1e-5, msg=f"{variant} {name}")
        # Sorting each process's half instead is a different loss: the comparison above can fail.
        local = load_tensors(tmp_path / "ddp" / f"{variant}-local-rank0.safetensors")
        assert max((local[name] - single[name]).abs().max().item() for name in grad_names) > 1e-4
