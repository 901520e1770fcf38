"""Larimar in bfloat16 (bf16 weights, CPU autocast, both) and float16 against float32: the objective's terms, the
memory read-out the decoder is conditioned on, and the gradients of one training step.

Tolerances are a few unit roundoffs of the half-precision format (bfloat16 u = 2^-8 ~ 3.9e-3, float16 u = 2^-11 ~
4.9e-4): the tiny models' activations and gradients pass through a handful of rounded layers, and the measured
errors (read-out 0.25-0.5 % in bf16, 0.05 % in fp16; gradients 1-2 % / 0.2 %) sit a factor 2-4 below them. The
memory math itself runs in float32 (before issue 15 a bf16 episode wrote a memory of exactly 0, read-out error 100 %).
"""

import pytest
import torch

from hf_ext.larimar.modeling_larimar import LarimarForCausalLM
from hf_ext.testing.larimar import evaluation_facts


FACTS = [f.as_dict() for f in evaluation_facts(8, seed=5)]
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
SETTINGS = {
    "bf16-autocast": (torch.float32, torch.bfloat16),
    "bf16-weights": (torch.bfloat16, None),
    "bf16-weights+autocast": (torch.bfloat16, torch.bfloat16),
    "fp16-weights": (torch.float16, None),
}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _step(model, batch, autocast):
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        out = model(**batch)
    out.loss.backward()
    grads = torch.cat([p.grad.double().flatten() for _, p in sorted(model.named_parameters()) if p.grad is not None])
    return out, grads


@pytest.fixture(scope="module")
def checkpoint(larimar_factory, tmp_path_factory):
    # K = 512 slots as in the paper (max(m, n) * eps(bfloat16) = 4: the old cut-off dropped every singular value).
    model = larimar_factory("llama", memory_size=512, deterministic_read=True)
    path = tmp_path_factory.mktemp("larimar-precision")
    model.save_pretrained(path)
    return path


@pytest.mark.effect  # roundoff bounds: other kernels round differently
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_half_precision_training_step_matches_float32(setting, checkpoint, tiny_processor):
    dtype, autocast = SETTINGS[setting]
    half = autocast or dtype
    batch = tiny_processor.episode([r["text"] for r in FACTS], [r["prompt"] for r in FACTS])
    reference, reference_grads = _step(LarimarForCausalLM.from_pretrained(checkpoint), batch, None)
    model = LarimarForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    # The memory and the projections stay in float32 (`_keep_in_fp32_modules`); the encoder and decoder do not.
    assert model.model.memory.prior.dtype == torch.float32 and model.model.decoder.dtype == dtype
    out, grads = _step(model, batch, autocast)
    u = UNIT_ROUNDOFF[half]

    # The read-out the decoder is conditioned on: non-zero, and float32's up to a few roundoffs.
    assert out.memory_latent.norm() > 0.5 * reference.memory_latent.norm()
    assert _rel(out.memory_latent, reference.memory_latent) < 5 * u
    for name in ("loss", "reconstruction_loss", "autoencoder_loss", "no_memory_loss", "query_loss", "kl_loss"):
        torch.testing.assert_close(
            getattr(out, name).double(), getattr(reference, name).double(), rtol=2 * u, atol=0, msg=name
        )
    assert grads.shape == reference_grads.shape
    assert _rel(grads, reference_grads) < 8 * u
