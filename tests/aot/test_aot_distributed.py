"""Global sort under DDP: two CPU processes on gloo give the loss and gradients of one process on the whole batch."""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_ext.serialization import load_tensors


WORKER = Path(__file__).with_name("aot_ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_module():
    spec = importlib.util.spec_from_file_location("aot_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_on_the_concatenated_batch(tmp_path, tiny_llama_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # torchrun: `accelerate launch --cpu` starts a single process without MPI
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(tiny_llama_path),
        str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    worker = _worker_module()
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
