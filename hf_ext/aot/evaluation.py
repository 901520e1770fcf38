"""Held-out evaluation of preference alignment: completion log-probabilities and dominance figures."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .losses import dominance_diagnostics


__all__ = ["completion_logps", "preference_report", "preference_scores"]


@torch.no_grad()
def completion_logps(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
    add_eos: bool = True,
) -> torch.Tensor:
    """Summed log-probabilities `log π(y|x)` of each completion given its prompt (plain text), tokenized as
    [`~hf_ext.aot.AOTTrainer`] tokenizes them (the completion followed by the EOS token).

    Returns a float32 CPU tensor with one entry per (prompt, completion).
    """
    from trl.data_utils import common_prefix_length

    from .data import DataCollatorForAOT

    if len(prompts) != len(completions):
        raise ValueError(f"Got {len(prompts)} prompts for {len(completions)} completions; expected as many.")
    eos = tokenizer.eos_token if add_eos else ""
    collator = DataCollatorForAOT(pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    examples = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion + ("" if completion.endswith(eos) else eos))["input_ids"]
        cut = common_prefix_length(prompt_ids, full_ids)
        examples.append({"prompt_ids": full_ids[:cut], "completion_ids": full_ids[cut:]})
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = collator(examples[start : start + batch_size])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            token_logps = torch.log_softmax(logits.float(), dim=-1)
            token_logps = token_logps.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
            results.append((token_logps * batch["completion_mask"][:, 1:]).sum(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(results) if results else torch.zeros(0)


def preference_scores(model, tokenizer, dataset, *, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """`log π(y⁺|x)` and `log π(y⁻|x)` for every pair of a paired, standard-format dataset (`prompt` / `chosen` /
    `rejected`)."""
    prompts = list(dataset["prompt"])
    chosen = completion_logps(model, tokenizer, prompts, list(dataset["chosen"]), batch_size=batch_size)
    rejected = completion_logps(model, tokenizer, prompts, list(dataset["rejected"]), batch_size=batch_size)
    return chosen, rejected


def preference_report(chosen: torch.Tensor, rejected: torch.Tensor, *, paired: bool = True) -> dict[str, float]:
    """How well scores of chosen completions dominate those of rejected ones.

    Returns [`~hf_ext.aot.losses.dominance_diagnostics`] of `(chosen, rejected)` (`violation_fraction`,
    `ot_violation`, `quantile_gap_{10,50,90}`) and, for paired scores, `accuracy`: the fraction of pairs whose chosen
    completion scores higher.
    """
    report = dominance_diagnostics(chosen, rejected)
    if paired:
        if chosen.shape != rejected.shape:
            raise ValueError(
                f"Paired scores need equal shapes; got {tuple(chosen.shape)} and {tuple(rejected.shape)}."
            )
        report["accuracy"] = (chosen > rejected).float().mean().item()
    return report
