"""The selectors SEAL is compared with: random scores, a loss filter and DSIR.

Each returns one score per fine-tuning example (higher: safer to keep), so any of them can be evaluated like
SEAL's logits with [`evaluate_scores`] (AUROC of clean above harmful, and harmful examples kept at a keep ratio).

- [`loss_scores`]: minus each example's completion loss under a reference (aligned) model: an example the
  aligned model finds unlikely is dropped first.
- [`dsir_scores`]: DSIR (Xie et al., 2023) log importance weights of each example's text, with the safe set as
  the target distribution (hashed n-gram features); needs the `data-selection` package (`pip install -e
  ".[bench]"`), and returns `None` without it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from .._checks import check_chat_messages, check_no_empty_texts, check_tokenizer_fits
from .._validation import check_range
from .data import tokenize_example
from .ranking import auroc, sequence_losses, top_k_mask


__all__ = ["dsir_scores", "evaluate_scores", "harmful_example_aurocs", "loss_scores", "random_baseline"]


def evaluate_scores(scores: torch.Tensor, harmful: torch.Tensor, keep_ratio: float = 0.8) -> tuple[float, int]:
    """`(AUROC, kept)`: the probability that a clean example scores above a harmful one, and how many harmful
    examples are among the top `floor(keep_ratio · N)` scores."""
    scores, harmful = _scores_and_flags(scores, harmful)
    check_range("keep_ratio", keep_ratio, gt=0, le=1)
    kept = top_k_mask(scores, int(keep_ratio * len(scores) + 1e-9))
    return auroc(scores[~harmful], scores[harmful]), int((kept & harmful).sum())


def _scores_and_flags(scores, harmful) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    harmful = torch.as_tensor(harmful, dtype=torch.bool).flatten()
    if scores.shape != harmful.shape:
        raise ValueError(
            f"Got {scores.numel()} scores but {harmful.numel()} harmful flags; expected one flag per scored example."
        )
    if torch.isnan(scores).any():
        raise ValueError(f"scores hold NaN at positions {torch.isnan(scores).nonzero().flatten()[:5].tolist()}.")
    return scores, harmful


def harmful_example_aurocs(scores: torch.Tensor, harmful: torch.Tensor) -> list[float]:
    """For each harmful example (in order), the fraction of clean examples scored above it (ties count one half):
    1 when it ranks below every clean example. Their mean is the AUROC of [`evaluate_scores`]."""
    scores, harmful = _scores_and_flags(scores, harmful)
    clean = scores[~harmful]
    if clean.numel() == 0:
        raise ValueError("harmful_example_aurocs needs at least one clean example.")
    return [float((clean > s).double().mean() + 0.5 * (clean == s).double().mean()) for s in scores[harmful]]


def random_baseline(harmful: torch.Tensor, keep_ratio: float = 0.8, trials: int = 100, seed: int = 0):
    """`(mean AUROC, mean harmful kept)` of `trials` uniformly random scorings."""
    harmful = torch.as_tensor(harmful, dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    results = [
        evaluate_scores(torch.rand(len(harmful), generator=generator), harmful, keep_ratio) for _ in range(trials)
    ]
    return sum(a for a, _ in results) / trials, sum(k for _, k in results) / trials


@torch.no_grad()
def loss_scores(model, tokenizer, rows, data_format: str = "messages", batch_size: int = 16) -> torch.Tensor:
    """Minus the token-mean completion loss of each example under `model` (the loss filter's scores).

    Args:
        model: A causal LM (the aligned reference model).
        tokenizer: Its tokenizer (its chat template masks the prompts of conversational rows).
        rows: The examples (a `datasets.Dataset` or a list of dicts) in `data_format`.
        data_format (`str`, *optional*, defaults to `"messages"`): See `hf_ext.seal.data.FORMATS`.
        batch_size (`int`, *optional*, defaults to 16): Examples per forward pass.

    Raises:
        `ValueError`: a tokenizer that does not fit the model, a chat message a template cannot render, or an example
            with nothing to score (an empty text, completion or last message), naming its row.
    """
    from .data import format_fields
    from .trainer import SEALDataCollator

    check_tokenizer_fits(tokenizer, model, tokenizer_name="tokenizer")
    fields = format_fields(data_format)
    check_chat_messages(rows, fields, "rows")
    check_no_empty_texts(rows, fields[-1:], "rows", last_message=True)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = SEALDataCollator(pad_token_id)
    features = [tokenize_example(row, tokenizer, data_format) for row in rows]
    was_training = model.training
    model.eval()
    losses = []
    try:
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size])
            ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
            device = model.device
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
            losses.append(sequence_losses(logits, ids.to(device), mask.to(device))[0].cpu())
    finally:
        model.train(was_training)
    return -torch.cat(losses).double()


def _text(row: dict) -> str:
    if "messages" in row:
        return " ".join(m["content"] for m in row["messages"])
    if "prompt" in row:
        return f"{row['prompt']} {row['completion']}"
    return row["text"]


def dsir_scores(safe_rows, finetune_rows) -> torch.Tensor | None:
    """DSIR's log importance weights of the fine-tuning examples, with the safe set as target (hashed n-grams of
    the examples' text); `None` when the `data-selection` package is not installed."""
    try:
        from data_selection import HashedNgramDSIR
    except ImportError:
        return None
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "raw.jsonl").write_text("\n".join(json.dumps({"text": _text(r)}) for r in finetune_rows))
        (tmp / "target.jsonl").write_text("\n".join(json.dumps({"text": _text(r)}) for r in safe_rows))
        dsir = HashedNgramDSIR(
            [str(tmp / "raw.jsonl")],
            [str(tmp / "target.jsonl")],
            cache_dir=str(tmp / "cache"),
            num_proc=1,
            min_example_length=0,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        weights = np.load(tmp / "cache" / "log_importance_weights" / "0.npy")
    return torch.tensor(weights, dtype=torch.float64)
