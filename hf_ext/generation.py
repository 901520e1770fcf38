"""Batched greedy generation, as the evaluations and the real-model stages read a model's answers."""

from __future__ import annotations

import torch


__all__ = ["greedy_answers"]


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """The greedy continuation of each text prompt, without special tokens.

    Prompts go in left-padded batches of `batch_size`, with the model in eval mode; the model's mode and the
    tokenizer's padding side are restored afterwards.
    """
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            answers += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers
