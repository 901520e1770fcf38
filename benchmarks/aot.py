"""AOTTrainer against TRL's DPOTrainer (`loss_type="aot"`, `"aot_unpaired"`, `"sigmoid"`): step time and memory.

Every configuration trains the same tiny Llama (hidden 256, 4 layers, built offline) on the same synthetic pairs
(batch 8 pairs, sequences padded to 64 tokens).

- Step time: all the trainers live in one process and take turns, a few steps each, for several rounds (in order,
  then in reverse order), so that a change of the machine's load affects every configuration alike. A
  configuration's step time is the median of its steps (the first step of each turn is left out).
- Memory: each configuration trains in a process of its own, which reports its peak RSS and its growth during
  `train()`.

Results, as ratios against TRL measured in the same run, go to `benchmarks/results/aot.md`.

    python benchmarks/aot.py                 # a few minutes on 2 CPU cores
    python benchmarks/aot.py --rounds 20     # more rounds of the timing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent
CONFIGS = {
    "hf-ext AOTTrainer, paired": ("hf-ext", {"aot_variant": "paired"}),
    "TRL DPOTrainer, aot": ("trl", {"loss_type": "aot"}),
    "TRL DPOTrainer, sigmoid": ("trl", {"loss_type": "sigmoid"}),
    "hf-ext AOTTrainer, unpaired": ("hf-ext", {"aot_variant": "unpaired"}),
    "TRL DPOTrainer, aot_unpaired": ("trl", {"loss_type": "aot_unpaired"}),
}
PEERS = {  # the row each configuration is compared with
    "hf-ext AOTTrainer, paired": "TRL DPOTrainer, aot",
    "hf-ext AOTTrainer, unpaired": "TRL DPOTrainer, aot_unpaired",
}
BATCH, LENGTH, WARMUP = 8, 64, 2


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc when available."""
    values = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return values["VmRSS"], values["VmHWM"]


