"""Risk-aware evaluation with stochastic dominance (Nitsure et al., ICML 2024).

Compare models by the whole distribution of a per-sample metric, not only its mean: first-order dominance (the
quantile functions) and second-order dominance (the tail values at risk), with statistical significance.

- [`violation_ratio`]: the almost-dominance violation ratio of two samples, computed exactly;
- [`absolute_dominance`]: is X almost dominant over Y (two models);
- [`relative_dominance`]: the relative test for k models at once, with a ranking;
- [`portfolio`]: several metrics aggregated into one per-sample score; [`aggregate_rankings`];
- [`mean_risk`] / [`mean_risk_table`]: TVaR and mean - risk figures;
- plots: [`plot_quantile_curves`], [`plot_tvar_curves`], [`plot_epsilon_heatmap`]; [`write_report`] (a Markdown
  report with all of them, as `hf-ext risk` writes);
- [`EVALUATE_MODULE_PATH`]: an `evaluate` module computing the relative ranking (`evaluate.load(EVALUATE_MODULE_PATH)`);
- harness logs: [`read_harness_logs`] reads the per-sample logs of lm-eval (`--log_samples`), Inspect (`.eval` /
  `.json`) and lighteval (`--save-details`); [`compare_harness_logs`] runs the paired tests (dominance at each order,
  McNemar for 0/1 metrics) with one correction over all claims, minimum detectable effects, the per-task portfolio
  and the aggregated ranking; [`write_harness_report`] writes it as Markdown / HTML with its plots;
- paired statistics: [`mcnemar`], [`adjust_pvalues`] (Benjamini-Hochberg, Holm, Bonferroni),
  [`minimum_detectable_effect`].

Larger metric values are better everywhere; negate a metric where smaller is better (or give its direction to
[`portfolio`]).

Needs SciPy: `pip install "hf-ext[risk]"`; the plots need `hf-ext[plots]`.
"""

from __future__ import annotations

from hf_ext._imports import lazy_package


_import_structure = {
    "dominance": [
        "AbsoluteDominanceResult",
        "RelativeDominanceResult",
        "absolute_dominance",
        "borda_ranking",
        "relative_dominance",
    ],
    "harness": ["Claim", "HarnessComparison", "UnderpoweredComparisonWarning", "compare_harness_logs"],
    "harness_report": ["write_harness_report"],
    "measures": ["gini_tail", "mean_risk", "mean_risk_table", "semideviation"],
    "paired": ["adjust_pvalues", "mcnemar", "minimum_detectable_effect"],
    "plots": ["plot_epsilon_heatmap", "plot_quantile_curves", "plot_tvar_curves"],
    "aggregation": ["aggregate_rankings", "empirical_cdf_scores", "portfolio"],
    "quantiles": ["quantile", "second_order_quantile", "tvar"],
    "readers": ["HarnessLogError", "HarnessLogs", "read_harness_logs"],
    "report": ["write_report"],
    "violation": ["violation_ratio"],
    "evaluate_module": ["EVALUATE_MODULE_PATH"],
}
"""Submodule -> the public names it defines: the one list of this package's API."""

__all__, __getattr__, __dir__ = lazy_package(__name__, _import_structure, globals(), extra="risk", requires=("scipy",))
