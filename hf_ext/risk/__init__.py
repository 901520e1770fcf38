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
"""

from pathlib import Path

from .dominance import (
    AbsoluteDominanceResult,
    RelativeDominanceResult,
    absolute_dominance,
    borda_ranking,
    relative_dominance,
)
from .harness import Claim, HarnessComparison, UnderpoweredComparisonWarning, compare_harness_logs
from .harness_report import write_harness_report
from .mean_risk import gini_tail, mean_risk, mean_risk_table, semideviation
from .paired import adjust_pvalues, mcnemar, minimum_detectable_effect
from .plots import plot_epsilon_heatmap, plot_quantile_curves, plot_tvar_curves
from .portfolio import aggregate_rankings, empirical_cdf_scores, portfolio
from .quantiles import quantile, second_order_quantile, tvar
from .readers import HarnessLogError, HarnessLogs, read_harness_logs
from .report import write_report
from .violation import violation_ratio


EVALUATE_MODULE_PATH = str(Path(__file__).resolve().parent / "stochastic_dominance")
"""Local path of the `evaluate` module: `evaluate.load(EVALUATE_MODULE_PATH)` (no Hub access needed)."""

__all__ = [
    "EVALUATE_MODULE_PATH",
    "AbsoluteDominanceResult",
    "Claim",
    "HarnessComparison",
    "HarnessLogError",
    "HarnessLogs",
    "RelativeDominanceResult",
    "UnderpoweredComparisonWarning",
    "absolute_dominance",
    "adjust_pvalues",
    "aggregate_rankings",
    "borda_ranking",
    "compare_harness_logs",
    "empirical_cdf_scores",
    "gini_tail",
    "mcnemar",
    "mean_risk",
    "mean_risk_table",
    "minimum_detectable_effect",
    "plot_epsilon_heatmap",
    "plot_quantile_curves",
    "plot_tvar_curves",
    "portfolio",
    "quantile",
    "read_harness_logs",
    "relative_dominance",
    "second_order_quantile",
    "semideviation",
    "tvar",
    "violation_ratio",
    "write_harness_report",
    "write_report",
]
