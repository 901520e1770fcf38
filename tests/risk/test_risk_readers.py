import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from harness_logs import (
    inspect_log,
    write_inspect_eval,
    write_inspect_json,
    write_lighteval_run,
    write_lm_eval_run,
)

from hf_ext.risk import HarnessLogError, HarnessLogs, read_harness_logs
from hf_ext.risk.readers import detect_harness, read_lm_eval
from hf_ext.risk.readers.inspect_logs import score_to_float


FIXTURES = Path(__file__).resolve().parent / "fixtures"


# lm-eval ----------------------------------------------------------------------------------------------------------


def test_lm_eval_values_are_matched_by_doc_id_whatever_the_order(tmp_path):
    a_acc, b_acc = [1, 0, 1, 1, 0], [0, 0, 1, 0, 1]
    write_lm_eval_run(tmp_path, "org/a", "arc", {"acc": a_acc, "brier": [0.1, 0.9, 0.2, 0.3, 0.8]},
                      higher_is_better={"acc": True, "brier": False})  # fmt: skip
    # model b logged its documents in another order: pairing must follow doc_id, not line order
    order = [3, 0, 4, 1, 2]
    write_lm_eval_run(tmp_path, "org/b", "arc", {"acc": [b_acc[i] for i in order], "brier": [0.5] * 5},
                      higher_is_better={"acc": True, "brier": False}, doc_ids=order)  # fmt: skip
    logs = read_harness_logs(tmp_path)
    assert logs.models == ["org/a", "org/b"] and logs.tasks == ["arc"] and logs.metrics("arc") == ["acc", "brier"]
    paired = logs.paired("arc", "acc")
    assert paired.ids == ["0", "1", "2", "3", "4"] and paired.direction == "max" and paired.clusters is None
    np.testing.assert_array_equal(paired.values["org/a"], a_acc)
    np.testing.assert_array_equal(paired.values["org/b"], b_acc)
    assert logs.direction("arc", "brier") == "min"  # from lm-eval's higher_is_better


def test_lm_eval_filters_corpus_metrics_and_the_line_by_line_reader(tmp_path, monkeypatch):
    import hf_ext.risk.readers.lm_eval_logs as lm_eval_logs

    write_lm_eval_run(tmp_path, "a", "gsm", {"exact_match": [1, 0, 1], "bleu": [[1, 2], [3, 4], [5, 6]]},
                      filters=("strict-match", "flexible-extract"))  # fmt: skip
    records, skipped = read_lm_eval(tmp_path)
    assert sorted(r.metric for r in records) == ["exact_match,flexible-extract", "exact_match,strict-match"]
    assert skipped and "bleu" in skipped[0] and "corpus-level" in skipped[0]
    # the same file read without pyarrow's reader (the path taken for anything unusual) gives the same records
    monkeypatch.setattr(lm_eval_logs, "_parse_samples_arrow", lambda file: None)
    slow, slow_skipped = read_lm_eval(tmp_path)
    assert [(r.metric, r.ids, r.values.tolist(), r.item_hashes) for r in slow] == [
        (r.metric, r.ids, r.values.tolist(), r.item_hashes) for r in records
    ]
    assert slow_skipped == skipped


def test_lm_eval_booleans_take_the_line_by_line_reader(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [True, False, True]})
    (record,), _ = read_lm_eval(tmp_path)
    assert record.values.tolist() == [1.0, 0.0, 1.0]


def test_missing_documents_are_named(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0, 1, 1]})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 1]}, doc_ids=[0, 2])
    logs = read_harness_logs(tmp_path)
    with pytest.raises(HarnessLogError, match=r"model 'b' lacks 1, 3; 2 shared"):
        logs.paired("t", "acc")
    dropped = logs.paired("t", "acc", missing="drop")
    assert dropped.ids == ["0", "2"] and dropped.values["a"].tolist() == [1.0, 1.0]


def test_different_documents_under_the_same_id_are_refused(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0]})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 0]}, prompts=["Question 0?", "Another question?"])
    with pytest.raises(HarnessLogError, match=r"different content for the same sample id\(s\) 1"):
        read_harness_logs(tmp_path).paired("t", "acc")


