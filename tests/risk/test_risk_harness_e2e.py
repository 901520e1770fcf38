"""The whole path on tiny offline models: lm-eval runs a local task (files this repository ships) with
`--log_samples`, hf-ext reads the logs, ranks the models and writes the report."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_ext.cli import main
from hf_ext.risk import compare_harness_logs, read_harness_logs, write_harness_report


TASKS = Path(__file__).resolve().parent / "fixtures" / "lm_eval_tasks"

pytestmark = pytest.mark.harness


@pytest.fixture(scope="module")
def lm_eval_logs(tmp_path_factory, tiny_llama_path, tiny_gpt2_path):
    """lm-eval's output folder after two runs, as `lm_eval --model hf --log_samples --output_path` writes it."""
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    work = tmp_path_factory.mktemp("lm-eval")
    include = work / "tasks"
    include.mkdir()
    for name in ("facts_mc.yaml", "facts_gen.yaml"):
        config = yaml.safe_load((TASKS / name).read_text())
        config["dataset_kwargs"]["data_files"]["test"] = str(TASKS / "facts.jsonl")  # lm-eval reads it from the cwd
        (include / name).write_text(yaml.safe_dump(config))
    manager = TaskManager(include_path=str(include), include_defaults=False)
    out, returned = work / "out", {}
    for path in (tiny_llama_path, tiny_gpt2_path):
        tracker = EvaluationTracker(output_path=str(out))
        results = simple_evaluate(
            model="hf",
            model_args={"pretrained": str(path)},
            tasks=["hfext_facts_mc", "hfext_facts_gen"],
            task_manager=manager,
            log_samples=True,
            evaluation_tracker=tracker,
            device="cpu",
            batch_size=8,
        )
        samples = results.pop("samples")
        # what lm-eval's command line does after the evaluation
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        returned[Path(path).name] = (results, samples)
    return out, returned


def test_logs_read_are_lm_evals_own_per_sample_values(lm_eval_logs):
    out, returned = lm_eval_logs
    logs = read_harness_logs(out)
    assert sorted(logs.models) == sorted(returned) and sorted(logs.tasks) == ["hfext_facts_gen", "hfext_facts_mc"]
    assert logs.metrics("hfext_facts_mc") == ["acc", "acc_norm"] and logs.metrics("hfext_facts_gen") == ["exact_match"]
    for model, (results, samples) in returned.items():
        for task, metric in (
            ("hfext_facts_mc", "acc"),
            ("hfext_facts_mc", "acc_norm"),
            ("hfext_facts_gen", "exact_match"),
        ):
            paired = logs.paired(task, metric)
            expected = {str(s["doc_id"]): float(s[metric]) for s in samples[task]}
            assert dict(zip(paired.ids, paired.values[model].tolist())) == expected
            # and their mean is lm-eval's own aggregate
            assert paired.values[model].mean() == pytest.approx(results["results"][task][f"{metric},none"])
            assert paired.direction == "max" and paired.n_items == 24


def test_ranking_and_report_from_lm_eval_logs(lm_eval_logs, tmp_path, capsys):
    out, _ = lm_eval_logs
    with pytest.warns(Warning):  # 24 items: the warnings say how little they can decide
        comparison = compare_harness_logs(read_harness_logs(out), n_bootstrap=100)
    assert {view.name for view in comparison.views} == {
        "hfext_facts_gen / exact_match",
        "hfext_facts_mc / acc",
        "hfext_facts_mc / acc_norm",
        "hfext_facts_mc / portfolio",
    }
    assert comparison.settings["family_size"] == len(comparison.claims) == 4 * 2 + 3
    report = write_harness_report(comparison, tmp_path / "report")
    assert "## Ranking" in report.read_text() and (tmp_path / "report" / "report.html").exists()
    # the command line reads the same folder into the same results
    assert main(["risk", str(out), "--n-bootstrap", "100", "--output-dir", str(tmp_path / "cli")]) == 0
    results = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert results["claims"] == json.loads(json.dumps([c.to_dict() for c in comparison.claims]))
    assert np.isfinite([c["pvalue"] for c in results["claims"]]).all()
