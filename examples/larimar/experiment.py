"""Larimar: MiniLM + SmolLM2 memory edits: the protocol is in `examples/larimar/README.md`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from examples.larimar.model import RealLarimarRecipe
from hf_ext.demo import DemoContext, DemoStage, StageResult


__all__ = ["NATURAL_STAGE", "REAL_SIZES", "RealLarimarStageConfig", "answer_log_probs", "run_real", "run_real_natural"]

WRITTEN, EMPTY, PLAIN = "Larimar, facts written", "Larimar, empty memory", "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class RealLarimarStageConfig:
    """Settings of the real-model Larimar stage ([`run_real`])."""

    recipe: RealLarimarRecipe = field(default_factory=RealLarimarRecipe)
    num_facts: int = 32
    num_forget: int = 8
    num_edit: int = 8
    lora_rank: int = 8
    lora_learning_rate: float = 3e-3
    lora_max_steps: int = 30
    lora_target: float = 0.9
    bootstrap: int = 1000
    fact_seed: int = 1234

    def __post_init__(self):
        for name in ("num_facts", "num_edit", "lora_rank", "lora_max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is out of range; expected an integer >= 1.")
        if not isinstance(self.num_forget, int) or not 1 <= self.num_forget < self.num_facts:
            raise ValueError(f"num_forget={self.num_forget!r} is out of range; expected an integer in [1, num_facts).")
        if self.num_edit > self.num_facts:
            raise ValueError(
                f"num_edit={self.num_edit!r} is out of range; expected at most num_facts={self.num_facts}."
            )
        if not 0 < self.lora_target <= 1:
            raise ValueError(f"lora_target={self.lora_target!r} is out of range; expected a float in (0, 1].")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 10:
            raise ValueError(f"bootstrap={self.bootstrap!r} is out of range; expected an integer >= 10.")


REAL_SIZES: dict[str, RealLarimarStageConfig] = {
    # `make demo-real` (its model is trained on first use, then cached)
    "default": RealLarimarStageConfig(),
    # the `real` test: a shorter training (about a fifth of the CPU, partial recall), fewer facts, a shorter LoRA
    # edit and bootstrap
    "short": RealLarimarStageConfig(
        recipe=RealLarimarRecipe(episode_size=16, steps=120, learning_rate=5e-4),
        num_facts=16,
        num_forget=4,
        num_edit=4,
        lora_max_steps=15,
        bootstrap=300,
    ),
}


def answer_log_probs(model, processor, facts, memory_latent=None, batch_size: int = 32) -> list[float]:
    """Per fact, the log-probability of its object (the answer's tokens, teacher-forced) after its prompt.

    `model` is a [`LarimarForCausalLM`] (conditioned on `memory_latent`, `[len(facts), latent_size]`, or on a zero
    latent) or a plain causal LM; both read the same tokens (the decoder's BOS, the prompt, the answer).
    """
    import torch

    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM

    tokenizer = processor.decoder_tokenizer
    scores = []
    for start in range(0, len(facts), batch_size):
        chunk = facts[start : start + batch_size]
        full = processor.decoder_ids([f.text for f in chunk], False, None)
        prompts = processor.decoder_ids([f.prompt for f in chunk], False, None)
        for ids, prompt in zip(full, prompts):
            if ids[: len(prompt)] != prompt or len(ids) == len(prompt):
                raise ValueError(
                    f"The tokens of a prompt are not a prefix of its fact's tokens ({tokenizer.decode(ids)!r})."
                )
        input_ids, attention_mask = processor.pad_decoder_ids(full, "right")
        kwargs = {}
        if isinstance(model, LarimarForCausalLM):
            latent = memory_latent[start : start + batch_size] if memory_latent is not None else None
            if latent is None:
                latent = torch.zeros(len(chunk), model.config.latent_size)
            kwargs["memory_latent"] = latent.to(model.device)
        with torch.no_grad():
            logits = model(
                input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device), **kwargs
            ).logits
        log_probs = logits.float().log_softmax(-1)
        for row, (ids, prompt) in enumerate(zip(full, prompts)):
            positions = range(len(prompt), len(ids))
            scores.append(float(sum(log_probs[row, p - 1, ids[p]] for p in positions)))
    return scores


def _plain_recall(model, processor, facts, max_new_tokens: int) -> float:
    """Exact-match recall of a plain causal LM: its greedy continuation up to EOS, stripped, equals the object."""
    from examples.larimar.natural import greedy_continuations

    answers = greedy_continuations(model, processor, [f.prompt for f in facts], max_new_tokens)
    return sum(a == f.object for a, f in zip(answers, facts)) / len(facts)


def run_real(context: DemoContext, size: str | RealLarimarStageConfig = "default") -> StageResult:
    """Run the real-model Larimar stage at `size` (a key of `REAL_SIZES`, or a `RealLarimarStageConfig`)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    from examples.larimar.model import LORA_TARGETS, real_larimar_dir
    from hf_ext.larimar.evaluation import answer, exact_match_recall, lora_edit
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.plotting import figure, save_figure
    from hf_ext.real_models import real_causal_lm_dir
    from hf_ext.risk import plot_quantile_curves, relative_dominance
    from hf_ext.serialization import save_json
    from hf_ext.testing import larimar as fact_corpus

    if isinstance(size, RealLarimarStageConfig):
        config = size
    elif size in REAL_SIZES:
        config = REAL_SIZES[size]
    else:
        raise ValueError(f"size={size!r} is not supported; expected one of {list(REAL_SIZES)}.")
    torch.manual_seed(context.seed)
    stage_cpu = time.process_time()
    path = real_larimar_dir(config.recipe)  # trained once (minutes of CPU), then cached
    training_log = json.loads((path / "training_log.json").read_text(encoding="utf-8"))
    model = LarimarForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    plain = AutoModelForCausalLM.from_pretrained(real_causal_lm_dir()).eval()
    written = fact_corpus.evaluation_facts(config.num_facts, seed=config.fact_seed)
    forgotten, kept = written[: config.num_forget], written[config.num_forget :]
    longest = max(
        len(processor.decoder_tokenizer(" " + f.object, add_special_tokens=False)["input_ids"]) for f in written
    )
    context.log(
        f"Larimar = all-MiniLM-L6-v2 + SmolLM2-135M-Instruct, trained {config.recipe.steps} steps on fact episodes of "
        f"{config.recipe.episode_size} ({training_log['cpu_seconds']:.0f} s CPU, cached in {path})"
    )

    model.reset_memory()
    recall_plain = _plain_recall(plain, processor, written, max_new_tokens=longest + 1)
    recall_empty = exact_match_recall(model, processor, written)
    scores = {PLAIN: answer_log_probs(plain, processor, written), EMPTY: answer_log_probs(model, processor, written)}

    start = time.process_time()
    model.write_memory([f.text for f in written], processor=processor)
    write_seconds = time.process_time() - start
    recall_written = exact_match_recall(model, processor, written)
    latents = model.read_memory([f.prompt for f in written], processor=processor)
    scores[WRITTEN] = answer_log_probs(model, processor, written, memory_latent=latents)
    example = written[0]
    context.log(
        f"wrote {len(written)} unseen facts in one shot ({write_seconds * 1e3:.0f} ms CPU), e.g. {example.text!r}: "
        f"{example.prompt!r} -> {answer(model, processor, [example.prompt])[0]!r}"
    )
    context.log(
        f"exact-match recall: SmolLM2 {recall_plain:.0%}, empty memory {recall_empty:.0%}, after the write "
        f"{recall_written:.0%}"
    )

    model.forget_memory([f.text for f in forgotten], processor=processor)
    recall_forgotten = exact_match_recall(model, processor, forgotten)
    recall_kept = exact_match_recall(model, processor, kept)
    context.log(f"after forgetting {len(forgotten)}: forgotten {recall_forgotten:.0%}, kept {recall_kept:.0%}")

    # Edit latency: the same facts made recallable by one memory write, or by LoRA steps on the decoder.
    edits = written[: config.num_edit]
    model.reset_memory()
    model.write_memory(["warm up"], processor=processor)
    model.reset_memory()
    start = time.process_time()
    model.write_memory([f.text for f in edits], processor=processor)
    edit_write_seconds = time.process_time() - start
    edit_write_recall = exact_match_recall(model, processor, edits)
    lora = lora_edit(
        model,
        processor,
        edits,
        learning_rate=config.lora_learning_rate,
        max_steps=config.lora_max_steps,
        target_recall=config.lora_target,
        rank=config.lora_rank,
        target_modules=LORA_TARGETS,
    )
    speedup = lora["train_cpu_seconds"] / edit_write_seconds
    context.log(
        f"edit {len(edits)} facts: memory write {edit_write_seconds * 1e3:.0f} ms CPU (recall {edit_write_recall:.0%}); "
        f"LoRA {lora['steps']} steps, {lora['train_cpu_seconds']:.1f} s CPU (recall {lora['recall']:.0%}"
        f"{'' if lora['reached'] else ', target not reached'}): {speedup:.0f}x"
    )

    risk = relative_dominance(scores, order=1, paired=True, n_bootstrap=config.bootstrap, seed=context.seed)
    context.log(f"risk (first-order dominance of the answer's log-probability): {risk.summary()}")

    bars = {
        "SmolLM2": recall_plain,
        "empty\nmemory": recall_empty,
        f"{len(written)} facts\nwritten": recall_written,
        f"{len(forgotten)}\nforgotten": recall_forgotten,
        f"{len(kept)}\nkept": recall_kept,
    }
    fig, ax = figure()
    ax.bar(list(bars), list(bars.values()), color=["#999999", "#999999", "#2a7ab0", "#c0504d", "#2a7ab0"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact-match recall")
    ax.set_title("MiniLM + SmolLM2 Larimar: facts never seen in training")
    for i, value in enumerate(bars.values()):
        ax.text(i, value + 0.02, f"{value:.0%}", ha="center")
    plots = [save_figure(fig, context.output_dir / "larimar_real_recall.png")]
    plots.append(
        plot_quantile_curves(
            scores,
            context.output_dir / "larimar_real_answer_logprob_quantiles.png",
            title="Per-fact log-probability of the correct answer",
            ylabel="log p(answer | prompt)",
        )
    )
    stage_seconds = time.process_time() - stage_cpu
    figures = {
        "facts written (never seen in training)": len(written),
        "recall, SmolLM2 (no memory)": round(recall_plain, 3),
        "recall, Larimar with an empty memory": round(recall_empty, 3),
        "recall after the one-shot write": round(recall_written, 3),
        f"recall of the {len(forgotten)} forgotten facts": round(recall_forgotten, 3),
        f"recall of the {len(kept)} kept facts": round(recall_kept, 3),
        f"memory write of {len(written)} facts (ms CPU)": round(write_seconds * 1e3, 1),
        f"edit of {len(edits)} facts, memory write (ms CPU)": round(edit_write_seconds * 1e3, 1),
        f"edit of {len(edits)} facts, LoRA training (s CPU)": round(lora["train_cpu_seconds"], 2),
        f"edit of {len(edits)} facts, LoRA steps (recall reached)": f"{lora['steps']} ({lora['recall']:.0%})",
        "edit speed-up, memory write over LoRA": round(speedup, 1),
        "LoRA reached the recall target": f"{lora['reached']} (target {config.lora_target:.0%}, at most {config.lora_max_steps} steps)",
        "mean log p(answer), SmolLM2": round(sum(scores[PLAIN]) / len(written), 3),
        "mean log p(answer), empty memory": round(sum(scores[EMPTY]) / len(written), 3),
        "mean log p(answer), facts written": round(sum(scores[WRITTEN]) / len(written), 3),
        "risk ranking (first-order dominance, paired)": risk.summary(),
        "training (first run only, s CPU)": training_log["cpu_seconds"],
        "stage without training (s CPU)": round(stage_seconds, 1),
    }
    save_json(
        context.output_dir / "larimar_real.json",
        {
            "config": asdict(config),
            "figures": figures,
            "facts": [f.as_dict() for f in written],
            "log_probs": scores,
            "lora": lora,
            "risk": risk.to_dict(),
            "training_log": training_log,
        },
    )
    return StageResult(
        headline=(
            f"recall of {len(written)} unseen facts {recall_empty:.0%} -> {recall_written:.0%} after one memory write "
            f"(SmolLM2 {recall_plain:.0%}); forgotten {recall_forgotten:.0%}, kept {recall_kept:.0%}; "
            f"edit {'' if lora['reached'] else '>= '}{speedup:.0f}x faster than LoRA"
        ),
        figures=figures,
        plots=plots,
        details=(
            "A Larimar built from the real all-MiniLM-L6-v2 encoder and SmolLM2-135M-Instruct decoder "
            "(`LarimarForCausalLM.from_encoder_decoder_pretrained`), trained briefly on synthetic fact episodes "
            "(frozen encoder, LoRA on the decoder, merged), writes facts whose prompts it never saw into its episodic "
            "memory without a gradient step, then forgets some. Recall is exact match of the greedy answer; the "
            "log-probability of the correct answer is compared by relative first-order stochastic dominance "
            "(hf_ext.risk).\n\n" + risk.to_markdown()
        ),
        samples={name: [float(v) for v in values] for name, values in scores.items()},
        samples_description="log-probability of a written fact's answer",
    )


STAGE = DemoStage(name="larimar", title="Larimar: MiniLM + SmolLM2 memory edits (real offline models)", run=run_real)


def run_real_natural(
    context: DemoContext, recipe: RealLarimarRecipe | None = None, num_facts: int = 32
) -> StageResult:
    """The natural-facts stage: CounterFact-style edits written in one shot and "the decoder stays itself"
    ([`examples.larimar.natural.measure_model`]) for the Larimar of `recipe` (`NATURAL_RECIPE` by default)."""
    import json

    import torch

    from examples.larimar.model import NATURAL_RECIPE, real_larimar_dir
    from examples.larimar.natural import measure_model
    from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
    from hf_ext.larimar.processing_larimar import LarimarProcessor
    from hf_ext.serialization import save_json

    recipe = recipe or NATURAL_RECIPE
    torch.manual_seed(context.seed)
    path = real_larimar_dir(recipe)  # trained once (minutes of CPU), then cached
    training_log = json.loads((path / "training_log.json").read_text(encoding="utf-8"))
    model = LarimarForCausalLM.from_pretrained(path).eval()
    processor = LarimarProcessor.from_pretrained(path)
    result = measure_model(model, processor, num_facts=num_facts)
    cf = result["counterfact"]
    figures = {
        "facts written at once (subjects and new objects never in training)": cf["num_records"],
        "rewrite, exact match": round(cf["rewrite_exact"], 3),
        "rewrite, P(new) > P(old)": round(cf["rewrite_score"], 3),
        "paraphrase, exact match": round(cf["paraphrase_exact"], 3),
        "paraphrase, P(new) > P(old)": round(cf["paraphrase_score"], 3),
        "locality: neighbourhood answers unchanged": round(cf["neighbourhood_exact"], 3),
        "locality: neighbourhood P(old) > P(new) unchanged": round(cf["neighbourhood_score"], 3),
        "empty memory: greedy answers equal to SmolLM2's": round(result["agreement"], 3),
        "empty memory: perplexity / SmolLM2's": round(result["perplexity_ratio"], 3),
        "training (first run only, s CPU)": training_log["cpu_seconds"],
    }
    for name, value in figures.items():
        context.log(f"{name}: {value}")
    save_json(
        context.output_dir / "larimar_natural.json",
        {"recipe": asdict(recipe), "figures": figures, "measurements": result, "training_log": training_log},
    )
    return StageResult(
        headline=(
            f"{cf['num_records']} natural counterfactual facts written at once: rewrite {cf['rewrite_exact']:.0%}, "
            f"paraphrase {cf['paraphrase_exact']:.0%}, locality {cf['neighbourhood_exact']:.0%}; empty memory agrees "
            f"with SmolLM2 on {result['agreement']:.0%} of greedy answers"
        ),
        figures=figures,
        details=(
            "A Larimar of all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (both frozen) with the context read-out: a "
            "prompt addresses the memory and the text of the fact it addresses is placed before it; the addressing "
            "was trained on natural facts (hf_ext.testing.larimar_natural) and its scope calibrated on training "
            "subjects. Measured with hf_ext.larimar.evaluation.evaluate_counterfact on edits whose subjects and new "
            "objects never occur in training."
        ),
    )


NATURAL_STAGE = DemoStage(
    name="larimar-natural",
    title="Larimar: natural counterfactual facts (MiniLM + SmolLM2, context read-out)",
    run=run_real_natural,
)
