import numpy as np
import pytest

from hf_ext.risk import aggregate_rankings, empirical_cdf_scores, portfolio


def test_empirical_cdf_over_pooled_samples_with_direction():
    up = empirical_cdf_scores({"a": [1.0, 3.0], "b": [2.0, 2.0]}, "max")
    np.testing.assert_allclose(up["a"], [0.25, 1.0])
    np.testing.assert_allclose(up["b"], [0.75, 0.75])  # ties count as <=
    down = empirical_cdf_scores({"a": [1.0, 3.0], "b": [2.0, 2.0]}, "min")
    np.testing.assert_allclose(down["a"], [1.0, 0.25])


def test_portfolio_by_hand():
    metrics = {
        "a": {"toxicity": [0.1, 0.2], "fluency": [0.9, 0.8]},
        "b": {"toxicity": [0.5, 0.6], "fluency": [0.7, 0.9]},
    }
    scores = portfolio(metrics, {"toxicity": "min", "fluency": "max"})
    # toxicity (smaller is better) -> a: 1, 3/4; b: 1/2, 1/4. fluency -> a: 1, 1/2; b: 1/4, 1.
    np.testing.assert_allclose(scores["a"], [1.0, np.sqrt(0.75 * 0.5)])
    np.testing.assert_allclose(scores["b"], [np.sqrt(0.5 * 0.25), np.sqrt(0.25 * 1.0)])
    weighted = portfolio(metrics, {"toxicity": "min", "fluency": "max"}, weights={"toxicity": 3, "fluency": 1})
    np.testing.assert_allclose(weighted["a"][1], 0.75**0.75 * 0.5**0.25)


def test_all_weight_on_one_metric_is_that_metric_cdf():
    rng = np.random.default_rng(0)
    metrics = {m: {"x": rng.normal(size=20), "y": rng.normal(size=20)} for m in "abc"}
    scores = portfolio(metrics, {"x": "max", "y": "min"}, weights={"x": 0.0, "y": 1.0})
    cdf = empirical_cdf_scores({m: metrics[m]["y"] for m in "abc"}, "min")
    for m in "abc":
        np.testing.assert_allclose(scores[m], cdf[m])


def test_portfolio_orders_samples_consistently_with_every_metric():
    # a sample better on every metric gets a larger portfolio score (monotonicity)
    rng = np.random.default_rng(1)
    tox, flu = rng.random(50), rng.random(50)
    scores = portfolio(
        {"m": {"tox": tox, "flu": flu}, "n": {"tox": tox + 0.01, "flu": flu - 0.01}}, {"tox": "min", "flu": "max"}
    )
    assert np.all(scores["m"] > scores["n"])


@pytest.mark.parametrize(
    "metrics, directions, weights, message",
    [
        ({"a": {"x": [1.0]}}, {"x": "up"}, None, r"directions\['x'\]: expected 'max' .* or 'min'"),
        ({"a": {"x": [1.0]}}, {}, None, r"no direction .* for the metric\(s\) \['x'\]"),
        (
            {"a": {"x": [1.0]}, "b": {"y": [1.0]}},
            {"x": "max", "y": "max"},
            None,
            r"metrics\['b'\]: expected the metrics",
        ),
        ({"a": {"x": [1.0, 2.0], "y": [1.0]}}, {"x": "max", "y": "max"}, None, "one value per sample"),
        ({"a": {"x": [1.0, np.nan]}}, {"x": "max"}, None, "non-finite"),
        ({"a": {"x": [1.0]}}, {"x": "max"}, {"x": -1.0}, "weights: expected non-negative"),
        ({}, {}, None, "metrics: expected a non-empty mapping"),
        (
            {"a": {"x": [1.0]}},
            {"x": "max", "fluncy": "min"},
            None,
            r"directions: unknown metric\(s\) \['fluncy'\]; the metrics are \['x'\]",
        ),
        (
            {"a": {"x": [1.0]}},
            {"x": "max"},
            {"x": 1.0, "y": 2.0},
            r"weights: unknown metric\(s\) \['y'\]; the metrics",
        ),
        ({"a": {"x": [1.0]}}, {"x": "max"}, {"x": np.nan}, "weights: expected non-negative finite"),
    ],
)
def test_bad_portfolio_input(metrics, directions, weights, message):
    with pytest.raises(ValueError, match=message):
        portfolio(metrics, directions, weights)


def test_aggregate_rankings_by_borda():
    rankings = [["a", "b", "c"], ["b", "a", "c"], ["a", "c", "b"]]
    # points: a 2+1+2 = 5, b 1+2+0 = 3, c 0+0+1 = 1
    assert aggregate_rankings(rankings) == ["a", "b", "c"]
    assert aggregate_rankings(rankings, weights=[0, 1, 0]) == ["b", "a", "c"]
    with pytest.raises(ValueError, match=r"rankings\[1\]: expected a permutation"):
        aggregate_rankings([["a", "b"], ["a", "c"]])
    with pytest.raises(ValueError, match=r"weights: expected 3 finite non-negative weights, got \[1, nan, 1\]"):
        aggregate_rankings(rankings, weights=[1, float("nan"), 1])
    with pytest.raises(TypeError, match="rankings must be a list of rankings, each a list of model names"):
        aggregate_rankings(["abc", "bca"])
