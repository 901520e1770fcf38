"""`make test-gpu` (benchmarks/gpu.py): on a machine without CUDA it says so, writes nothing and exits 0."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch


SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: `make test-gpu` runs the real checks")
def test_without_cuda_the_gpu_run_says_so_and_exits_0(tmp_path):
    results = SCRIPT.parent / "results" / "gpu.md"
    before = results.read_bytes() if results.exists() else None
    # CUDA_VISIBLE_DEVICES="" hides any GPU: the no-GPU branch is what this test pins down.
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(SCRIPT.parents[1])}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA GPU is present" in result.stdout
    assert (results.read_bytes() if results.exists() else None) == before  # no results claimed without a GPU


def test_the_gpu_run_covers_every_method():
    source = SCRIPT.read_text()
    for method in ("SASA", "Larimar", "AOT", "SEAL", "MergeAlign", "FSDP2"):
        assert f'("{method}' in source, method
    assert 'ATTN = "sdpa"' in source and "DTYPE = torch.bfloat16" in source
    assert "test-gpu:" in (SCRIPT.parents[1] / "Makefile").read_text()
