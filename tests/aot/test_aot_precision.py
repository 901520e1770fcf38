"""AOT in bfloat16 and float16 (CPU autocast, and half-precision weights) against float32: loss and gradients.

Tolerances. A half-precision forward rounds every activation to 8 (bf16) or 11 (fp16) significant bits (relative
2^-9 / 2^-12 per rounding); the summed completion log-probabilities and the sorted log-ratio differences the loss
compares inherit errors of that order times the depth. Measured on this batch: |loss - loss32| = 9e-4 (bf16 autocast),
6e-4 (bf16 weights), 4e-6 / 7e-5 (fp16); relative gradient error ||g - g32|| / ||g32|| = 0.5% / 0.8% (bf16),
0.06% / 0.1% (fp16). The bounds are ~5x those: 5e-3 and 4% for bf16, 1e-3 and 1% for fp16, while a wrong sign,
scale or pairing in the loss moves it by > 1e-2 and the gradient by > 10%.
"""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_ext.aot import AOTConfig, AOTTrainer
from hf_ext.testing.aot import synthetic_preference_dataset


BOUNDS = {torch.bfloat16: (5e-3, 0.04), torch.float16: (1e-3, 0.01)}


@pytest.fixture(scope="module")
def reference(tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _loss_and_gradient(path, reference, tmp_path, variant, weights_dtype=torch.float32, autocast=None):
    dataset = synthetic_preference_dataset(8, seed=3)
    if variant == "unpaired":
        dataset = dataset.map(
            lambda row, i: {"completion": row["chosen"] if i % 3 else row["rejected"], "label": bool(i % 3)},
            with_indices=True,
            remove_columns=["chosen", "rejected"],
        )
    trainer = AOTTrainer(
        AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype),
        ref_model=copy.deepcopy(reference).to(weights_dtype),
        args=AOTConfig(
            str(tmp_path),
            aot_variant=variant,
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            per_device_train_batch_size=8,
            beta=0.5,
            gradient_checkpointing=False,
            dataloader_pin_memory=False,
        ),
        train_dataset=dataset,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.model.train()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = [p.grad.float().flatten() for p in trainer.model.parameters() if p.grad is not None]
    return loss.float().item(), torch.cat(grads)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paired", "unpaired"])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["autocast", "weights"])
def test_half_precision_matches_float32(tiny_llama_path, reference, tmp_path, variant, half, mode):
    loss32, grad32 = _loss_and_gradient(tiny_llama_path, reference, tmp_path / "fp32", variant)
    kwargs = {"autocast": half} if mode == "autocast" else {"weights_dtype": half}
    loss, grad = _loss_and_gradient(tiny_llama_path, reference, tmp_path / "half", variant, **kwargs)
    loss_bound, grad_bound = BOUNDS[half]
    assert abs(loss32 - 0.6931) > 1e-3  # an informative loss: the reference differs from the policy
    assert 0 < abs(loss - loss32) <= loss_bound  # > 0: the half-precision path really ran
    assert torch.isfinite(grad).all() and (grad - grad32).norm() / grad32.norm() <= grad_bound