def test_several_runs_need_a_decision(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0, 1]}, date="2026-01-01T10-00-00.000001")
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [0, 0, 1]}, date="2026-01-02T10-00-00.000001")
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 1, 1]}, date="2026-01-01T10-00-00.000001")
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 0, 1]}, date="2026-01-02T10-00-00.000001")
    with pytest.raises(HarnessLogError, match="model 'a' has 2 runs of task 't'.*runs='latest'"):
        read_harness_logs(tmp_path)
    latest = read_harness_logs(tmp_path, runs="latest").paired("t", "acc")
    assert latest.values["a"].tolist() == [0, 0, 1] and latest.repeats == 1
    repeats = read_harness_logs(tmp_path, runs="repeats").paired("t", "acc")
    # item by item, the runs in date order; each item is a cluster
    assert repeats.repeats == 2 and repeats.ids == ["0", "0", "1", "1", "2", "2"]
    assert repeats.values["a"].tolist() == [1, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(repeats.clusters, [0, 0, 1, 1, 2, 2])


def test_models_that_differ_only_in_their_arguments_get_distinct_names(tmp_path):
    write_lm_eval_run(tmp_path / "x", "/ckpt/smol", "t", {"acc": [1, 0]})
    write_lm_eval_run(tmp_path / "y", "/ckpt/smol", "t", {"acc": [1, 1]}, model_args={"load_in_4bit": True})
    logs = read_harness_logs([tmp_path / "x", tmp_path / "y"])
    assert logs.models == ["smol", "smol (load_in_4bit=True)"]
    named = read_harness_logs({"fp32": tmp_path / "x", "nf4": tmp_path / "y"})
    assert named.models == ["fp32", "nf4"]


def test_a_named_source_must_hold_one_model(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1]})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1]})
    with pytest.raises(HarnessLogError, match="named 'both', but it holds the logs of 2 models"):
        read_harness_logs({"both": tmp_path})


def test_directions_selection_and_unknown_names(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0], "loss": [0.2, 0.1]}, higher_is_better={"acc": True})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 1], "loss": [0.3, 0.4]}, higher_is_better={"acc": True})
    logs = read_harness_logs(tmp_path)
    with pytest.raises(
        HarnessLogError, match=r"metric 'loss': its direction is unknown.*directions=\{'loss': 'max'\}"
    ):
        logs.paired("t", "loss")
    assert read_harness_logs(tmp_path, directions={"t/loss": "min"}).direction("t", "loss") == "min"
    assert read_harness_logs(tmp_path, directions={"acc": "min"}).direction("t", "acc") == "min"  # an override
    assert read_harness_logs(tmp_path, metrics=["acc"]).metrics("t") == ["acc"]
    with pytest.raises(HarnessLogError, match="matches no metric of the logs"):
        read_harness_logs(tmp_path, directions={"accuracy": "max"})
    with pytest.raises(HarnessLogError, match="expected 'max' \\(larger is better\\) or 'min'"):
        read_harness_logs(tmp_path, directions={"acc": "up"})
    with pytest.raises(HarnessLogError, match=r"tasks: \['mmlu'\] not in the logs; the tasks are \['t'\]"):
        read_harness_logs(tmp_path, tasks=["mmlu"])
    for option in ("tasks", "metrics"):
        with pytest.raises(TypeError, match=rf"{option} must be a list of names, got one string \('t'\); wrap it"):
            read_harness_logs(tmp_path, **{option: "t"})


def test_a_folder_that_is_not_a_harness_log(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(HarnessLogError, match="not a harness log: found no lm-eval samples_"):
        read_harness_logs(tmp_path)
    with pytest.raises(HarnessLogError, match="no such file or folder"):
        read_harness_logs(tmp_path / "missing")
    with pytest.raises(HarnessLogError, match="not an lm-eval per-sample log"):
        read_harness_logs(tmp_path / "notes.txt", harness="lm-eval")
    bad = tmp_path / "run" / "samples_t_2026-01-01T10-00-00.000001.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"doc_id": 0, "metrics": ["acc"], "acc": 1}\nnot json\n')
    with pytest.raises(
        HarnessLogError, match=r"samples_t_2026-01-01T10-00-00.000001.jsonl:2: not an lm-eval per-sample"
    ):
        read_harness_logs(bad)


def test_one_model_only(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0]})
    with pytest.raises(HarnessLogError, match=r"only 1 model\(s\) \(a\) logged it"):
        read_harness_logs(tmp_path).paired("t", "acc")


