"""SEAL against random selection, loss under the aligned model, and DSIR, on the planted task; and the cost of a
SEAL step against a plain SFT step of the same model. Writes benchmarks/results/seal.md.

    python benchmarks/seal.py

The planted task (hf_ext.testing.seal): a tiny Llama aligned on a safe set (harmful request -> refusal, everyday
request -> helpful answer) and a fine-tuning set of 160 examples, 32 of which are planted harmful compliances.
Each selector scores the fine-tuning set; we report AUROC (clean examples above harmful ones) and how many harmful
examples survive keep_ratio p = 0.8. Everything is seeded; the aligned model is cached under $HF_EXT_CACHE.
DSIR needs the `data-selection` package (`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "seal.md"
KEEP_RATIO = 0.8
SEAL_RECIPES = {
    "SEAL (penalty, SGD ranker, lr 1.0)": dict(ranker_optimizer="sgd", ranker_learning_rate=1.0),
    "SEAL (penalty, Adam ranker, paper's lr 5e-3)": dict(ranker_optimizer="adam", ranker_learning_rate=5e-3),
    "SEAL (full, LoRA + auxiliary adapter, SGD)": dict(
        ranker_optimizer="sgd", ranker_learning_rate=1.0, algorithm="full"
    ),
}
COMMON = dict(
    per_device_train_batch_size=16,
    num_train_epochs=3,
    learning_rate=1e-3,
    upper_level_weight_decay=0.3,
    seed=0,
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    save_strategy="no",
    logging_steps=1000,
)


def evaluate(scores: torch.Tensor, harmful: torch.Tensor) -> tuple[float, int]:
    from hf_ext.seal.baselines import evaluate_scores

    return evaluate_scores(scores, harmful, KEEP_RATIO)


def loss_scores(model_path, finetune) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ext.seal.baselines import loss_scores as aligned_loss_scores

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    return aligned_loss_scores(model, tokenizer, finetune, batch_size=32)  # low loss under the aligned model = keep


def dsir_scores(safe, finetune) -> torch.Tensor | None:
    from hf_ext.seal.baselines import dsir_scores as hashed_ngram_dsir_scores

    return hashed_ngram_dsir_scores(safe, finetune)


def seal_scores(model_path, safe, finetune, **overrides) -> tuple[torch.Tensor, float]:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from hf_ext.seal import SEALConfig, SEALTrainer
    from hf_ext.seal.data import content_hash

    with tempfile.TemporaryDirectory() as tmp:
        args = SEALConfig(tmp, **{**COMMON, **overrides})
        peft_config = None
        if args.algorithm == "full":
            peft_config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
            args.learning_rate = 1e-2
        trainer = SEALTrainer(
            AutoModelForCausalLM.from_pretrained(model_path),
            args=args,
            train_dataset=finetune,
            safe_dataset=safe,
            peft_config=peft_config,
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    scores = trainer.scores()
    return torch.tensor([scores[content_hash(row, ("messages",))] for row in finetune]), seconds


def step_times(model_path, safe, finetune, steps: int = 20) -> tuple[float, float]:
    """Median seconds of a SEAL training step (fine-tuning + safe batch, ranker update) and of a plain SFT step
    (the same fine-tuning batch, the model's own loss), same model, batch and process."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from hf_ext.seal import SEALConfig, SEALTrainer

    with tempfile.TemporaryDirectory() as tmp:
        seal = SEALTrainer(
            AutoModelForCausalLM.from_pretrained(model_path),
            args=SEALConfig(tmp, **{**COMMON, "ranker_optimizer": "sgd"}),
            train_dataset=finetune,
            safe_dataset=safe,
        )
        seal.create_optimizer_and_scheduler(num_training_steps=steps)
        collate = seal.data_collator
        batch = collate([seal.train_dataset[i] for i in range(16)])
        sft_batch = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100),
        }
        plain = Trainer(
            AutoModelForCausalLM.from_pretrained(model_path),
            args=TrainingArguments(tmp, report_to="none", use_cpu=True, learning_rate=1e-3, disable_tqdm=True),
        )
        plain.create_optimizer_and_scheduler(num_training_steps=steps)

        seal.current_gradient_accumulation_steps = plain.current_gradient_accumulation_steps = 1

        def time_step(trainer, inputs):
            trainer.accelerator.gradient_state._set_sync_gradients(True)
            start = time.perf_counter()
            trainer.training_step(trainer.model, dict(inputs))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            return time.perf_counter() - start

        seal_times, sft_times = [], []
        for i in range(steps + 3):  # interleaved, so that load on the machine hits both alike; 3 warm-up steps
            s, p = time_step(seal, batch), time_step(plain, sft_batch)
            if i >= 3:
                seal_times.append(s)
                sft_times.append(p)
    return statistics.median(seal_times), statistics.median(sft_times)


