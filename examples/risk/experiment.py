"""Risk-aware evaluation of the real experiments' models: the protocol is in `examples/risk/README.md`."""

from __future__ import annotations

from hf_ext.demo import DemoContext, DemoStage, StageResult


def rank_stage_samples(
    stage_samples: dict[str, dict[str, list[float]]], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Rank each stage's models: `{stage: {"mean": {model: mean}, 1: RelativeDominanceResult, 2: ...}}`."""
    import numpy as np

    from hf_ext.risk.dominance import relative_dominance

    rankings = {}
    for stage, samples in stage_samples.items():
        lengths = {len(values) for values in samples.values()}
        if len(samples) < 2 or len(lengths) != 1 or lengths == {0}:
            raise ValueError(
                f"Stage {stage!r} reported samples for {sorted(samples)} with lengths {sorted(lengths)}; expected two "
                "or more models scored on the same non-empty list of items."
            )
        arrays = {name: np.asarray(values, dtype=float) for name, values in samples.items()}
        rankings[stage] = {"mean": {name: float(values.mean()) for name, values in arrays.items()}}
        for order in (1, 2):
            rankings[stage][order] = relative_dominance(
                arrays, order=order, paired=True, n_bootstrap=n_bootstrap, seed=seed
            )
    return rankings


def run_real(context: DemoContext, n_bootstrap: int = 1000) -> StageResult:
    from hf_ext.serialization import save_json

    stage_samples = {name: result.samples for name, result in context.previous.items() if result.samples}
    if not stage_samples:
        return StageResult(
            headline="no earlier stage reported per-sample scores: run it with the method stages (`make demo-real`)"
        )
    rankings = rank_stage_samples(stage_samples, n_bootstrap=n_bootstrap, seed=context.seed)
    figures, lines, headline = {}, [], []
    lines += ["| stage | sample score | n | by mean | first order | second order |", "|---|---|---|---|---|---|"]
    for stage, ranking in rankings.items():
        result = context.previous[stage]
        means = ranking["mean"]
        by_mean = " > ".join(sorted(means, key=lambda name: -means[name]))
        n = len(next(iter(result.samples.values())))
        first, second = ranking[1], ranking[2]
        lines.append(
            f"| {stage} | {result.samples_description or '-'} | {n} | {by_mean} | {first.summary()} | {second.summary()} |"
        )
        figures[f"{stage}: first order"] = first.summary()
        figures[f"{stage}: second order"] = second.summary()
        wins = [f"{a} ≻ {b}" for a in first.ranking for b in first.dominated_by(a)]
        headline.append(f"{stage}: {', '.join(wins) if wins else 'no significant dominance'}")
        context.log(f"{stage}: by mean {by_mean}; first order {first.summary()}; second order {second.summary()}")
    save_json(
        context.output_dir / "rankings.json",
        {
            stage: {"mean": ranking["mean"], "first_order": ranking[1].to_dict(), "second_order": ranking[2].to_dict()}
            for stage, ranking in rankings.items()
        },
    )
    return StageResult(
        headline="; ".join(headline) + " (first order, paired, alpha 0.05)",
        figures=figures,
        details="\n".join(lines),
    )


STAGE = DemoStage(name="risk", title="Risk-aware evaluation of the real experiments' models", run=run_real)