# Inspect --------------------------------------------------------------------------------------------------------


def test_inspect_scores_epochs_and_formats(tmp_path):
    samples_a = [(sid, epoch, {"match": v, "judge": {"helpful": h, "harmful": 1 - h}})
                 for (sid, epoch, v, h) in [(1, 1, "C", 0.9), (1, 2, "I", 0.7), (2, 1, "P", 0.2), (2, 2, "C", 0.4)]]  # fmt: skip
    samples_b = [(sid, epoch, {"match": v, "judge": {"helpful": 0.5, "harmful": 0.5}})
                 for (sid, epoch, v) in [(2, 2, "I"), (1, 1, "N"), (2, 1, "C"), (1, 2, "C")]]  # fmt: skip
    write_inspect_eval(tmp_path / "a.eval", inspect_log("qa", "hf/a", samples_a))
    write_inspect_json(tmp_path / "b.json", inspect_log("qa", "hf/b", samples_b))
    (tmp_path / "logs.json").write_text(json.dumps({"a.eval": {}}))  # Inspect's listing file is not a log
    assert detect_harness(tmp_path) == "inspect"
    logs = read_harness_logs(tmp_path, directions={"judge/harmful": "min", "judge/helpful": "max"})
    assert logs.models == ["hf/a", "hf/b"] and logs.metrics("qa") == ["match", "judge/helpful", "judge/harmful"]
    paired = logs.paired("qa", "match")
    # letters as Inspect reads them (C 1, I 0, P 0.5, N 0); epochs of a sample are a cluster
    assert paired.direction == "max" and paired.repeats == 2 and paired.ids == ["1", "1", "2", "2"]
    assert paired.values["hf/a"].tolist() == [1.0, 0.0, 0.5, 1.0]
    assert paired.values["hf/b"].tolist() == [0.0, 1.0, 1.0, 0.0]
    np.testing.assert_array_equal(paired.clusters, [0, 0, 1, 1])
    assert logs.paired("qa", "judge/harmful").values["hf/a"].tolist() == pytest.approx([0.1, 0.3, 0.8, 0.6])


def test_inspect_numeric_scores_of_an_unknown_scorer_need_a_direction(tmp_path):
    for model in ("a", "b"):
        write_inspect_json(
            tmp_path / f"{model}.json",
            inspect_log("qa", model, [(1, 1, {"toxicity": 0.3}), (2, 1, {"toxicity": 0.1})]),
        )
    logs = read_harness_logs(tmp_path)
    with pytest.raises(HarnessLogError, match="'toxicity': its direction is unknown"):
        logs.paired("qa", "toxicity")


def test_an_unfinished_inspect_run_is_refused(tmp_path):
    write_inspect_eval(tmp_path / "a.eval", inspect_log("qa", "a", [(1, 1, {"match": "C"})], status="error"))
    with pytest.raises(HarnessLogError, match="did not finish \\(status 'error'\\)"):
        read_harness_logs(tmp_path)


def test_score_values():
    assert [score_to_float(v) for v in ("C", "I", "P", "N", True, 3, "0.25", "yes", "No")] == [
        1,
        0,
        0.5,
        0,
        1,
        3,
        0.25,
        1,
        0,
    ]
    assert score_to_float("maybe") is None and score_to_float([1]) is None


def test_real_inspect_logs(monkeypatch):
    # written by Inspect itself (make_harness_fixtures.py): Zstandard-compressed members; the mean of every scorer's
    # values equals the accuracy Inspect computed in its header
    pytest.importorskip("zstandard")
    logs = read_harness_logs(FIXTURES / "inspect")
    assert logs.models == ["hf/tiny-gpt2", "hf/tiny-llama"] and logs.metrics("facts_qa") == ["includes", "match"]
    for file, model in (("tiny-gpt2.eval", "hf/tiny-gpt2"), ("tiny-llama.eval", "hf/tiny-llama")):
        header = _inspect_header(FIXTURES / "inspect" / file)
        for score in header["results"]["scores"]:
            paired = logs.paired("facts_qa", score["name"])
            assert paired.repeats == header["eval"]["config"]["epochs"] == 2
            assert paired.values[model].mean() == pytest.approx(score["metrics"]["accuracy"]["value"])


