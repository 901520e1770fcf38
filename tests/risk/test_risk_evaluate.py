import numpy as np
import pytest

from hf_ext.risk import EVALUATE_MODULE_PATH, relative_dominance


@pytest.fixture(scope="module")
def module():
    import evaluate

    return evaluate.load(EVALUATE_MODULE_PATH)


def test_module_is_an_evaluation_module_loaded_from_a_local_path(module):
    import evaluate

    assert isinstance(module, evaluate.EvaluationModule)
    assert set(module.features) == {"scores", "models"}


def test_add_batch_and_compute_match_the_library(module):
    rng = np.random.default_rng(0)
    samples = {f"m{i}": rng.normal(0.3 * i, 1, 120) for i in range(3)}
    for start in range(0, 120, 40):  # several batches, models interleaved
        for name, values in samples.items():
            module.add_batch(scores=values[start : start + 40].tolist(), models=[name] * 40)
    result = module.compute(order=2, n_bootstrap=80, seed=1, paired=True)
    expected = relative_dominance(samples, order=2, n_bootstrap=80, seed=1, paired=True)
    assert result["ranking"] == expected.ranking
    assert result["models"] == expected.models
    np.testing.assert_allclose(result["epsilon"][0][1:], expected.epsilon[0, 1:])
    assert result["borda"] == {name: int(v) for name, v in zip(expected.models, expected.borda)}


def test_loading_the_script_file_directly_and_bad_input():
    import evaluate

    module = evaluate.load(f"{EVALUATE_MODULE_PATH}/stochastic_dominance.py")
    result = module.compute(scores=[1, 2, 3, 4, 5, 6], models=["a", "a", "a", "b", "b", "b"], n_bootstrap=20)
    assert result["ranking"] == ["b", "a"] and result["relative_epsilon"] == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="at least 2 models"):
        module.compute(scores=[1.0, 2.0], models=["a", "a"], n_bootstrap=20)


@pytest.mark.filterwarnings("ignore::hf_ext.risk.UnderpoweredComparisonWarning")
def test_harness_configuration_gives_the_librarys_comparison(tmp_path):
    import evaluate
    from harness_logs import write_lm_eval_run

    from hf_ext.risk import compare_harness_logs, read_harness_logs

    rng = np.random.default_rng(2)
    for name, p in (("a", 0.4), ("b", 0.7), ("c", 0.72)):
        write_lm_eval_run(tmp_path, name, "qa", {"acc": (rng.random(150) < p).astype(float).tolist()})
        write_lm_eval_run(
            tmp_path, name, "gen", {"toxicity": rng.beta(2, 8, 150).tolist()}, higher_is_better={"toxicity": False}
        )
    logs = read_harness_logs(tmp_path)
    module = evaluate.load(EVALUATE_MODULE_PATH, "harness")
    assert set(module.features) == {"scores", "models", "tasks", "metrics", "sample_ids"}
    columns = logs.to_columns()
    for start in range(0, len(columns["scores"]), 200):  # in batches, as a user would stream them
        module.add_batch(**{key: values[start : start + 200] for key, values in columns.items()})
    result = module.compute(directions=logs.directions(), n_bootstrap=60, orders=[1])
    expected = compare_harness_logs(logs, n_bootstrap=60, orders=(1,))
    assert result["claims"] == [claim.to_dict() for claim in expected.claims]
    assert result["rankings"] == {"order1": expected.rankings[1]} and result["statements"] == expected.statements()


def test_unknown_configuration_is_refused():
    import evaluate

    with pytest.raises(ValueError, match="config_name: expected 'default' or 'harness'"):
        evaluate.load(EVALUATE_MODULE_PATH, "lm-eval")
