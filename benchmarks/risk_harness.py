"""Benchmark: reading and ranking lm-eval `--log_samples` logs of 10 models x 5 tasks x 5,000 documents, second
order, 1,000 paired bootstrap rounds, with `hf_ext.risk` (`read_harness_logs` + `compare_harness_logs`).

The logs are written here, in lm-eval's own layout and record format (one `results_<date>.json` and one
`samples_<task>_<date>.jsonl` per task in a folder per model; each record with its `doc`, `arguments`, `resps`,
`filtered_resps`, hashes and metric values), from a latent-ability model of paired data: document `i` has a
difficulty, model `m` an ability, and a document is answered correctly with probability
`sigmoid(ability - difficulty)`, so that the models' errors are correlated as on a real benchmark. The tasks mirror
common lm-eval tasks: two multiple-choice tasks (`acc`, `acc_norm`), a generative one with two filters
(`exact_match,strict-match`, `exact_match,flexible-extract`), a one-metric one (`acc`) and a generative task with a
continuous per-sample score (`rouge1_max`, as truthfulqa_gen logs; larger is better) and a 0/1 one (`bleu_acc`).

Peers measured in the same run:
- deepsig's `aso` (the peer implementation of the almost-dominance test; first order only): its cost per bootstrap
  round of one pair at n = 5,000, measured here, times the rounds and pairs of the same workload (it cannot run
  them all: hours);
- the unpaired two-sample z-test of lm-eval's `scripts/model_comparator.py` (`(acc1 - acc2) / sqrt(se1^2 + se2^2)`
  on the aggregated accuracies and standard errors of `results_*.json`), against the paired McNemar test on the same
  logs: how many of the truly different pairs each detects at alpha = 0.05. (The formula is written out here: the
  script is not part of the lm-eval package.)

Writes benchmarks/results/risk_harness.md.

    python benchmarks/risk_harness.py [--models 10] [--tasks 5] [--samples 5000] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


RESULTS = Path(__file__).resolve().parent / "results" / "risk_harness.md"
DATE = "2026-01-0{}T12-00-00.000000"
TASKS = [
    ("arc_like", "multiple_choice", ["acc", "acc_norm"]),
    ("hellaswag_like", "multiple_choice", ["acc", "acc_norm"]),
    ("gsm8k_like", "generate_until", ["exact_match,strict-match", "exact_match,flexible-extract"]),
    ("mmlu_like", "multiple_choice", ["acc"]),
    ("truthfulqa_gen_like", "generate_until", ["rouge1_max", "bleu_acc"]),
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _abilities(k: int) -> np.ndarray:
    # two groups of near-ties (0.00 and 0.04 apart) and clear gaps elsewhere
    return np.array([0.0, 0.04, 0.3, 0.3, 0.5, 0.7, 0.74, 1.0, 1.2, 1.5][:k]) if k <= 10 else np.linspace(0, 1.5, k)


def write_logs(root: Path, k: int, tasks: int, n: int, seed: int = 0) -> dict:
    """lm-eval `--log_samples` output of `k` models on `tasks` tasks of `n` documents; returns the true accuracies."""
    rng = np.random.default_rng(seed)
    abilities = _abilities(k)
    truth = {}
    question = "Which of the following best explains the observation described in the passage below? " * 3
    for t, (task, kind, metrics) in enumerate(TASKS[:tasks]):
        difficulty = rng.normal(0.0, 1.5, n)
        noise = rng.random((k, n))
        probability = 1.0 / (1.0 + np.exp(-(abilities[:, None] + 0.4 - difficulty[None, :])))
        correct = noise < probability
        second = noise < 1.0 / (1.0 + np.exp(-(abilities[:, None] + 0.2 - difficulty[None, :])))
        truth[task] = probability.mean(axis=1)
        rouge = np.clip(rng.beta(2 + 3 * probability, 2.5, size=(k, n)), 0, 1)
        rouge[k - 1, rng.random(n) < 0.06] = 0.0  # the best model fails outright on 6% of the documents
        columns = {
            "acc": correct,
            "acc_norm": second,
            "exact_match,strict-match": correct,
            "exact_match,flexible-extract": second,
            "rouge1_max": rouge,
            "bleu_acc": correct,
        }
        for m in range(k):
            folder = root / f"org__model-{m}"
            folder.mkdir(parents=True, exist_ok=True)
            date = DATE.format(t + 1)
            lines = []
            for i in range(n):
                doc = {
                    "id": f"{task}-{i}",
                    "question": f"{question}#{i}",
                    "choices": ["alpha", "beta", "gamma", "delta"],
                }
                if kind == "multiple_choice":
                    arguments = {
                        f"gen_args_{c}": {"arg_0": doc["question"], "arg_1": f" {x}"}
                        for c, x in enumerate(doc["choices"])
                    }
                    resps = [[[f"{-rng.random() * 20:.6f}", "False"]] for _ in doc["choices"]]
                    filtered = [r[0] for r in resps]
                else:
                    arguments = {
                        "gen_args_0": {"arg_0": doc["question"], "arg_1": {"until": ["\n\n"], "max_gen_toks": 64}}
                    }
                    resps = [["The answer is beta because the passage says so."]]
                    filtered = resps[0]
                base = {
                    "doc_id": i,
                    "doc": doc,
                    "target": "1",
                    "arguments": arguments,
                    "resps": resps,
                    "filtered_resps": filtered,
                    "doc_hash": _sha(json.dumps(doc)),
                    "prompt_hash": _sha(doc["question"]),
                    "target_hash": _sha("1"),
                }
                filters = sorted({metric.partition(",")[2] or "none" for metric in metrics})
                for label in filters:
                    chosen = [metric for metric in metrics if (metric.partition(",")[2] or "none") == label]
                    record = dict(base, filter=label, metrics=[metric.split(",")[0] for metric in chosen])
                    for metric in chosen:
                        record[metric.split(",")[0]] = float(columns[metric][m, i])
                    lines.append(json.dumps(record))
            (folder / f"samples_{task}_{date}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            results_file = folder / f"results_{date}.json"
            results = {
                "results": {task: {}},
                "higher_is_better": {task: {metric.split(",")[0]: True for metric in metrics}},
                "config": {"model": "hf", "model_args": {"pretrained": f"org/model-{m}"}},
                "model_name": f"org/model-{m}",
                "model_name_sanitized": f"org__model-{m}",
            }
            for metric in metrics:
                name, _, label = metric.partition(",")
                p = float(columns[metric][m].mean())
                results["results"][task][f"{name},{label or 'none'}"] = p
                if name != "rouge1_max":
                    results["results"][task][f"{name}_stderr,{label or 'none'}"] = float(
                        np.sqrt(p * (1 - p) / (n - 1))
                    )
            results_file.write_text(json.dumps(results), encoding="utf-8")
    return truth


def unpaired_z_pvalue(acc1: float, se1: float, acc2: float, se2: float) -> float:
    """The two-sided p-value of the unpaired z-test lm-eval's scripts/model_comparator.py computes."""
    from scipy.stats import norm

    z = (acc1 - acc2) / np.sqrt(se1**2 + se2**2)
    return float(2 * norm.sf(abs(z)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    from hf_ext.risk import compare_harness_logs, read_harness_logs, write_harness_report

    k, tasks, n, rounds = args.models, args.tasks, args.samples, args.bootstrap
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="risk-harness-bench-"))
    try:
        start = time.perf_counter()
        write_logs(work / "lm-eval-out", k, tasks, n)
        written = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (work / "lm-eval-out").rglob("*")) / 2**20
        print(f"wrote {k} x {tasks} x {n} lm-eval records ({size:.0f} MiB) in {written:.1f} s")

        start = time.perf_counter()
        logs = read_harness_logs(work / "lm-eval-out")
        read_seconds = time.perf_counter() - start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            comparison = compare_harness_logs(logs, orders=(2,), n_bootstrap=rounds, seed=0)
            rank_seconds = time.perf_counter() - start
            start = time.perf_counter()
            repeat = compare_harness_logs(
                read_harness_logs(work / "lm-eval-out"), orders=(2,), n_bootstrap=rounds, seed=0
            )
            repeat_seconds = time.perf_counter() - start
        reproducible = [c.to_dict() for c in repeat.claims] == [c.to_dict() for c in comparison.claims]
        start = time.perf_counter()
        write_harness_report(comparison, work / "report")
        report_seconds = time.perf_counter() - start
        print(
            f"read {read_seconds:.2f} s, ranked {rank_seconds:.2f} s (again {repeat_seconds:.2f} s), report {report_seconds:.1f} s"
        )

        views = comparison.views
        dense = [v.name for v in views if len({float(x) for x in next(iter(v.scores.values()))}) > v.n_items / 16]
        pairs = k * (k - 1) // 2

        # deepsig: one bootstrap round of one pair at this n, on a few-valued view and on a many-valued one, times the
        # workload's rounds and pairs of each kind of view
        deepsig = None
        try:
            from deepsig.aso import get_bootstrapped_violation_ratios, get_quantile_function
        except ImportError:
            print("deepsig is not installed (pip install deepsig): skipping that peer")
        else:
            per_round = {}
            for kind, candidates in (
                ("few", [v for v in views if v.name not in dense]),
                ("many", [v for v in views if v.name in dense]),
            ):
                if not candidates:
                    continue
                a, b = (candidates[0].scores[m] for m in comparison.models[:2])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # deepsig warns of a zero denominator on tied samples
                    start = time.perf_counter()
                    get_bootstrapped_violation_ratios(
                        a, b, get_quantile_function(a), get_quantile_function(b), 1, 0.005, 1, False, 0, None
                    )
                per_round[kind] = time.perf_counter() - start
            workload = sum(per_round["many" if v.name in dense else "few"] * rounds * pairs for v in views)
            deepsig = (per_round, workload)
            print(f"deepsig: {per_round} s per round of one pair; the workload: {workload / 3600:.1f} h (first order)")

        # lm-eval's unpaired z-test vs the paired McNemar test, on the 0/1 metrics with known true differences
        abilities = _abilities(k)
        decisions = {"true": 0, "tied": 0, "z": 0, "mcnemar": 0, "z_false": 0, "mcnemar_false": 0}
        mcnemar = {
            (c.task, c.metric, frozenset((c.winner, c.loser))): c for c in comparison.claims if c.test == "mcnemar"
        }
        for t, (task, _, metrics) in enumerate(TASKS[:tasks]):
            aggregated = {
                model: json.loads(
                    (
                        work / "lm-eval-out" / model.replace("/", "__") / f"results_{DATE.format(t + 1)}.json"
                    ).read_text()
                )
                for model in comparison.models
            }
            for metric in metrics:
                name, _, label = metric.partition(",")
                if name == "rouge1_max":
                    continue
                key, se_key = f"{name},{label or 'none'}", f"{name}_stderr,{label or 'none'}"
                for i, a in enumerate(comparison.models):
                    for b in comparison.models[i + 1 :]:
                        ra, rb = aggregated[a]["results"][task], aggregated[b]["results"][task]
                        z = unpaired_z_pvalue(ra[key], ra[se_key], rb[key], rb[se_key]) < 0.05
                        paired = mcnemar[(task, metric, frozenset((a, b)))].significant
                        different = abilities[int(a.rsplit("-", 1)[1])] != abilities[int(b.rsplit("-", 1)[1])]
                        decisions["true" if different else "tied"] += 1
                        decisions["z" if different else "z_false"] += z
                        decisions["mcnemar" if different else "mcnemar_false"] += paired

        total = read_seconds + rank_seconds
        significant = comparison.significant_claims()
        lines = [
            "# Risk-aware ranking from lm-eval logs: reading and ranking speed, paired vs unpaired tests",
            "",
            f"`python benchmarks/risk_harness.py` — {k} models x {tasks} tasks x {n} documents of lm-eval `--log_samples` "
            f"logs ({size:.0f} MiB, lm-eval's record format), second order, {rounds} paired bootstrap rounds, seed 0.",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python "
            f"{platform.python_version()}, numpy {np.__version__}; single process, measured on {time.strftime('%Y-%m-%d')}; "
            f"load average before the run {load[0]:.1f} (1 min), the machine may be shared.",
            "",
            "| step | wall time (s) |",
            "|---|---:|",
            f"| read the logs (`read_harness_logs`) | {read_seconds:.2f} |",
            f"| rank: {len(views)} views x {pairs} pairs, relative test (order 2, {rounds} rounds) + McNemar + BH over "
            f"{comparison.settings['family_size']} claims (`compare_harness_logs`) | {rank_seconds:.2f} |",
            f"| **read + rank** | **{total:.2f}** |",
            f"| the report (Markdown, HTML, {3 * len(views)} plots) | {report_seconds:.1f} |",
            "",
            f"- Views: {', '.join(v.name for v in views)}. Views with many distinct values (resampled as whole samples, "
            f"the costly case): {', '.join(dense) or 'none'}; the others are 0/1 or few-valued and are resampled as "
            "counts of their distinct values (same draws, same ratios).",
            f"- Same seed, same result: {'yes' if reproducible else 'NO'} (two runs, identical claims).",
            f"- Significant claims: {len(significant)} of {len(comparison.claims)}; aggregated second-order ranking: "
            f"{' > '.join(comparison.rankings[2])}.",
        ]
        if deepsig:
            measured = ", ".join(f"{seconds:.2f} s on a {kind}-valued view" for kind, seconds in deepsig[0].items())
            lines.append(
                f"- deepsig `aso` (first order only): one bootstrap round of one pair at n = {n} takes {measured} "
                f"(measured in this run); the same workload ({len(views)} views x {pairs} pairs x {rounds} rounds) "
                f"would take {deepsig[1] / 3600:.1f} h, **{deepsig[1] / rank_seconds:,.0f}x** the ranking time here "
                "(second order here, with McNemar and the correction)."
            )
        lines += [
            f"- Paired vs unpaired, on the {decisions['true']} (model pair, 0/1 metric) cases whose models truly differ "
            f"(latent abilities 0.04 to 1.5 apart): lm-eval's unpaired z-test (`scripts/model_comparator.py`, alpha = "
            f"0.05, no correction) detects {decisions['z']}; McNemar's paired test, Benjamini-Hochberg-corrected over "
            f"all {comparison.settings['family_size']} claims, detects {decisions['mcnemar']}. On the "
            f"{decisions['tied']} cases of truly equal models: {decisions['z_false']} false claim(s) for the z-test, "
            f"{decisions['mcnemar_false']} for McNemar.",
        ]
        Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"Wrote {args.output}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
