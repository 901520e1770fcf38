import csv
import json

import numpy as np
import pytest

from hf_ext.cli import main
from hf_ext.risk import portfolio, relative_dominance


PNG = b"\x89PNG\r\n\x1a\n"


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    out = []
    for model, shift in (("small", 0.0), ("large", 2.0), ("medium", 1.0)):
        for prompt in range(80):
            out.append(
                {"model": model, "prompt": f"p{prompt:03d}", "reward": shift + rng.normal(), "tox": rng.random()}
            )
    return out


def test_single_metric_csv_report(tmp_path, rows, capsys):
    write_csv(tmp_path / "scores.csv", rows)
    status = main(
        [
            "risk",
            str(tmp_path / "scores.csv"),
            "--metrics",
            "reward",
            "--n-bootstrap",
            "60",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert status == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| rank | model |" in report and "## Relative second-order stochastic dominance" in report
    for png in ("quantiles.png", "tvar.png", "epsilon_order1.png", "epsilon_order2.png"):
        assert (tmp_path / "out" / png).read_bytes().startswith(PNG)
        assert f"]({png})" in report
    samples = {m: [r["reward"] for r in rows if r["model"] == m] for m in ("small", "large", "medium")}
    expected = relative_dominance(samples, order=2, n_bootstrap=60, seed=0)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["order2"]["ranking"] == expected.ranking == ["large", "medium", "small"]
    assert results["order2"]["epsilon"][0][1] == pytest.approx(expected.epsilon[0, 1])
    assert "order 2: large > medium > small" in capsys.readouterr().out


def test_portfolio_jsonl_paired_on_prompt_column(tmp_path, rows):
    rows = rows[::-1]  # the pairing must come from the prompt column, not the row order
    (tmp_path / "scores.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["risk", str(tmp_path / "scores.jsonl"), "--metrics", "reward:max,tox:min", "--sample-column", "prompt"]
    args += ["--orders", "1", "--n-bootstrap", "40", "--output-dir", str(tmp_path / "out")]
    assert main(args) == 0
    grouped = {}
    for r in sorted(rows, key=lambda r: r["prompt"]):
        grouped.setdefault(r["model"], {"reward": [], "tox": []})
        grouped[r["model"]]["reward"].append(r["reward"])
        grouped[r["model"]]["tox"].append(r["tox"])
    expected = relative_dominance(
        portfolio(grouped, {"reward": "max", "tox": "min"}), n_bootstrap=40, paired=True, seed=0
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["order1"]["ranking"] == expected.ranking and results["order1"]["paired"] is True
    np.testing.assert_allclose(results["order1"]["std_error"][0][1:], expected.std_error[0, 1:])


@pytest.mark.parametrize(
    "extra, edit, message",
    [
        (["--metrics", "missing"], None, "missing column(s) ['missing']"),
        (["--metrics", "reward:up"], None, "direction of 'reward' must be 'max' or 'min'"),
        (["--metrics", "reward", "--orders", "3"], None, "--orders: expected"),
        (
            ["--metrics", "reward"],
            lambda rows: rows[0].update(reward="n/a"),
            "row 1, column 'reward': expected a number",
        ),
        (
            ["--metrics", "reward"],
            lambda rows: rows[0].update(reward="nan"),
            "scores.csv: row 1 (model 'small'), column 'reward': nan is not a finite number",
        ),
        (
            ["--metrics", "reward", "--sample-column", "prompt"],
            lambda rows: rows.pop(),
            "every model needs the same samples",
        ),
        (["--metrics", "reward"], lambda rows: [r.update(model="one") for r in rows], "at least 2 models"),
    ],
)
def test_bad_input_exits_with_a_message(tmp_path, rows, capsys, extra, edit, message):
    if edit:
        edit(rows)
    write_csv(tmp_path / "scores.csv", rows)
    status = main(
        ["risk", str(tmp_path / "scores.csv"), *extra, "--n-bootstrap", "10", "--output-dir", str(tmp_path / "o")]
    )
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("sample_column", [None, "prompt"])
def test_a_nan_score_in_a_table_names_the_file_row_model_and_sample(tmp_path, rows, capsys, sample_column):
    """Issue 29: a NaN was named by its index in the model's sample ("samples['large']: ... at index 3"), not by
    where it is in the file."""
    rows[83]["reward"] = float("nan")  # the 4th row of 'large'
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    extra = ["--sample-column", sample_column] if sample_column else []
    argv = ["risk", str(tmp_path / "scores.jsonl"), "--metrics", "reward", *extra, "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    sample = ", sample 'p003'" if sample_column else ""
    assert (
        f"hf-ext risk: error: {tmp_path / 'scores.jsonl'}: row 84 (model 'large'{sample}), column 'reward': nan is "
        "not a finite number; a dominance test needs a number for every sample. Fix or drop that row." in err
    )
    assert not (tmp_path / "o").exists()


def test_missing_file(tmp_path, capsys):
    assert main(["risk", str(tmp_path / "nope.csv"), "--metrics", "x"]) == 2
    assert "no such file" in capsys.readouterr().err


# harness logs ------------------------------------------------------------------------------------------------------


def _lm_eval_logs(root, n=120):
    from harness_logs import write_lm_eval_run

    rng = np.random.default_rng(3)
    difficulty = rng.normal(size=n)
    for name, ability in (("base", -0.5), ("tuned", 0.7)):
        acc = (rng.random(n) < 1 / (1 + np.exp(difficulty - ability))).astype(float)
        write_lm_eval_run(root / name, f"/models/{name}", "facts", {"acc": acc.tolist()})
    return root


def test_harness_logs_report(tmp_path, capsys):
    logs = _lm_eval_logs(tmp_path / "lm-eval-out")
    out = tmp_path / "report"
    args = ["risk", str(logs), "--n-bootstrap", "100", "--orders", "1", "--output-dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "order 1: tuned > base" in printed and "tuned is right more often than base on facts / acc" in printed
    assert f"Report: {out / 'report.md'}" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["rankings"] == {"order1": ["tuned", "base"]} and results["settings"]["correction"] == "bh"
    assert (out / "report.html").is_file() and (out / "facts__acc_quantiles.png").read_bytes().startswith(PNG)
    # named inputs, Holm, no HTML: the folder is replaced as a whole
    args = ["risk", f"A={logs / 'base'}", f"B={logs / 'tuned'}", "--correction", "holm", "--no-html"]
    assert main(args + ["--n-bootstrap", "50", "--orders", "2", "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == ["A", "B"] and results["settings"]["correction"] == "holm"
    assert not (out / "report.html").exists() and not (out / "facts__acc_epsilon_order1.png").exists()


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda root: (root / "empty").mkdir(), [], "not a harness log: found no lm-eval samples_"),
        (_lm_eval_logs, ["--directions", "acc=up"], "--directions: expected metric=max or metric=min"),
        (_lm_eval_logs, ["--tasks", "mmlu"], "tasks: ['mmlu'] not in the logs"),
        (_lm_eval_logs, ["--metrics", "f1"], "metrics: ['f1'] not in the logs"),
    ],
)
def test_harness_bad_input_exits_with_a_message(tmp_path, capsys, make, extra, message):
    make(tmp_path)
    source = tmp_path / "empty" if (tmp_path / "empty").exists() else tmp_path
    status = main(["risk", str(source), *extra, "--n-bootstrap", "10", "--output-dir", str(tmp_path / "o")])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_harness_names_all_or_none(tmp_path, capsys):
    logs = _lm_eval_logs(tmp_path)
    assert main(["risk", f"A={logs / 'base'}", str(logs / "tuned"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "name every input (NAME=PATH) or none of them" in capsys.readouterr().err


def test_table_report_replaces_the_earlier_one(tmp_path, rows):
    write_csv(tmp_path / "scores.csv", rows)
    out = tmp_path / "out"
    base = [
        "risk",
        str(tmp_path / "scores.csv"),
        "--metrics",
        "reward",
        "--n-bootstrap",
        "20",
        "--output-dir",
        str(out),
    ]
    assert main(base) == 0 and (out / "epsilon_order2.png").exists()
    assert main(base + ["--orders", "1"]) == 0
    assert not (out / "epsilon_order2.png").exists() and (out / "epsilon_order1.png").exists()


@pytest.mark.parametrize("harness", ["lm-eval", "inspect"])
def test_a_nan_score_in_harness_logs_names_the_file_model_task_metric_and_items(harness, tmp_path, capsys):
    """Issue 29: a NaN in a harness log was "samples['m']: 1 non-finite value(s) (NaN or inf), the first at index
    17", naming no task, metric, file or doc_id (and an index in an order of its own)."""
    from harness_logs import inspect_log, write_inspect_eval, write_lm_eval_run

    good = [float(i % 2) for i in range(20)]
    bad = list(good)
    bad[7] = bad[12] = float("nan")
    if harness == "lm-eval":
        write_lm_eval_run(tmp_path / "logs", "org/a", "facts", {"acc": good})
        source = write_lm_eval_run(tmp_path / "logs", "org/b", "facts", {"acc": bad})
        (source,) = source.glob("samples_facts_*.jsonl")
        metric, item = "acc", "doc_id"
    else:
        for model, values in (("org/a", good), ("org/b", bad)):
            samples = [(i, 1, {"accuracy": value}) for i, value in enumerate(values)]
            source = write_inspect_eval(tmp_path / "logs" / f"{model[-1]}.eval", inspect_log("facts", model, samples))
        metric, item = "accuracy", "sample id"
    argv = ["risk", str(tmp_path / "logs"), "--directions", f"{metric}=max", "--n-bootstrap", "10",
            "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert line == (
        f"hf-ext risk: error: {source}: model 'org/b', task 'facts', metric '{metric}': 2 of 20 value(s) are not "
        f"finite (nan), at {item} 7, 12; a dominance test needs a number for every sample. Fix or rerun those "
        "samples, or leave the metric out (--metrics / metrics=...)."
    ), line
    assert not (tmp_path / "out").exists()
