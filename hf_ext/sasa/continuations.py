"""`sample_continuations`: continuations of prompts sampled with `generate`, and their perplexity under the model.

What [`SASAProbe.fit_from_judge`] (the model's own text to label), [`evaluate_detox`], [`choose_beta`] and
[`check_steering`] sample with. Sampling with SASA goes through the processor's own nucleus: `generate` then gets
the processor's [`~SASALogitsProcessor.sampling_kwargs`] (its temperature, no `top_p` / `top_k` of its own), so
that no second cut changes the distribution SASA hands it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList

from hf_ext._validation import check_range

from .._checks import check_tokenizer_fits
from ._inputs import text_list
from .hidden_states import positions_from_mask


__all__ = ["Continuations", "sample_continuations"]


@dataclass
class Continuations:
    """Sampled continuations and their fluency under the model that sampled them.

    Args:
        texts (`list[list[str]]`): `k` continuations per prompt.
        perplexity (`np.ndarray` of shape `(num_prompts, k)`): `exp(mean token NLL)` of each continuation.
        num_tokens (`np.ndarray` of shape `(num_prompts, k)`): Tokens scored per continuation (up to its EOS).
    """

    texts: list[list[str]]
    perplexity: np.ndarray
    num_tokens: np.ndarray

    @property
    def corpus_perplexity(self) -> float:
        """`exp(total NLL / total tokens)` over all continuations."""
        ok = np.isfinite(self.perplexity) & (self.num_tokens > 0)
        return float(np.exp((np.log(self.perplexity[ok]) * self.num_tokens[ok]).sum() / self.num_tokens[ok].sum()))


@torch.no_grad()
def sample_continuations(
    model,
    tokenizer,
    prompts: Sequence[str],
    logits_processor: Sequence | None = None,
    *,
    num_continuations: int = 1,
    max_new_tokens: int = 20,
    top_p: float = 0.9,
    temperature: float | None = None,
    sasa: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    generation_kwargs: dict | None = None,
    show_progress: bool = False,
    desc: str = "sampling",
) -> Continuations:
    """Sample `num_continuations` continuations per prompt and score their perplexity under `model` itself.

    Without `sasa`, sampling is nucleus sampling (`top_p` at `temperature`, 1.0 by default) with the given extra
    processors. With `sasa`, the processors must contain a [`SASALogitsProcessor`], which already restricts sampling
    to its nucleus: `generate` gets its [`~SASALogitsProcessor.sampling_kwargs`] (its temperature, no `top_p` or
    `top_k` of its own) and `top_p` is not used. Seeded per batch, so every setting sees the same random stream; the
    caller's RNG state is restored afterwards.

    Args:
        generation_kwargs (`dict`, *optional*): Further options of `generate`. With `sasa`, one that would cut or
            rescale SASA's distribution again (`top_p`, `top_k` below the candidate cap, another `temperature`,
            `min_p`, ...) is a `ValueError` naming it.

    Returns:
        [`Continuations`]: `num_continuations` texts per prompt, their perplexities and token counts.

    Raises:
        `ValueError`: a bad setting, `sasa` without a SASA processor, or a `temperature` other than the SASA
            processor's.
    """
    prompts = text_list("prompts", prompts, allow_empty=True)
    check_range("num_continuations", num_continuations, ge=1, integer=True)
    check_range("max_new_tokens", max_new_tokens, ge=1, integer=True)
    check_range("batch_size", batch_size, ge=1, integer=True)
    check_range("temperature", temperature, gt=0, optional=True)
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` first.")
    check_tokenizer_fits(tokenizer, model, tokenizer_name="tokenizer")
    processors = list(logits_processor or [])
    extra = dict(generation_kwargs or {})
    if sasa:
        nucleus = [p for p in processors if hasattr(p, "sampling_kwargs")]
        if not nucleus:
            raise ValueError("sasa=True needs a SASALogitsProcessor among the logits processors.")
        if temperature is not None:
            extra.setdefault("temperature", temperature)
        sampling = nucleus[0].sampling_kwargs(**extra)  # raises for options that would cut SASA's distribution
    else:
        sampling = {"do_sample": True, "temperature": temperature or 1.0, "top_p": top_p, "top_k": 0, **extra}
    device = _device_of(model)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[list[str]] = []
    perplexities, counts = [], []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            starts = range(0, len(prompts), batch_size)
            for index, start in enumerate(tqdm(starts, desc=desc, disable=not show_progress, leave=False)):
                batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
                for processor in processors:
                    if hasattr(processor, "reset"):
                        processor.reset()
                torch.manual_seed(seed * 100_003 + index)
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_continuations,
                    logits_processor=LogitsProcessorList(processors),
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
                prompt_mask = batch["attention_mask"].repeat_interleave(num_continuations, dim=0)
                new = output[:, prompt_mask.shape[1] :]
                new_mask = continuation_mask(new, tokenizer.eos_token_id)
                ppl = perplexity(model, output, torch.cat([prompt_mask, new_mask], dim=1), prompt_mask.shape[1])
                perplexities.append(ppl.view(-1, num_continuations).cpu())
                counts.append(new_mask.sum(-1).view(-1, num_continuations).cpu())
                decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
                texts += [decoded[i : i + num_continuations] for i in range(0, len(decoded), num_continuations)]
    finally:
        tokenizer.padding_side = old_side
    return Continuations(texts, torch.cat(perplexities).double().numpy(), torch.cat(counts).numpy())


def _device_of(model) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def continuation_mask(new: torch.Tensor, eos_token_id) -> torch.Tensor:
    """1 on generated tokens up to and including the first EOS, 0 on the padding after it."""
    eos = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    is_eos = torch.zeros_like(new, dtype=torch.bool)
    for e in eos:
        if e is not None:
            is_eos |= new == e
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after_eos).long()


def perplexity(model, sequences: torch.Tensor, mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """`exp(mean NLL)` under `model` of each row's tokens after `prompt_length` (those `mask` keeps); NaN for a row
    with none."""
    logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    logprobs = torch.log_softmax(logits[:, prompt_length - 1 : -1].float(), dim=-1)
    targets = sequences[:, prompt_length:]
    nll = -logprobs.gather(-1, targets[..., None])[..., 0]
    weights = mask[:, prompt_length:].float()
    count = weights.sum(-1)
    mean_nll = (nll * weights).sum(-1) / count.clamp(min=1)
    return torch.where(count > 0, mean_nll.exp(), torch.full_like(mean_nll, float("nan")))
