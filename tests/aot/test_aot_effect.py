"""The effect, measured: AOT makes held-out chosen rewards dominate rejected ones on a synthetic preference task."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ext.aot import AOTConfig, AOTTrainer
from hf_ext.aot.evaluation import preference_report, preference_scores
from hf_ext.testing.aot import synthetic_preference_dataset
from tests.portable import SEED, expect


@pytest.fixture(scope="module")
def held_out_before(tiny_llama_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    held_out = synthetic_preference_dataset(64, split="test")
    chosen, rejected = preference_scores(AutoModelForCausalLM.from_pretrained(tiny_llama_path), tokenizer, held_out)
    return tokenizer, held_out, preference_report(chosen, rejected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "train_dataset", "cost"),
    [
        ("paired", synthetic_preference_dataset(256, split="train"), "logistic"),
        # KTO-style rows, 70 % desirable: every batch compares samples of unequal sizes
        (
            "unpaired",
            synthetic_preference_dataset(512, split="train", unpaired=True, positive_fraction=0.7),
            "squared_hinge",
        ),
    ],
)
def test_aot_drives_held_out_dominance_violations_down(
    tmp_path, tiny_llama_path, held_out_before, variant, train_dataset, cost
):
    tokenizer, held_out, before = held_out_before
    # At initialisation the task is unsolved: a third of the quantile levels violate dominance.
    assert before["violation_fraction"] >= 0.2 and before["accuracy"] <= 0.75

    trainer = AOTTrainer(
        str(tiny_llama_path),
        args=AOTConfig(
            str(tmp_path),
            aot_variant=variant,
            aot_cost=cost,
            aot_margin=1.0 if cost != "logistic" else 0.0,
            beta=0.1 if cost != "logistic" else 0.01,
            per_device_train_batch_size=16,
            max_steps=30,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            gradient_checkpointing=False,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=False,
            seed=42 + SEED,
        ),
        train_dataset=train_dataset,
    )
    trainer.train()
    after = preference_report(*preference_scores(trainer.model, tokenizer, held_out))
    expect("violation fraction after", after["violation_fraction"], at_most=0.05)
    expect("accuracy after", after["accuracy"], at_least=0.95)
    expect("OT violation, after over before", after["ot_violation"] / before["ot_violation"], at_most=0.1)
    expect("median quantile gap after (nats)", after["quantile_gap_50"], at_least=2.0)
    assert torch.isfinite(torch.tensor(list(after.values()))).all()
