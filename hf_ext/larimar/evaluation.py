"""Measuring what a Larimar recalls: exact-match answers to fact prompts."""

from __future__ import annotations

import torch


__all__ = ["answer", "exact_match_recall"]


@torch.no_grad()
def answer(
    model,
    processor,
    prompts: list[str],
    *,
    memory_latent: torch.Tensor | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 64,
) -> list[str]:
    """Greedy continuations of `prompts` (up to the end-of-sequence token), stripped.

    The memory is read with the prompts themselves (scope detection included) unless `memory_latent` is given.
    """
    results = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        inputs = processor(chunk).to(model.device)
        kwargs = {}
        if memory_latent is not None:
            kwargs["memory_latent"] = memory_latent[start : start + batch_size]
            inputs.pop("encoder_input_ids")
            inputs.pop("encoder_attention_mask")
        tokenizer = processor.decoder_tokenizer
        generated = model.generate(
            **inputs,
            **kwargs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        results += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return results


def exact_match_recall(model, processor, facts, *, memory_latent: torch.Tensor | None = None) -> float:
    """Fraction of `facts` (with `.prompt` and `.object`) whose prompt is answered with exactly the object."""
    if not facts:
        raise ValueError("facts is empty.")
    answers = answer(model, processor, [f.prompt for f in facts], memory_latent=memory_latent)
    return sum(a == f.object for a, f in zip(answers, facts)) / len(facts)