def build_model(folder: Path) -> None:
    from hf_ext.testing import build_tiny_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_causal_lm(
        "llama", tokenizer=tokenizer, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=688
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def make_trainer(name: str, model_dir: str, max_steps: int):
    from transformers import set_seed

    from hf_ext._compat import activation_checkpointing_arg
    from hf_ext.testing.aot import synthetic_preference_dataset

    kind, options = CONFIGS[name]
    common = {
        "output_dir": tempfile.mkdtemp(),
        "per_device_train_batch_size": BATCH,
        "max_steps": max_steps,
        "max_length": LENGTH,
        "pad_to_multiple_of": LENGTH,
        "learning_rate": 1e-4,
        "beta": 0.01,
        "bf16": False,
        activation_checkpointing_arg(): False,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    set_seed(0)
    dataset = synthetic_preference_dataset(BATCH * max_steps, seed=0)
    if kind == "hf-ext":
        from hf_ext.aot import AOTConfig, AOTTrainer

        return AOTTrainer(model_dir, args=AOTConfig(**common, **options), train_dataset=dataset)
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer(model_dir, args=DPOConfig(**common, **options), train_dataset=dataset)


def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    return Timer()


def timing_worker(model_dir: str, rounds: int, steps: int) -> dict:
    """All configurations in this process, taking turns of `steps + 1` steps for `rounds` rounds."""
    import torch

    trainers = {name: make_trainer(name, model_dir, max_steps=steps + 1) for name in CONFIGS}
    timers = {}
    for name, trainer in trainers.items():
        timers[name] = _timer()
        trainer.add_callback(timers[name])
    step_ms = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            timers[name].times = []
            trainers[name].train()
            step_ms[name] += [1000 * t for t in timers[name].times[1:]]  # the turn's first step warms up
    return {"step_ms": step_ms, "torch_threads": torch.get_num_threads()}


def memory_worker(name: str, model_dir: str, steps: int) -> dict:
    """One configuration alone in this process: its peak RSS, and how much RSS grows during `train()`."""
    trainer = make_trainer(name, model_dir, max_steps=steps)
    rss_before, _ = _rss_mib()
    trainer.train()
    _, peak = _rss_mib()
    return {"rss_before_train_mib": rss_before, "peak_rss_mib": peak}


def run_worker(*worker_args: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *worker_args]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{worker_args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds of turns in the timing process")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per turn")
    parser.add_argument("--output", default=str(ROOT / "results" / "aot.md"))
    parser.add_argument("--worker", choices=["timing", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "timing":
        print(json.dumps(timing_worker(args.model_dir, args.rounds, args.steps)))
        return
    if args.worker == "memory":
        print(json.dumps(memory_worker(args.config, args.model_dir, WARMUP + args.steps)))
        return

    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tiny-llama-256x4"
        build_model(model_dir)
        jobs = [("timing", None)] + [("memory", name) for name in CONFIGS]
        outputs = {}
        for kind, name in tqdm(jobs, desc="aot benchmark"):
            worker_args = ["--worker", kind, "--model-dir", str(model_dir), "--rounds", str(args.rounds)]
            worker_args += ["--steps", str(args.steps)] + (["--config", name] if name else [])
            outputs[name or kind] = run_worker(*worker_args)
    write_report(Path(args.output), outputs, args.rounds, args.steps)
    print(Path(args.output).read_text())


def write_report(path: Path, outputs: dict, rounds: int, steps: int) -> None:
    import torch
    import transformers
    import trl

    timing = outputs["timing"]
    rows = {}
    for name in CONFIGS:
        memory = outputs[name]
        rows[name] = {
            "ms": statistics.median(timing["step_ms"][name]),
            "n": len(timing["step_ms"][name]),
            "peak": memory["peak_rss_mib"],
            "growth": memory["peak_rss_mib"] - memory["rss_before_train_mib"],
        }
    aot, sigmoid = rows["TRL DPOTrainer, aot"], rows["TRL DPOTrainer, sigmoid"]
    lines = [
        "# AOT: AOTTrainer vs TRL DPOTrainer",
        "",
        f"Tiny Llama (hidden 256, 4 layers, random weights, built offline), batch {BATCH} pairs, sequences padded to "
        f"{LENGTH} tokens, fp32, no gradient checkpointing, one process. Step time: the median of "
        f"{rounds} turns x {steps} steps per configuration, the trainers taking turns in one process (in order, "
        "then in reverse order). Memory: each configuration alone in its own process; peak RSS includes the imports "
        "and the models, training growth is the peak RSS minus the RSS before `train()`.",
        "",
        "| configuration | step (ms) | vs its TRL peer | vs TRL `aot` | vs TRL `sigmoid` | peak RSS (MiB) | training growth (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        peer = PEERS.get(name)
        vs_peer = f"{row['ms'] / rows[peer]['ms']:.3f}x" if peer else "-"
        lines.append(
            f"| {name} | {row['ms']:.1f} | {vs_peer} | {row['ms'] / aot['ms']:.3f}x | {row['ms'] / sigmoid['ms']:.3f}x "
            f"| {row['peak']:.0f} | {row['growth']:.0f} |"
        )
    ratio = rows["hf-ext AOTTrainer, paired"]["ms"] / aot["ms"]
    lines += [
        "",
        f"Goal: AOTTrainer (paired) within 5 % of TRL's `aot`: **{ratio:.3f}x** "
        f"({'met' if ratio <= 1.05 else 'not met'} in this run).",
        "",
        f"Environment: {platform.machine()}, {os.cpu_count()} CPU cores, {timing['torch_threads']} torch threads; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}. Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "AOTTrainer also logs its distributional diagnostics (`aot/*`) every step and keeps the recent rewards for "
        "the reward-quantile plot; under DDP it gathers the rewards of every process to sort the global batch (with "
        "one process the gather is skipped).",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
