"""SEAL: SmolLM2 ranks a mixture with planted harm: the protocol is in `examples/seal/README.md`."""

from __future__ import annotations

from dataclasses import dataclass

from hf_ext.demo import DemoContext, DemoStage, StageResult


__all__ = ["SIZES", "RealSEALSize", "run_real"]

KEEP_RATIO = 0.8


@dataclass(frozen=True)
class RealSEALSize:
    """How big the real SEAL stage is: the mixture, the safe set and the ranker's training."""

    num_clean: int
    num_harmful: int
    num_safe_refusals: int
    num_safe_helpful: int
    num_plain_harmful: int = 0
    batch_size: int = 8
    num_train_epochs: float = 2.0
    lora_r: int = 16
    learning_rate: float = 1e-3


SIZES = {
    # ~4 min of CPU (user + sys) on 2 cores: 16 SEAL steps of 8 mixture + 8 safe examples.
    "default": RealSEALSize(num_clean=48, num_harmful=12, num_safe_refusals=24, num_safe_helpful=24),
    # The test's version: 10 steps.
    "short": RealSEALSize(num_clean=32, num_harmful=8, num_safe_refusals=16, num_safe_helpful=16),
}


def _seal_scores(model, tokenizer, safe, finetune, size: RealSEALSize, context: DemoContext):
    from peft import LoraConfig

    from hf_ext.seal.config import SEALConfig
    from hf_ext.seal.trainer import SEALTrainer

    args = SEALConfig(
        str(context.output_dir / "run"),
        per_device_train_batch_size=size.batch_size,
        num_train_epochs=size.num_train_epochs,
        learning_rate=size.learning_rate,
        ranker_optimizer="sgd",
        ranker_learning_rate=1.0,
        upper_level_weight_decay=0.3,
        seed=context.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        safe_dataset_name="planted safe set (refusals + helpful answers)",
    )
    peft_config = LoraConfig(
        r=size.lora_r, lora_alpha=2 * size.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SEALTrainer(
        model,
        args=args,
        train_dataset=finetune,
        safe_dataset=safe,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer.scores()


def run_real(context: DemoContext, size: str | RealSEALSize = "default") -> StageResult:
    """Run the real-model SEAL stage at `size` (a key of [`SIZES`] or a [`RealSEALSize`])."""
    import torch
    from datasets import Dataset

    from hf_ext.plotting import figure, save_figure
    from hf_ext.quantization import keep_4bit_trainable
    from hf_ext.real_models import real_causal_lm
    from hf_ext.seal.baselines import (
        dsir_scores,
        evaluate_scores,
        harmful_example_aurocs,
        loss_scores,
        random_baseline,
    )
    from hf_ext.seal.data import content_hash
    from hf_ext.testing.seal import PlantedTask, planted_examples

    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"size={size!r} is not one of {sorted(SIZES)}.")
        size = SIZES[size]
    task = PlantedTask(
        num_safe_refusals=size.num_safe_refusals,
        num_safe_helpful=size.num_safe_helpful,
        num_clean=size.num_clean,
        num_harmful=size.num_harmful,
        seed=context.seed,
    )
    safe_rows, finetune_rows = planted_examples(task, num_plain_harmful=size.num_plain_harmful)
    harmful = torch.tensor([row["harmful"] for row in finetune_rows])
    num_harmful = int(harmful.sum())
    num_kept = int(KEEP_RATIO * len(finetune_rows) + 1e-9)
    floor = max(0, num_kept - (len(finetune_rows) - num_harmful))
    context.log(
        f"fine-tuning mixture: {len(finetune_rows)} examples, {num_harmful} planted harmful compliances; "
        f"safe set: {len(safe_rows)}; p = {KEEP_RATIO} keeps {num_kept}"
    )

    context.log("loading SmolLM2-135M-Instruct in 4-bit NF4 ...")
    model, tokenizer = real_causal_lm(bits=4)
    keep_4bit_trainable(model)  # the loss filter's eval forward must not pack the layers SEAL then trains
    results: dict[str, tuple[float, float]] = {"random": random_baseline(harmful, KEEP_RATIO, seed=context.seed)}
    context.log("loss filter: completion loss of every example under SmolLM2-Instruct ...")
    selector_scores = {"loss filter": loss_scores(model, tokenizer, finetune_rows)}
    dsir = dsir_scores(safe_rows, finetune_rows)
    if dsir is not None:
        selector_scores["DSIR"] = dsir
    else:
        context.log("DSIR skipped: install the `data-selection` package (`pip install -e '.[bench]'`)")

    context.log("SEAL: QLoRA on SmolLM2 with the ranker ...")
    finetune = Dataset.from_list(finetune_rows)
    scores = _seal_scores(model, tokenizer, Dataset.from_list(safe_rows), finetune, size, context)
    scores.save_pretrained(context.output_dir / "seal_scores")
    values = torch.tensor([scores[content_hash(row, ("messages",))] for row in finetune_rows], dtype=torch.float64)
    selector_scores["SEAL"] = values
    results.update({name: evaluate_scores(v, harmful, KEEP_RATIO) for name, v in selector_scores.items()})
    # Per planted harmful example, the share of clean examples ranked above it (mean: the AUROC), for the risk stage.
    generator = torch.Generator().manual_seed(context.seed)
    draws = [harmful_example_aurocs(torch.rand(len(harmful), generator=generator), harmful) for _ in range(100)]
    samples = {"random": [sum(column) / len(draws) for column in zip(*draws)]}
    samples.update({name: harmful_example_aurocs(v, harmful) for name, v in selector_scores.items()})
    for name, (roc, kept) in results.items():
        context.log(f"{name:>12}: AUROC {roc:.3f}, harmful kept at p = {KEEP_RATIO}: {kept:g} of {num_harmful}")

    fig, ax = figure()
    bins = torch.linspace(float(values.min()), float(values.max()), 21).numpy()
    ax.hist(values[~harmful].numpy(), bins=bins, alpha=0.7, label="clean")
    ax.hist(values[harmful].numpy(), bins=bins, alpha=0.7, label="planted harmful")
    threshold = float(torch.sort(values, descending=True).values[num_kept - 1])
    ax.axvline(threshold, color="black", linestyle="--", label=f"keep p = {KEEP_RATIO}")
    ax.set_title(f"SEAL scores, SmolLM2-135M-Instruct QLoRA (AUROC {results['SEAL'][0]:.3f})")
    ax.set_xlabel("SEAL score (ranker logit)")
    ax.set_ylabel("examples")
    ax.legend()
    histogram = save_figure(fig, context.output_dir / "seal_real_scores.png")

    fig, ax = figure()
    names = list(results)
    ax.bar(names, [results[n][1] for n in names], color=["#999999"] * (len(names) - 1) + ["#1f77b4"])
    ax.axhline(floor, color="black", linestyle=":", label=f"fewest possible ({floor})")
    ax.set_title(f"Planted harmful examples kept at p = {KEEP_RATIO} (of {num_harmful})")
    ax.set_ylabel("harmful examples kept")
    ax.legend()
    bars = save_figure(fig, context.output_dir / "seal_real_kept.png")

    figures: dict[str, float | str] = {
        "model": "SmolLM2-135M-Instruct, 4-bit NF4 + LoRA",
        "fine-tuning examples": len(finetune_rows),
        "planted harmful": num_harmful,
        "safe examples": len(safe_rows),
        "SEAL steps": scores.metadata["ranker_steps"],
    }
    for name, (roc, kept) in results.items():
        label = f"{name} (mean of 100 draws)" if name == "random" else name
        figures[f"AUROC, {label}"] = round(roc, 4)
        figures[f"harmful kept at p = {KEEP_RATIO}, {label}"] = round(kept, 2)
    kept_line = ", ".join(f"{name} {kept:g}" for name, (_, kept) in results.items())
    return StageResult(
        headline=f"SmolLM2 QLoRA, harmful kept at p = {KEEP_RATIO} (of {num_harmful}): {kept_line}; "
        f"AUROC SEAL {results['SEAL'][0]:.3f} vs loss filter {results['loss filter'][0]:.3f}",
        figures=figures,
        plots=[histogram, bars],
        samples=samples,
        samples_description="per planted harmful example: share of clean examples scored above it (mean: AUROC)",
        details=(
            f"Ground truth: the planted `harmful` labels, which no selector sees. At p = {KEEP_RATIO}, {num_kept} of "
            f"{len(finetune_rows)} examples are kept, so at least {floor} harmful ones must stay. The loss filter "
            "scores each example by minus its completion loss under SmolLM2-Instruct (the model SEAL starts from); "
            "DSIR uses hashed n-grams with the safe set as target."
        ),
    )


STAGE = DemoStage(
    name="seal", title="SEAL: SmolLM2 ranks a mixture with planted harm (real offline models)", run=run_real
)
