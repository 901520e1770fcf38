"""AOTTrainer against TRL's DPOTrainer (`loss_type="aot"`, `"aot_unpaired"`, `"sigmoid"`): step time and memory.

Every configuration trains the same tiny Llama (hidden 256, 4 layers, built offline) on the same synthetic pairs
(batch 8 pairs, sequences padded to 64 tokens) in its own process, so that its peak RSS is its own. The
configurations run twice, in order and then in reverse order, so that a drift of the machine's load affects all
alike; a configuration's step time is the median over both runs of its measured steps. Results, as ratios against
TRL measured in the same run, go to `benchmarks/results/aot.md`.

    python benchmarks/aot.py                 # a few minutes on 2 CPU cores
    python benchmarks/aot.py --steps 40      # more measured steps per run
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
BATCH, LENGTH, WARMUP = 8, 64, 3


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


def worker(name: str, model_dir: str, steps: int) -> dict:
    """Train one configuration for WARMUP + steps steps; return its step times and memory."""
    import torch
    from transformers import TrainerCallback, set_seed

    from hf_ext.aot.data import synthetic_preference_dataset

    kind, options = CONFIGS[name]
    common = {
        "output_dir": tempfile.mkdtemp(),
        "per_device_train_batch_size": BATCH,
        "max_steps": WARMUP + steps,
        "max_length": LENGTH,
        "pad_to_multiple_of": LENGTH,
        "learning_rate": 1e-4,
        "beta": 0.01,
        "bf16": False,
        "gradient_checkpointing": False,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
    }
    set_seed(0)
    dataset = synthetic_preference_dataset(BATCH * (WARMUP + steps), seed=0)
    if kind == "hf-ext":
        from hf_ext.aot import AOTConfig, AOTTrainer

        trainer = AOTTrainer(model_dir, args=AOTConfig(**common, **options), train_dataset=dataset)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model_dir, args=DPOConfig(**common, **options), train_dataset=dataset)

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    rss_before, _ = _rss_mib()
    trainer.train()
    _, peak = _rss_mib()
    return {
        "step_ms": [1000 * t for t in times[WARMUP:]],
        "rss_before_train_mib": rss_before,
        "peak_rss_mib": peak,
        "torch_threads": torch.get_num_threads(),
    }


def run_worker(name: str, model_dir: Path, steps: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--model-dir", str(model_dir)]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run([*command, "--steps", str(steps)], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="measured steps per configuration and run")
    parser.add_argument("--output", default=str(ROOT / "results" / "aot.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model_dir, args.steps)))
        return

    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tiny-llama-256x4"
        build_model(model_dir)
        names = list(CONFIGS)
        results = {name: [] for name in names}
        for name in tqdm(names + names[::-1], desc="aot benchmark (one process per configuration and run)"):
            results[name].append(run_worker(name, model_dir, args.steps))
    write_report(Path(args.output), results, args.steps)
    print(Path(args.output).read_text())


def write_report(path: Path, results: dict, steps: int) -> None:
    import torch
    import transformers
    import trl

    rows = {}
    for name, runs in results.items():
        rows[name] = {
            "ms": statistics.median([t for run in runs for t in run["step_ms"]]),
            "peak": max(run["peak_rss_mib"] for run in runs),
            "growth": max(run["peak_rss_mib"] - run["rss_before_train_mib"] for run in runs),
        }
    aot, sigmoid = rows["TRL DPOTrainer, aot"], rows["TRL DPOTrainer, sigmoid"]
    lines = [
        "# AOT: AOTTrainer vs TRL DPOTrainer",
        "",
        f"Tiny Llama (hidden 256, 4 layers, random weights, built offline), batch {BATCH} pairs, sequences padded to "
        f"{LENGTH} tokens, fp32, no gradient checkpointing; {steps} measured steps after {WARMUP} warm-up steps, per "
        "configuration and run, two runs (in order, then in reverse order), each configuration in its own process. "
        "Step time: median over both runs. Peak RSS: the largest of the two runs (imports and model included); "
        "training growth: peak RSS minus RSS before `train()`.",
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
        f"Environment: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{results['TRL DPOTrainer, aot'][0]['torch_threads']} torch threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}. "
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "AOTTrainer also logs its distributional diagnostics (`aot/*`) and, under DDP, gathers the rewards of every "
        "process to sort the global batch; with one process the gather is skipped.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
