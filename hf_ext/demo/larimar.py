"""The Larimar stage of `hf-ext demo`: one-shot editing, forgetting and scope with the trained tiny Larimar."""

from __future__ import annotations

from hf_ext.demo.runner import DemoContext, DemoStage, StageResult


def _run(context: DemoContext) -> StageResult:
    import torch
    from transformers import AutoModelForCausalLM

    from hf_ext.larimar.evaluation import answer, exact_match_recall
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.plotting import figure, save_figure
    from hf_ext.testing import larimar as facts
    from hf_ext.testing.larimar import tiny_larimar_dir

    torch.manual_seed(context.seed)
    path = tiny_larimar_dir()  # trained once (a few minutes), then cached
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    written = facts.evaluation_facts(64)
    unrelated = facts.filler_sentences(8, seed=context.seed + 11)

    before = exact_match_recall(model, processor, written)
    unrelated_before = answer(model, processor, unrelated, max_new_tokens=6)
    model.write_memory([f.text for f in written], processor=processor)
    after = exact_match_recall(model, processor, written)
    unrelated_after = answer(model, processor, unrelated, max_new_tokens=6)
    example = written[0]
    context.log(f"wrote 64 unseen facts in one shot, e.g. {example.text!r}")
    context.log(f"{example.prompt!r} -> {answer(model, processor, [example.prompt])[0]!r}")
    model.forget_memory([f.text for f in written[:16]], processor=processor)
    forgotten = exact_match_recall(model, processor, written[:16])
    kept = exact_match_recall(model, processor, written[16:])
    unchanged = sum(a == b for a, b in zip(unrelated_before, unrelated_after)) / len(unrelated)
    context.log(f"recall {before:.0%} -> {after:.0%}; after forgetting 16: forgotten {forgotten:.0%}, kept {kept:.0%}")

    bars = {"no memory": before, "64 facts\nwritten": after, "16 facts\nforgotten": forgotten, "48 facts\nkept": kept}
    fig, ax = figure()
    ax.bar(list(bars), list(bars.values()), color=["#999999", "#2a7ab0", "#c0504d", "#2a7ab0"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact-match recall")
    ax.set_title("Tiny Larimar: recall of facts never seen in training")
    for i, value in enumerate(bars.values()):
        ax.text(i, value + 0.02, f"{value:.0%}", ha="center")
    plot = save_figure(fig, context.output_dir / "larimar_recall.png")
    return StageResult(
        headline=f"recall of 64 unseen facts {before:.0%} -> {after:.0%} after one memory write; "
        f"forgotten {forgotten:.0%}, kept {kept:.0%}",
        figures={
            "recall without memory": round(before, 3),
            "recall after one-shot write": round(after, 3),
            "recall of 16 forgotten facts": round(forgotten, 3),
            "recall of the 48 kept facts": round(kept, 3),
            "unrelated prompts unchanged": round(unchanged, 3),
        },
        plots=[plot],
        details=(
            "A tiny Larimar (random frozen BERT-style encoder, GPT-2 decoder) trained a few minutes on synthetic "
            "facts writes 64 facts it never saw into its episodic memory without any gradient step, then forgets "
            "16 of them. Prompts unrelated to the facts read nothing from memory (scope detection), so their "
            "answers do not change."
        ),
    )


STAGE = DemoStage(name="larimar", title="Larimar: one-shot memory edits and forgetting", run=_run)
