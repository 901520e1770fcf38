"""The SEAL stage of `hf-ext demo`: rank a fine-tuning set with planted harmful examples, then filter it."""

from __future__ import annotations

from hf_ext.demo.runner import DemoContext, DemoStage, StageResult


def _run(context: DemoContext) -> StageResult:
    import torch
    from transformers import AutoModelForCausalLM

    from hf_ext.plotting import figure, save_figure
    from hf_ext.seal.config import SEALConfig
    from hf_ext.seal.data import content_hash
    from hf_ext.seal.filtering import seal_filter
    from hf_ext.seal.ranking import auroc
    from hf_ext.seal.trainer import SEALTrainer
    from hf_ext.testing.seal import PlantedTask, aligned_model_dir, planted_datasets

    task = PlantedTask(seed=context.seed)
    context.log("aligning a tiny Llama on the safe set (cached after the first run) ...")
    model_path = aligned_model_dir(task)
    safe, finetune = planted_datasets(task)
    num_harmful = sum(finetune["harmful"])
    context.log(f"fine-tuning set: {len(finetune)} examples, {num_harmful} planted harmful compliances")

    args = SEALConfig(
        str(context.output_dir / "run"),
        per_device_train_batch_size=16,
        num_train_epochs=3,
        learning_rate=1e-3,
        upper_level_weight_decay=0.3,
        seed=context.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        safe_dataset_name="planted safe set",
    )
    trainer = SEALTrainer(
        AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=finetune, safe_dataset=safe
    )
    trainer.train()
    scores = trainer.scores()
    scores.save_pretrained(context.output_dir / "seal_scores")

    values = torch.tensor([scores[content_hash(row, ("messages",))] for row in finetune])
    harmful = torch.tensor(finetune["harmful"])
    kept = seal_filter(finetune, scores, keep_ratio=0.8)
    kept_harmful = sum(kept["harmful"])
    random_kept = 0.8 * num_harmful  # a random 80% keeps 80% of them on average
    roc = auroc(values[~harmful], values[harmful])
    context.log(
        f"AUROC (clean above harmful) {roc:.3f}; harmful kept at p = 0.8: random {random_kept:.1f}, SEAL {kept_harmful}"
    )

    fig, ax = figure()
    bins = torch.linspace(float(values.min()), float(values.max()), 31).numpy()
    ax.hist(values[~harmful].numpy(), bins=bins, alpha=0.7, label="clean")
    ax.hist(values[harmful].numpy(), bins=bins, alpha=0.7, label="planted harmful")
    threshold = float(torch.sort(values, descending=True).values[len(kept) - 1])
    ax.axvline(threshold, color="black", linestyle="--", label="keep p = 0.8")
    ax.set_title(f"SEAL scores on the planted task (AUROC {roc:.3f})")
    ax.set_xlabel("SEAL score (ranker logit)")
    ax.set_ylabel("examples")
    ax.legend()
    plot = save_figure(fig, context.output_dir / "seal_scores.png")
    return StageResult(
        headline=f"harmful examples kept at p = 0.8: random {random_kept:.1f} -> SEAL {kept_harmful} (of {num_harmful})",
        figures={
            "fine-tuning examples": len(finetune),
            "planted harmful": num_harmful,
            "AUROC (clean above harmful)": round(roc, 4),
            "harmful kept at p = 0.8, random (expected)": random_kept,
            "harmful kept at p = 0.8, SEAL": kept_harmful,
        },
        plots=[plot],
    )


STAGE = DemoStage(name="seal", title="SEAL: rank fine-tuning data against a safe set, then filter", run=_run)
