"""Demo stage: the model with the best mean reward has the worst tail, and second-order dominance sees it."""

from __future__ import annotations

from hf_ext.demo.runner import DemoContext, DemoStage, StageResult


def _rewards(seed: int, n: int = 2000) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n)
    # "aligned": a better, tighter distribution; "risky": the best mean, but 15% of its answers fail badly
    aligned = rng.normal(0.35, 0.8, n)
    failures = rng.random(n) < 0.15
    risky = np.where(failures, rng.normal(-4.0, 1.0, n), rng.normal(1.5, 0.5, n))
    return {"base": base, "aligned": aligned, "risky": risky}


def _run(context: DemoContext) -> StageResult:
    from hf_ext.risk.measures import mean_risk_table
    from hf_ext.risk.report import write_report

    samples = _rewards(context.seed)
    report, results = write_report(
        samples,
        context.output_dir,
        orders=(1, 2),
        n_bootstrap=500,
        seed=context.seed,
        title="Risk-aware comparison of three synthetic reward distributions",
        notes="`risky` has the best mean reward but fails badly on 15% of the prompts.",
    )
    figures = mean_risk_table(samples, levels=(0.05,))
    by_mean = max(figures, key=lambda name: figures[name]["mean"])
    second = results[2]
    best = second.ranking[0]
    context.log(f"best mean: {by_mean}; second-order dominance ranking: {' > '.join(second.ranking)}")
    context.log(f"significant second-order dominances: {[(a, second.dominated_by(a)) for a in second.ranking]}")
    table = {}
    for name, values in figures.items():
        table[f"{name}: mean"] = round(values["mean"], 3)
        table[f"{name}: TVaR@5%"] = round(values["tvar@0.05"], 3)
    table["ranking by mean"] = " > ".join(sorted(figures, key=lambda name: -figures[name]["mean"]))
    table["ranking, first order"] = " > ".join(results[1].ranking)
    table["ranking, second order"] = " > ".join(second.ranking)
    plots = [context.output_dir / name for name in ("tvar.png", "quantiles.png", "epsilon_order2.png")]
    return StageResult(
        headline=(
            f"mean picks {by_mean} (TVaR@5% {figures[by_mean]['tvar@0.05']:.2f}); second-order dominance picks "
            f"{best} (TVaR@5% {figures[best]['tvar@0.05']:.2f})"
        ),
        figures=table,
        plots=plots,
        details=f"Full report: `{report.name}` in this stage's folder.\n\n" + second.to_markdown(),
    )


STAGE = DemoStage(name="risk", title="Risk-aware evaluation: stochastic dominance vs the mean", run=_run)
