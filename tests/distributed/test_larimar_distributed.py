"""Larimar training under DDP and FSDP2 (`fully_shard`): two CPU processes on gloo, each with one episode, give the
loss and the gradients of one process on both episodes, over two optimizer steps.

Tolerances: the processes sum the same float32 terms in another order (1e-7 relative at the first step); the second
step starts from parameters that already differ by that rounding, amplified by the update, hence 10x looser.
Gradients that are zero in exact arithmetic (attention key biases, ~1e-12 of the total) are compared through the
total only.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_ext.serialization import load_tensors


WORKER = Path(__file__).with_name("larimar_worker.py")
TOLERANCE = {0: {"total": 1e-5, "parameter": 1e-4}, 1: {"total": 1e-4, "parameter": 1e-3}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_module():
    spec = importlib.util.spec_from_file_location("larimar_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("larimar-single")
    _worker_module().run(out, world_size=1)
    return load_tensors(out / "ddp-rank0.safetensors")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2"])
def test_two_gloo_processes_equal_one_process(wrapper, single_process, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        str(tmp_path),
        wrapper,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    ranks = [load_tensors(tmp_path / f"{wrapper}-rank{rank}.safetensors") for rank in (0, 1)]
    for step, tolerance in TOLERANCE.items():
        # Each rank's loss is the mean over its own episode; the episodes differ, their mean is the global loss.
        losses = [ranks[rank][f"loss.{step}"] for rank in (0, 1)]
        assert abs(losses[0] - losses[1]).item() > 1e-3
        torch.testing.assert_close((losses[0] + losses[1]) / 2, single_process[f"loss.{step}"], rtol=1e-6, atol=0)

        names = sorted(k for k in single_process if k.startswith(f"grad.{step}."))
        assert len(names) == sum(1 for _ in _worker_module().build().parameters())  # every parameter has a gradient
        total = torch.cat([single_process[n].flatten() for n in names])
        for rank in (0, 1):
            assert sorted(k for k in ranks[rank] if k.startswith(f"grad.{step}.")) == names
            assert _rel(torch.cat([ranks[rank][n].flatten() for n in names]), total) < tolerance["total"]
            for name in names:
                if single_process[name].norm() > 1e-6 * total.norm():
                    assert _rel(ranks[rank][name], single_process[name]) < tolerance["parameter"], (step, name)
