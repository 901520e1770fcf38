"""SEAL in bfloat16 and float16 (CPU autocast, and half-precision weights) against float32: the loss, the per-example
losses the ranker learns from, and the gradients.

Tolerances. The per-token cross-entropy is computed in float32 from the half-precision logits (see
`sequence_losses`), so the error is the forward's: activations rounded to 8 (bf16) / 11 (fp16) significant bits.
Measured on this batch (autocast / half weights): relative loss error 5e-6 / 7e-4 (bf16), 7e-5 / 2e-5 (fp16); largest
relative per-example loss error 0.50% / 0.59% (bf16), 0.08% / 0.08% (fp16); relative gradient error 1.5% / 2.0%
(bf16), 1.2% / 1.2% (fp16). The bounds, 2% / 0.5% on the losses and 8% / 4% on the gradient, are 3-4x the
measured errors and below what a wrong mask (prompt tokens counted), a wrong weighting or a dropped safe batch
changes (tens of percent on the planted task, whose fine-tuning losses range over 0.2-7).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_ext.seal import SEALConfig, SEALTrainer
from hf_ext.seal.ranking import sequence_losses


BOUNDS = {torch.bfloat16: (0.02, 0.08), torch.float16: (0.005, 0.04)}


def _run(aligned_path, planted_data, tmp_path, weights_dtype=torch.float32, autocast=None):
    safe, finetune = planted_data
    trainer = SEALTrainer(
        AutoModelForCausalLM.from_pretrained(aligned_path, dtype=weights_dtype),
        args=SEALConfig(
            str(tmp_path),
            per_device_train_batch_size=8,
            upper_level_weight=0.7,
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            save_strategy="no",
        ),
        train_dataset=finetune.select(range(8)),
        safe_dataset=safe,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.model.train()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = trainer.compute_loss(trainer.model, batch)
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_example, _ = sequence_losses(logits.detach(), batch["input_ids"], batch["completion_mask"])
    loss.backward()
    grad = torch.cat([p.grad.float().flatten() for p in trainer.model.parameters() if p.grad is not None])
    return loss.float().detach(), per_example, grad, logits.dtype


@pytest.mark.slow
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["autocast", "weights"])
def test_half_precision_matches_float32(aligned_path, planted_data, tmp_path, half, mode):
    loss32, losses32, grad32, _ = _run(aligned_path, planted_data, tmp_path / "fp32")
    kwargs = {"autocast": half} if mode == "autocast" else {"weights_dtype": half}
    loss, losses, grad, logits_dtype = _run(aligned_path, planted_data, tmp_path / "half", **kwargs)
    loss_bound, grad_bound = BOUNDS[half]
    assert logits_dtype == half and losses.dtype == torch.float32  # the loss math stays in float32
    assert 0 < abs(loss - loss32) / loss32 <= loss_bound
    assert ((losses - losses32).abs() / losses32).max() <= loss_bound
    assert torch.isfinite(grad).all() and (grad - grad32).norm() / grad32.norm() <= grad_bound
