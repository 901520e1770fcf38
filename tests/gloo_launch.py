"""Launching a test worker on two CPU processes (torchrun, gloo), and loading a worker module in this process.

`accelerate launch --cpu` starts a single process without MPI, hence torchrun. Shared by every distributed test.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(script: Path, *args, timeout: int = 600, pythonpath: Path | None = None) -> None:
    """Run `script` under torchrun with two processes on this machine; fail with the output's tail unless it exits 0.

    `pythonpath` is put in front of the inherited `PYTHONPATH` (for workers that import their neighbours).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        *map(str, args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]


def load_worker(script: Path):
    """The worker script as a module of this process (to run its one-process reference)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
