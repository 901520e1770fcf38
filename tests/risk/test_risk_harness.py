import json
import warnings

import numpy as np
import pytest
from harness_logs import inspect_log, write_inspect_json, write_lm_eval_run
from scipy import stats

from hf_ext.risk import (
    HarnessLogError,
    UnderpoweredComparisonWarning,
    adjust_pvalues,
    compare_harness_logs,
    portfolio,
    read_harness_logs,
    relative_dominance,
    write_harness_report,
)


PNG = b"\x89PNG\r\n\x1a\n"
N = 300


def _write_logs(root, n=N, seed=0):
    """Three models on two tasks: `qa` (0/1 accuracy, correlated errors) and `gen` (a quality score, larger is
    better, and a toxicity, smaller is better). `strong` is better than `weak` everywhere; `mid` sits between."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, n)
    noise = rng.random(n)
    quality = rng.normal(0, 1, n)
    for name, ability in (("weak", -0.8), ("mid", 0.0), ("strong", 0.8)):
        acc = (noise < 1 / (1 + np.exp(-(ability - difficulty)))).astype(float)
        write_lm_eval_run(root, name, "qa", {"acc": acc.tolist()})
        score = quality + ability + rng.normal(0, 0.3, n)
        toxicity = np.clip(0.3 - 0.1 * ability + rng.normal(0, 0.05, n), 0, 1)
        write_lm_eval_run(
            root,
            name,
            "gen",
            {"score": score.tolist(), "toxicity": toxicity.tolist()},
            higher_is_better={"score": True, "toxicity": False},
        )


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval-out")
    _write_logs(root)
    return root


@pytest.fixture(scope="module")
def comparison(logs_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderpoweredComparisonWarning)
        return compare_harness_logs(read_harness_logs(logs_dir), n_bootstrap=200, seed=0)


def test_views_claims_and_directions(comparison):
    assert comparison.models == ["mid", "strong", "weak"]
    assert [view.name for view in comparison.views] == [
        "gen / score",
        "gen / toxicity",
        "gen / portfolio",
        "qa / acc",
    ]
    statements = comparison.statements()
    assert any(s.startswith("strong dominates weak in the first order on qa / acc: Δε = ") for s in statements)
    assert any(
        s.startswith("strong dominates weak in the second order on gen / toxicity (lower is better)")
        for s in statements
    )
    assert any(
        s.startswith("strong is right more often than weak on qa / acc: ") and "(McNemar, p = " in s
        for s in statements
    )
    assert all("Benjamini-Hochberg-adjusted p = " in s for s in statements)
    for claim in comparison.significant_claims():  # every claim points from the better model to the worse
        assert (claim.winner, claim.loser) in {("strong", "weak"), ("strong", "mid"), ("mid", "weak")}
        assert claim.effect < 0 if claim.test == "dominance" else claim.effect > 0
    assert comparison.rankings == {1: ["strong", "mid", "weak"], 2: ["strong", "mid", "weak"]}
    # the toxicity view is compared on negated values: larger is better for every test and plot
    view = comparison.view("gen", "toxicity")
    assert view.direction == "min" and view.raw_means["strong"] < view.raw_means["weak"]
    assert np.all(view.scores["strong"] <= 0)


def test_one_correction_over_every_claim(comparison):
    # the raw p-values recomputed independently: each view's relative test called directly, McNemar by scipy's
    # binomial test on the discordant counts; then Benjamini-Hochberg over all of them
    raw, adjusted = [], []
    for view in comparison.views:
        for order in (1, 2):
            direct = relative_dominance(
                view.scores, order=order, paired=True, n_bootstrap=200, seed=0, correction=None, guard="ks"
            )
            names = direct.models
            for claim in comparison.claims:
                if claim.test == "dominance" and claim.view == view.name and claim.order == order:
                    w, lo = names.index(claim.winner), names.index(claim.loser)
                    assert direct.delta[w, lo] <= 0
                    raw.append(direct.pvalue[w, lo] if direct.delta[w, lo] < 0 else 1.0)
                    adjusted.append(claim.adjusted_pvalue)
        for claim in comparison.claims:
            if claim.test == "mcnemar" and claim.view == view.name:
                a, b = view.raw[claim.winner], view.raw[claim.loser]
                wins, losses = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
                assert claim.detail.startswith(f"{wins} vs {losses} discordant items")
                raw.append(stats.binomtest(wins, wins + losses, 0.5).pvalue)
                adjusted.append(claim.adjusted_pvalue)
    assert len(raw) == len(comparison.claims) == comparison.settings["family_size"]
    # 3 pairs x (4 views x 2 orders) dominance claims + 3 McNemar claims (qa / acc is the only 0/1 metric)
    assert len(raw) == 3 * 8 + 3
    np.testing.assert_allclose(adjusted, adjust_pvalues(np.array(raw), "bh"), rtol=1e-9)
    assert [c.significant for c in comparison.claims] == [
        (c.adjusted_pvalue <= 0.05) and (c.effect != 0) for c in comparison.claims
    ]


def test_the_portfolio_view_is_the_library_portfolio(comparison, logs_dir):
    logs = read_harness_logs(logs_dir)
    raw = {m: {k: logs.paired("gen", k).values[m] for k in ("score", "toxicity")} for m in logs.models}
    expected = portfolio(raw, {"score": "max", "toxicity": "min"})
    view = comparison.view("gen", "portfolio")
    assert view.metrics == ["score", "toxicity"]
    for model in logs.models:
        np.testing.assert_allclose(view.scores[model], expected[model])


def test_holm_is_stricter_than_bh(logs_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderpoweredComparisonWarning)
        logs = read_harness_logs(logs_dir)
        bh = compare_harness_logs(logs, n_bootstrap=100, orders=(1,))
        holm = compare_harness_logs(logs, n_bootstrap=100, orders=(1,), correction="holm")
    assert {c.statement(None).split(":")[0] for c in holm.significant_claims()} <= {
        c.statement(None).split(":")[0] for c in bh.significant_claims()
    }
    assert all(h.adjusted_pvalue >= b.adjusted_pvalue for h, b in zip(holm.claims, bh.claims))


def test_epochs_are_clusters_and_mcnemar_is_left_out(tmp_path):
    rng = np.random.default_rng(1)
    for model, p in (("a", 0.3), ("b", 0.8)):
        samples = [(i, epoch, {"match": "C" if rng.random() < p else "I"}) for i in range(40) for epoch in (1, 2, 3)]
        write_inspect_json(tmp_path / f"{model}.json", inspect_log("qa", model, samples))
    result = compare_harness_logs(read_harness_logs(tmp_path), n_bootstrap=100, orders=(1,))
    (view,) = result.views
    assert view.repeats == 3 and view.n_items == 40 and view.mcnemar is None
    assert view.results[1].clustered and all(claim.test == "dominance" for claim in result.claims)
    assert result.statements() == [result.claims[0].statement("bh")]
    assert result.claims[0].winner == "b"


def test_too_few_samples_to_decide_is_warned_with_the_detectable_effect(tmp_path):
    # 8 items, one model right on 4 more of them: undecidable at any sensible level, and said so
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1] * 7 + [0]})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1] * 3 + [0] * 5})
    with pytest.warns(UnderpoweredComparisonWarning) as record:
        result = compare_harness_logs(read_harness_logs(tmp_path), n_bootstrap=100)
    messages = [str(w.message) for w in record]
    assert messages == result.warnings and len(messages) == 2
    assert messages[1].startswith("t / acc: too few samples to decide 3 of 3 comparisons (8 items)")
    mcnemar = next(c for c in result.claims if c.test == "mcnemar")
    assert not mcnemar.significant and mcnemar.underpowered and mcnemar.mde > 0.1
    assert "smallest accuracy difference detectable with this power" in mcnemar.statement()
    assert any("only 8 items" in w for w in result.warnings)


def test_no_warning_when_the_samples_suffice(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t", {"acc": [1.0] * 900 + [0.0] * 100})
    write_lm_eval_run(tmp_path, "b", "t", {"acc": [1.0] * 300 + [0.0] * 700})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnderpoweredComparisonWarning)
        result = compare_harness_logs(read_harness_logs(tmp_path), n_bootstrap=100)
    assert not result.warnings and len(result.significant_claims()) == 3


def test_bad_input_fails_before_any_bootstrap(tmp_path, monkeypatch):
    import hf_ext.risk.harness as harness

    def no_bootstrap(*args, **kwargs):
        raise AssertionError("the bootstrap ran before the input was checked")

    monkeypatch.setattr(harness, "relative_dominance", no_bootstrap)
    write_lm_eval_run(tmp_path / "one", "a", "t", {"acc": [1.0]})
    write_lm_eval_run(tmp_path / "one", "b", "t", {"acc": [0.0]})
    with pytest.raises(HarnessLogError, match="only 1 sample was logged"):
        compare_harness_logs(read_harness_logs(tmp_path / "one"))
    write_lm_eval_run(tmp_path / "dir", "a", "t", {"acc": [1, 0], "loss": [1, 2]}, higher_is_better={"acc": True})
    write_lm_eval_run(tmp_path / "dir", "b", "t", {"acc": [1, 1], "loss": [1, 3]}, higher_is_better={"acc": True})
    with pytest.raises(HarnessLogError, match="'loss': its direction is unknown"):
        compare_harness_logs(read_harness_logs(tmp_path / "dir"))
    write_lm_eval_run(tmp_path / "solo", "a", "t", {"acc": [1, 0]})
    with pytest.raises(HarnessLogError, match="at least 2 are needed"):
        compare_harness_logs(read_harness_logs(tmp_path / "solo"))
    for kwargs, message in (
        ({"orders": (3,)}, "orders"),
        ({"correction": "sidak"}, "correction"),
        ({"min_effect": 0}, "min_effect"),
        ({"power": 1.5}, "power"),
        ({"weights": {"los": 2.0}}, r"weights: \['los'\] match no metric of the logs; .* metrics: \['acc', 'loss'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            compare_harness_logs(read_harness_logs(tmp_path / "dir", directions={"loss": "min"}), **kwargs)


def test_aggregated_ranking_keeps_ties_as_ties():
    from hf_ext.risk.dominance import RelativeDominanceResult
    from hf_ext.risk.harness import aggregate_view_rankings

    def result(borda, relative):
        k = len(borda)
        return RelativeDominanceResult(
            models=["a", "b", "c"], ranking=[], borda=np.array(borda), epsilon=np.zeros((k, k)),
            relative_epsilon=np.array(relative), delta=np.zeros((k, k)), std_error=np.zeros((k, k)),
            significant=np.zeros((k, k), bool), epsilon_min=np.zeros((k, k)), ks_pvalue=np.zeros((k, k)),
            critical_value=0.0, order=1, alpha=0.05, n_bootstrap=1, paired=True, seed=0,
        )  # fmt: skip

    # task 1: a, b, c all tied; task 2: c first. Positions in a tied list must not count: c wins overall
    assert aggregate_view_rankings([result([0, 0, 0], [0.5, 0.5, 0.5]), result([0, 0, 1], [0.6, 0.6, 0.3])]) == [
        "c",
        "a",
        "b",
    ]


def test_report_files_and_results(comparison, tmp_path):
    report = write_harness_report(comparison, tmp_path / "report")
    folder = report.parent
    text = report.read_text()
    assert text.startswith("# Risk-aware ranking from evaluation-harness logs")
    assert "## Ranking" in text and "| 1 | strong | strong |" in text
    for statement in comparison.statements():
        assert f"- {statement}" in text
    html = (folder / "report.html").read_text()
    tables = sum(line.startswith("|---") for line in text.splitlines())
    assert html.startswith("<!DOCTYPE html>") and html.count("<table>") == tables > 4
    for image in [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (folder / image).read_bytes().startswith(PNG)
        assert f'src="{image}"' in html
    assert json.loads((folder / "results.json").read_text()) == json.loads(json.dumps(comparison.to_dict()))


def test_report_replaces_an_earlier_report_entirely(comparison, tmp_path, logs_dir):
    target = tmp_path / "report"
    write_harness_report(comparison, target)
    assert (target / "gen__portfolio_quantiles.png").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnderpoweredComparisonWarning)
        smaller = compare_harness_logs(read_harness_logs(logs_dir, tasks=["qa"]), n_bootstrap=50, orders=(1,))
    write_harness_report(smaller, target, html_page=False)
    assert sorted(p.name for p in target.iterdir()) == [
        "qa__acc_epsilon_order1.png",
        "qa__acc_quantiles.png",
        "qa__acc_tvar.png",
        "report.md",
        "results.json",
    ]
    assert not list(tmp_path.glob(".report*"))  # no temporary folder left behind


def test_a_failed_report_leaves_the_earlier_one(comparison, tmp_path, monkeypatch):
    import hf_ext.risk.plots as plots

    target = tmp_path / "report"
    write_harness_report(comparison, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_tvar_curves", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_harness_report(comparison, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not list(tmp_path.glob(".report*"))


def test_report_refuses_a_folder_that_is_not_a_report(comparison, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not an earlier report; refusing to replace it"):
        write_harness_report(comparison, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_every_model_needs_every_task(tmp_path):
    write_lm_eval_run(tmp_path, "a", "t1", {"acc": [1, 0, 1]})
    write_lm_eval_run(tmp_path, "b", "t1", {"acc": [1, 1, 1]})
    write_lm_eval_run(tmp_path, "a", "t2", {"acc": [1, 0, 1]})
    write_lm_eval_run(tmp_path, "c", "t2", {"acc": [0, 0, 1]})
    with pytest.raises(HarnessLogError, match=r"task 't1' was not logged for \['c'\]"):
        compare_harness_logs(read_harness_logs(tmp_path))