def test_zstandard_missing_gives_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_zstandard(name, *args, **kwargs):
        if name == "zstandard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zstandard)
    with pytest.raises(HarnessLogError, match="compressed with Zstandard.*pip install 'hf-ext\\[harness\\]'"):
        read_harness_logs(FIXTURES / "inspect")


def _inspect_header(path):
    zstandard = pytest.importorskip("zstandard")
    from hf_ext.risk.readers.inspect_logs import _read_member

    with zipfile.ZipFile(path) as archive:
        raw = _read_member(archive, path, "header.json")
    del zstandard
    return json.loads(raw)


# lighteval -------------------------------------------------------------------------------------------------------


def test_lighteval_details_and_directions(tmp_path):
    write_lighteval_run(tmp_path, "org/a", "arc|0", {"acc": [1, 0, 1], "loss": [0.1, 0.5, 0.2]},
                        higher_is_better={"acc": True, "loss": False})  # fmt: skip
    write_lighteval_run(tmp_path, "org/b", "arc|0", {"acc": [0, 0, 1], "loss": [0.3, 0.6, 0.1]},
                        higher_is_better={"acc": True, "loss": False}, date="2026-01-02T10-00-00.000001")  # fmt: skip
    assert detect_harness(tmp_path) == "lighteval"
    logs = read_harness_logs(tmp_path)
    assert logs.models == ["org/a", "org/b"] and logs.tasks == ["arc|0"]
    assert logs.direction("arc|0", "loss") == "min" and logs.direction("arc|0", "acc") == "max"
    paired = logs.paired("arc|0", "acc")
    assert paired.values == {"org/a": pytest.approx([1, 0, 1]), "org/b": pytest.approx([0, 0, 1])}


def test_real_lighteval_details():
    # written by lighteval itself (make_harness_fixtures.py): the mean of the values read equals lighteval's result
    logs = read_harness_logs(FIXTURES / "lighteval")
    assert logs.tasks == ["facts_mc|0"] and logs.metrics("facts_mc|0") == ["acc"]
    paired = logs.paired("facts_mc|0", "acc")
    for results in (FIXTURES / "lighteval" / "results").rglob("results_*.json"):
        content = json.loads(results.read_text())
        model = Path(content["config_general"]["model_name"]).name
        assert paired.values[model].mean() == pytest.approx(content["results"]["facts_mc|0"]["acc"])
        assert paired.n_items == 6


def test_logs_of_several_harnesses_in_one_folder_are_ambiguous(tmp_path):
    write_lm_eval_run(tmp_path / "lm", "a", "t", {"acc": [1]})
    write_inspect_json(tmp_path / "inspect" / "a.json", inspect_log("t", "a", [(1, 1, {"match": "C"})]))
    with pytest.raises(HarnessLogError, match="holds logs of several harnesses \\(lm-eval, inspect\\)"):
        read_harness_logs(tmp_path)
    assert read_harness_logs(tmp_path, harness="inspect").harnesses == ["inspect"]
    both = read_harness_logs([tmp_path / "lm", tmp_path / "inspect"])
    assert both.harnesses == ["lm-eval", "inspect"]


def test_columns_round_trip(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1, 0, 1]}, date="2026-01-01T10-00-00.000001")
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [0, 0, 1]}, date="2026-01-02T10-00-00.000001")
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 1, 0]}, date="2026-01-01T10-00-00.000001")
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1, 0, 0]}, date="2026-01-02T10-00-00.000001")
    logs = read_harness_logs(tmp_path, runs="repeats")
    again = HarnessLogs.from_columns(**logs.to_columns(), directions=logs.directions())
    original, rebuilt = logs.paired("t", "acc"), again.paired("t", "acc")
    assert rebuilt.ids == original.ids and rebuilt.repeats == original.repeats == 2
    for model in ("a", "b"):
        np.testing.assert_array_equal(rebuilt.values[model], original.values[model])


def test_checkpoints_with_the_same_folder_name_keep_their_paths(tmp_path):
    write_lm_eval_run(tmp_path / "x", "/runs/a/model", "t", {"acc": [1, 0]})
    write_lm_eval_run(tmp_path / "y", "/runs/b/model", "t", {"acc": [1, 1]})
    assert read_harness_logs(tmp_path).models == ["/runs/a/model", "/runs/b/model"]