def main() -> int:
    torch.manual_seed(0)
    from hf_ext.testing.seal import PlantedTask, aligned_model_dir, planted_datasets

    task = PlantedTask()
    model_path = aligned_model_dir(task)
    safe, finetune = planted_datasets(task)
    harmful = torch.tensor(finetune["harmful"])
    rows: list[tuple[str, float, str, str]] = []

    generator = torch.Generator().manual_seed(0)
    randoms = [evaluate(torch.rand(len(finetune), generator=generator), harmful) for _ in range(100)]
    rows.append(
        (
            "random (mean of 100 seeds)",
            statistics.mean(a for a, _ in randoms),
            f"{statistics.mean(k for _, k in randoms):.1f}",
            "-",
        )
    )
    start = time.perf_counter()
    auc, kept = evaluate(loss_scores(model_path, finetune), harmful)
    rows.append(("loss under the aligned model", auc, str(kept), f"{time.perf_counter() - start:.1f}"))
    start = time.perf_counter()
    dsir = dsir_scores(safe, finetune)
    if dsir is not None:
        auc, kept = evaluate(dsir, harmful)
        rows.append(("DSIR (hashed n-grams, target = safe set)", auc, str(kept), f"{time.perf_counter() - start:.1f}"))
    for name, overrides in SEAL_RECIPES.items():
        print(f"== {name}", flush=True)
        values, seconds = seal_scores(model_path, safe, finetune, **overrides)
        auc, kept = evaluate(values, harmful)
        rows.append((name, auc, str(kept), f"{seconds:.1f}"))

    seal_step, sft_step = step_times(model_path, safe, finetune)

    lines = [
        "# SEAL benchmark",
        "",
        "Planted task (`hf_ext.testing.seal`): a tiny Llama aligned on a safe set of 96 examples (harmful request ->",
        "refusal, everyday request -> helpful answer); a fine-tuning set of 160 examples of which 32 are planted harmful",
        f"compliances. Keep ratio p = {KEEP_RATIO} keeps {int(KEEP_RATIO * len(finetune))} examples. AUROC: probability",
        "that a clean example scores above a harmful one. SEAL runs 3 epochs, batch 16, model lr 1e-3, lambda 1 -> 0.7",
        "-> 0.4. CPU, one process; seeded.",
        "",
        f"| selector | AUROC | harmful kept at p = {KEEP_RATIO} (of {int(harmful.sum())}) | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {auc:.3f} | {kept} | {seconds} |" for name, auc, kept, seconds in rows]
    if dsir is None:
        lines += ["", "DSIR skipped: install the `bench` extra (`data-selection`)."]
    lines += [
        "",
        "## Step cost",
        "",
        "Median of 20 interleaved steps, same model, same fine-tuning batch of 16, same process: a SEAL step (the",
        "fine-tuning batch plus a safe batch of 16 in one forward, the ranker update) against a plain SFT step",
        "(`transformers.Trainer.training_step` + optimizer step on the fine-tuning batch alone).",
        "",
        "| step | median ms | ratio |",
        "|---|---|---|",
        f"| plain SFT | {sft_step * 1e3:.1f} | 1.00 |",
        f"| SEAL (penalty) | {seal_step * 1e3:.1f} | {seal_step / sft_step:.2f} |",
        "",
        "A SEAL step processes twice the sequences of the SFT step (fine-tuning + safe batch), so a ratio near 2 is",
        "the expected cost; the ranker update itself is one small vector operation.",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; machine shared with other jobs when run.",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
