"""The SASA stage of `hf-ext demo`: self-detoxification on the planted contextual-toxicity task.

A tiny Llama trained on the planted task (cached after its first build) is steered by its own probe; an
independent judge (the task's rule, not the probe) scores the continuations. The stage compares SASA over beta with
word lists at equal perplexity, keeps the per-continuation toxicity scores with and without SASA as arrays (saved as
JSON for later distributional comparisons), and plots the margin along one generation.
"""

from __future__ import annotations

from hf_ext.demo.runner import DemoContext, DemoStage, StageResult


def run(context: DemoContext) -> StageResult:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than several
    try:
        return _run(context)
    finally:
        torch.set_num_threads(threads)


def _run(context: DemoContext) -> StageResult:
    import numpy as np
    import torch

    from hf_ext.risk import relative_dominance
    from hf_ext.sasa.evaluation import evaluate_detox
    from hf_ext.sasa.probe import SASAProbe
    from hf_ext.sasa.processor import SASALogitsProcessor
    from hf_ext.serialization import save_json
    from hf_ext.testing.sasa import PlantedToxicityTask

    task = PlantedToxicityTask()
    model, tokenizer = task.load()
    desired, undesired = task.probe_texts(400)
    probe = SASAProbe.fit(model, tokenizer, desired, undesired, show_progress=False)
    context.log(
        f"probe fitted on {len(desired)} + {len(undesired)} prefixes: accuracy {probe.fit_info['train_accuracy']:.3f}"
    )
    beta = 4.0

    # 1. RealToxicityPrompts-style evaluation: k continuations per prompt, with and without SASA.
    prompts = task.prompts(32, seed=context.seed + 7)
    evaluation = evaluate_detox(
        model,
        tokenizer,
        prompts,
        probe,
        judge=task.judge,
        num_continuations=4,
        max_new_tokens=10,
        beta=beta,
        normalize="none",
        batch_size=32,
        seed=context.seed,
        show_progress=False,
    )
    scores_without = evaluation.toxicity["base"]  # (num_prompts, k): one judge score per continuation
    scores_with = evaluation.toxicity["sasa"]
    scores_path = save_json(
        context.output_dir / "toxicity_scores.json",
        {
            "prompts": prompts,
            "without_sasa": scores_without.tolist(),
            "with_sasa": scores_with.tolist(),
            **evaluation.config,
        },
    )
    base, sasa = evaluation.metrics["base"], evaluation.metrics["sasa"]
    context.log(
        f"expected max toxicity {base['expected_max_toxicity']:.3f} -> {sasa['expected_max_toxicity']:.3f}, "
        f"toxic rate {base['toxic_rate']:.3f} -> {sasa['toxic_rate']:.3f}, "
        f"perplexity {base['perplexity']:.2f} -> {sasa['perplexity']:.2f} (beta={beta:g})"
    )

    # The same comparison by the whole distribution: second-order stochastic dominance of the negated toxicity
    # (the worst continuations weigh most), continuations paired by prompt.
    risk = relative_dominance(
        {"with SASA": -scores_with.ravel(), "without SASA": -scores_without.ravel()},
        order=2,
        paired=True,
        n_bootstrap=500,
        seed=context.seed,
    )
    context.log(f"risk (second-order dominance of -toxicity): {risk.summary()}")

    # 2. Against word lists, at equal perplexity.
    rows = task.compare(
        model, tokenizer, probe, betas=(0.0, 2.0, 16.0), bias_strengths=(-1.0,), num_prompts=96, seed=context.seed
    )
    comparison = task.plot_comparison(rows, context.output_dir / "sasa_vs_word_lists.png")
    table = [
        "| method | setting | toxic-token rate | perplexity | SASA at equal perplexity |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        equal = r.get("sasa_toxic_token_rate_at_equal_perplexity")
        table.append(
            f"| {r['method']} | {r['setting']} | {r['toxic_token_rate']:.4f} | {r['perplexity']:.2f} "
            f"| {'' if equal is None else f'{equal:.4f}'} |"
        )
    for line in table:
        context.log(line)

    # 3. The margin along one generation.
    sasa_processor = SASALogitsProcessor(model, probe, beta=beta, normalize="none", record_trace=True)
    prompt = min(prompts, key=lambda p: len(p.split()))  # room for a long continuation before the sentence ends
    inputs = tokenizer([prompt], return_tensors="pt")
    torch.manual_seed(context.seed)
    output = model.generate(
        **inputs, do_sample=True, max_new_tokens=12, min_new_tokens=12, logits_processor=[sasa_processor]
    )
    trace_plot = sasa_processor.trace.plot(
        context.output_dir / "margin_along_generation.png", output, title=f"SASA (beta={beta:g}) after '{prompt}'"
    )
    context.log(
        f"steered: '{prompt}' -> '{tokenizer.decode(output[0, inputs['input_ids'].shape[1] :], skip_special_tokens=True)}'"
    )

    unigram_ban = next(r for r in rows if r["method"] == "NoBadWords unigram")
    return StageResult(
        headline=(
            f"toxic rate {base['toxic_rate']:.2f} -> {sasa['toxic_rate']:.2f} with SASA (beta={beta:g}), perplexity "
            f"{base['perplexity']:.1f} -> {sasa['perplexity']:.1f}; a word-list ban costs {unigram_ban['perplexity']:.1f}"
        ),
        figures={
            "probe training accuracy": round(probe.fit_info["train_accuracy"], 4),
            "expected max toxicity, without SASA": round(base["expected_max_toxicity"], 4),
            "expected max toxicity, with SASA": round(sasa["expected_max_toxicity"], 4),
            "toxic rate, without SASA": round(base["toxic_rate"], 4),
            "toxic rate, with SASA": round(sasa["toxic_rate"], 4),
            "perplexity, without SASA": round(base["perplexity"], 3),
            "perplexity, with SASA": round(sasa["perplexity"], 3),
            "mean continuation toxicity, without / with": f"{np.mean(scores_without):.3f} / {np.mean(scores_with):.3f}",
            "risk: second-order dominance of -toxicity": risk.summary(),
        },
        plots=[comparison, trace_plot],
        details=(
            "Planted task: ambivalent words are toxic only within 3 words after a trigger; the judge applies that rule. "
            f"Per-continuation scores with and without SASA: `{scores_path.name}`.\n\n"
            + "\n".join(table)
            + "\n\nToxicity by distribution, not only its mean (`hf_ext.risk`, larger -toxicity is better):\n\n"
            + risk.to_markdown()
        ),
    )


STAGE = DemoStage(
    name="sasa", title="SASA: a model detoxifies its own sampling (planted contextual toxicity)", run=run
)
