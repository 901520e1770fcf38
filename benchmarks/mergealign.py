"""MergeAlign vs mergekit's task_arithmetic: wall time and peak resident memory of the whole merge process.

Three float32 Llamas of ~214 MB each (a base and two perturbations of it, built offline with random weights) are
merged by `hf-ext merge` (`merge_method: mergealign`, alpha 0.5, scale 1, with its similarity report and card) and
by `mergekit-yaml` (`merge_method: task_arithmetic`, weights 0.5 / 0.5, `normalize: false`), which computes the same
tensors. Each command runs in its own process, alternately, `--repeats` times; the table gives the medians and the
ratios. The outputs are checked to agree to 1e-6. Everything is deleted afterwards.

    python benchmarks/mergealign.py [--repeats 3] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mergealign.md"
SIZES = {"hidden_size": 1024, "intermediate_size": 2816, "num_layers": 4, "num_heads": 16, "num_kv_heads": 16}


def build_models(root: Path) -> dict[str, Path]:
    import torch

    from hf_ext.testing import build_tiny_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    paths = {}
    for name, seed in (("base", None), ("domain", 1), ("aligned", 2)):
        model = build_tiny_causal_lm("llama", tokenizer=tokenizer, seed=0, **SIZES)
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
        del model
    return paths


def write_configs(root: Path, paths: dict[str, Path]) -> dict[str, Path]:
    import yaml

    mergealign = {
        "merge_method": "mergealign",
        "base_model": str(paths["base"]),
        "models": [
            {"model": str(paths["domain"]), "parameters": {"role": "domain"}},
            {"model": str(paths["aligned"]), "parameters": {"role": "alignment"}},
        ],
        "parameters": {"alpha": 0.5, "scale": 1.0},
    }
    task_arithmetic = {
        "merge_method": "task_arithmetic",
        "base_model": str(paths["base"]),
        "models": [
            {"model": str(paths["domain"]), "parameters": {"weight": 0.5}},
            {"model": str(paths["aligned"]), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"normalize": False},
    }
    configs = {"mergealign": root / "mergealign.yaml", "task_arithmetic": root / "task_arithmetic.yaml"}
    configs["mergealign"].write_text(yaml.safe_dump(mergealign, sort_keys=False))
    configs["task_arithmetic"].write_text(yaml.safe_dump(task_arithmetic, sort_keys=False))
    return configs


def run_measured(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak resident memory (MiB) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux reports KiB


def max_difference(first: Path, second: Path) -> float:
    from safetensors import safe_open

    def tensors(folder):
        handles = [safe_open(str(f), framework="pt") for f in sorted(folder.glob("*.safetensors"))]
        return {name: handle for handle in handles for name in handle.keys()}  # noqa: SIM118

    a, b = tensors(first), tensors(second)
    if a.keys() != b.keys():
        raise RuntimeError("the two merges hold different tensors")
    return max(float((a[n].get_tensor(n) - b[n].get_tensor(n)).abs().max()) for n in a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (alternating)")
    parser.add_argument("--workdir", default=None, help="where the models are built (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS), help="the Markdown results file")
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    commands = {
        "mergealign": [str(bin_dir / "hf-ext"), "merge"],
        "task_arithmetic": [str(bin_dir / "mergekit-yaml")],
    }
    root = Path(tempfile.mkdtemp(prefix="mergealign-bench-", dir=args.workdir))
    try:
        print(f"Building three float32 Llamas in {root} ...", flush=True)
        paths = build_models(root)
        model_mib = sum(f.stat().st_size for f in paths["base"].glob("*.safetensors")) / 2**20
        configs = write_configs(root, paths)
        measurements = {name: [] for name in commands}
        order = list(commands)
        for repeat in range(args.repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:
                out = root / f"out-{name}"
                shutil.rmtree(out, ignore_errors=True)
                seconds, cpu, mib = run_measured([*commands[name], str(configs[name]), str(out), "--quiet"])
                measurements[name].append((seconds, cpu, mib))
                print(f"  {name:<16} run {repeat + 1}: {seconds:6.2f} s  {cpu:6.2f} CPU s  {mib:7.0f} MiB", flush=True)
        difference = max_difference(root / "out-mergealign", root / "out-task_arithmetic")
        report_written = (root / "out-mergealign" / "mergealign_similarity.json").is_file()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    time_ours, cpu_ours, rss_ours = (statistics.median(m[i] for m in measurements["mergealign"]) for i in (0, 1, 2))
    time_peer, cpu_peer, rss_peer = (
        statistics.median(m[i] for m in measurements["task_arithmetic"]) for i in (0, 1, 2)
    )
    time_ratio, cpu_ratio, rss_ratio = time_ours / time_peer, cpu_ours / cpu_peer, rss_ours / rss_peer
    verdict = lambda ratio: "within 5 %" if ratio <= 1.05 else "over the 5 % goal"  # noqa: E731
    import torch

    lines = [
        "# MergeAlign vs mergekit task_arithmetic",
        "",
        f"Three float32 Llamas of {model_mib:.0f} MiB each (hidden {SIZES['hidden_size']}, {SIZES['num_layers']} layers, "
        "random weights; the fine-tunes are the base plus noise), merged on the CPU. Whole process, as a user runs it: "
        "`hf-ext merge` (mergealign, alpha 0.5, scale 1, with the similarity report and the card) against "
        "`mergekit-yaml` (task_arithmetic, weights 0.5 / 0.5, normalize false: the same tensors). Median of "
        f"{args.repeats} alternating runs each.",
        "",
        "| command | wall time (s) | CPU time (s) | peak RSS (MiB) |",
        "|---|---|---|---|",
        f"| `hf-ext merge` (mergealign) | {time_ours:.2f} | {cpu_ours:.2f} | {rss_ours:.0f} |",
        f"| `mergekit-yaml` (task_arithmetic) | {time_peer:.2f} | {cpu_peer:.2f} | {rss_peer:.0f} |",
        f"| **ratio** | **{time_ratio:.3f}** ({verdict(time_ratio)}) | {cpu_ratio:.3f} | **{rss_ratio:.3f}** ({verdict(rss_ratio)}) |",
        "",
        f"Largest difference between the two merged models: {difference:.2e} (similarity report written: {report_written}).",
        "Wall time is noisy on a machine shared with other jobs (whole runs vary by 10 % or more there); the CPU time "
        "column (user + system) is steadier. Most of either process is importing mergekit and its dependencies.",
        "",
        "All runs (wall seconds, CPU seconds, MiB):",
        "",
    ]
    for name, runs in measurements.items():
        lines.append(f"- {name}: " + ", ".join(f"{s:.2f} s ({c:.2f} CPU s) / {m:.0f} MiB" for s, c, m in runs))
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}. Generated by `python benchmarks/mergealign.py`.",
        "",
    ]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    if difference > 1e-6:
        print(f"error: the merges differ by {difference:.2e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
