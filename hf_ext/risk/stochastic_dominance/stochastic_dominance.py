"""Relative stochastic dominance of k models, as an `evaluate` comparison module.

Load it from its local path (no Hub access):

    import evaluate
    from hf_ext.risk import EVALUATE_MODULE_PATH

    dominance = evaluate.load(EVALUATE_MODULE_PATH)
    dominance.add_batch(scores=[0.1, 0.9, 0.4], models=["a", "b", "a"])
    dominance.compute(order=2, n_bootstrap=500, seed=0)["ranking"]

The configuration `"harness"` takes what `hf_ext.risk.read_harness_logs` reads from the logs of lm-eval, Inspect or
lighteval: one row per value with its model, task, metric and sample id, compared as `hf_ext.risk.compare_harness_logs`
does (paired tests, McNemar for 0/1 metrics, one correction over all claims, per-task portfolio, rankings):

    logs = read_harness_logs("lm-eval-out/")
    dominance = evaluate.load(EVALUATE_MODULE_PATH, "harness")
    dominance.add_batch(**logs.to_columns())
    dominance.compute(directions=logs.directions(), n_bootstrap=500)["rankings"]

The computations are `hf_ext.risk`'s; this file only adapts them to `evaluate`'s API.
"""

import datasets
import evaluate

from hf_ext.risk import HarnessLogs, compare_harness_logs, relative_dominance


_DESCRIPTION = """\
Ranks k models by relative first- or second-order stochastic dominance of a per-sample metric (larger is better),
with a joint bootstrap, Bonferroni correction over the pairs and a Borda count over the significant outcomes
(Nitsure et al., "Risk Aware Benchmarking of Large Language Models", ICML 2024). Second order compares the mean of
the worst t-fraction of the samples at every t, so a model whose bad cases are worse loses even with a better mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    scores (`list` of `float`): One metric value per sample (larger is better).
    models (`list` of `str`): The model that produced each score (at least two distinct models).
    order (`int`, *optional*, defaults to 1): 1 (quantiles) or 2 (tail values at risk).
    alpha (`float`, *optional*, defaults to 0.05): Family-wise significance level.
    n_bootstrap (`int`, *optional*, defaults to 1000): Joint bootstrap rounds.
    paired (`bool`, *optional*, defaults to `False`): The i-th score of every model comes from the same prompt
        (scores are matched in the order they were added).
    seed (`int`, *optional*, defaults to 0): Bootstrap seed.
    correction (`str`, *optional*, defaults to `"bonferroni"`): Or `None`.
    guard (`str`, *optional*, defaults to `"ks"`): Or `None`; see `hf_ext.risk.relative_dominance`.
Configuration "harness" (`evaluate.load(EVALUATE_MODULE_PATH, "harness")`), one row per value:
    scores (`list` of `float`), models, tasks, metrics, sample_ids (`list` of `str`): The value, its model, task,
        metric and item (a repeated id is a repeat of the item: epochs, seeds), as `HarnessLogs.to_columns()` gives.
    directions (`dict`): `"max"` / `"min"` per `"task/metric"` or `"metric"` (`HarnessLogs.directions()`).
    orders, alpha, correction ("bh"), n_bootstrap, seed, weights, with_portfolio, mcnemar, guard, power, min_effect,
        missing: As `hf_ext.risk.compare_harness_logs`.
Returns:
    ranking (`list` of `str`): Models, best first.
    borda (`dict`): Number of models each one significantly dominates.
    relative_epsilon (`dict`): Each model's mean violation ratio against the others (lower is better).
    models (`list` of `str`), epsilon (`list` of `list`), significant (`list` of `list`): The pairwise violation
        ratios eps(row, column) and which row significantly dominates which column, in the order of `models`.
    With the "harness" configuration:
    rankings (`dict`): By order ("order1", "order2"), the models best first across tasks.
    statements (`list` of `str`): The significant claims in words; claims (`list` of `dict`): every claim.
    warnings (`list` of `str`): Comparisons with too few samples to decide.
Examples:
    >>> import evaluate
    >>> from hf_ext.risk import EVALUATE_MODULE_PATH
    >>> dominance = evaluate.load(EVALUATE_MODULE_PATH)
    >>> results = dominance.compute(scores=[1, 2, 3, 4, 5, 6], models=["a", "a", "a", "b", "b", "b"], n_bootstrap=50)
    >>> results["ranking"]
    ['b', 'a']
"""

_CITATION = """\
@inproceedings{nitsure2024risk,
  title={Risk Aware Benchmarking of Large Language Models},
  author={Nitsure, Apoorva and Mroueh, Youssef and Rigotti, Mattia and Greenewald, Kristjan and Belgodere, Brian
          and Yurochkin, Mikhail and Navratil, Jiri and Melnyk, Igor and Ross, Jerret},
  booktitle={International Conference on Machine Learning},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StochasticDominance(evaluate.Comparison):
    """Relative stochastic dominance ranking of k models."""

    def _info(self):
        if self.config_name not in ("default", "harness"):
            raise ValueError(f"config_name: expected 'default' or 'harness', got {self.config_name!r}")
        features = {"scores": datasets.Value("float64"), "models": datasets.Value("string")}
        if self.config_name == "harness":
            features.update(
                tasks=datasets.Value("string"), metrics=datasets.Value("string"), sample_ids=datasets.Value("string")
            )
        return evaluate.ComparisonInfo(
            module_type="comparison",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://arxiv.org/abs/2310.07132"],
        )

    def _compute(self, scores, models, tasks=None, metrics=None, sample_ids=None, **kwargs):
        if self.config_name == "harness":
            return self._compute_harness(scores, models, tasks, metrics, sample_ids, **kwargs)
        return self._compute_default(scores, models, **kwargs)

    def _compute_harness(self, scores, models, tasks, metrics, sample_ids, directions=None, **kwargs):
        logs = HarnessLogs.from_columns(models, tasks, metrics, sample_ids, scores, directions)
        comparison = compare_harness_logs(logs, **kwargs)
        return {
            "rankings": {f"order{order}": ranking for order, ranking in comparison.rankings.items()},
            "statements": comparison.statements(),
            "claims": [claim.to_dict() for claim in comparison.claims],
            "warnings": comparison.warnings,
            "models": comparison.models,
        }

    def _compute_default(
        self,
        scores,
        models,
        order=1,
        alpha=0.05,
        n_bootstrap=1000,
        paired=False,
        seed=0,
        correction="bonferroni",
        guard="ks",
    ):
        samples = {}
        for model, score in zip(models, scores):
            samples.setdefault(model, []).append(score)
        result = relative_dominance(
            samples,
            order=order,
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            paired=paired,
            seed=seed,
            correction=correction,
            guard=guard,
        )
        return {
            "ranking": result.ranking,
            "borda": {name: int(v) for name, v in zip(result.models, result.borda)},
            "relative_epsilon": {name: float(v) for name, v in zip(result.models, result.relative_epsilon)},
            "models": result.models,
            "epsilon": result.to_dict()["epsilon"],
            "significant": result.to_dict()["significant"],
        }
