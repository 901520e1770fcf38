"""Evaluators for the alpha sweep: callables `(model, tokenizer) -> EvaluationResult`.

Two defaults run offline on any causal LM, 4-bit ones included:

- [`PerplexityEvaluator`]: perplexity of reference completions (or texts) of a `datasets.Dataset` — on a safety
  set (harmful prompts with safe answers: lower means safer) and on a domain set (domain questions with correct
  answers: lower means more knowledgeable);
- [`GenerationEvaluator`]: greedy generation scored per sample by a function of the completion (a refusal
  detector, an exact-answer match).

Any callable returning an [`EvaluationResult`] (or a float, read as higher-is-better) can be used instead.
Every result keeps its per-sample scores, so that candidates can be compared by their whole distributions and
not only by their means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hf_ext._validation import check_range

from ..generation import greedy_answers


__all__ = ["EvaluationResult", "GenerationEvaluator", "PerplexityEvaluator", "as_evaluation_result"]


@dataclass
class EvaluationResult:
    """What an evaluator returns.

    Args:
        score (`float`): The aggregate score.
        per_sample (`np.ndarray`): One score per evaluated sample (empty when the evaluator has none).
        higher_is_better (`bool`, *optional*, defaults to `True`): The direction of `score` and `per_sample`.
        name (`str`, *optional*): What was measured (`"safety_perplexity"`, `"refusal_rate"`, ...).
    """

    score: float
    per_sample: np.ndarray = field(default_factory=lambda: np.zeros(0))
    higher_is_better: bool = True
    name: str = "score"


def as_evaluation_result(value, name: str) -> EvaluationResult:
    """An evaluator's return value as an [`EvaluationResult`]: a float is a higher-is-better score."""
    if isinstance(value, EvaluationResult):
        return value
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return EvaluationResult(score=float(value), name=name)
    raise TypeError(f"The {name} evaluator returned {type(value).__name__}; expected an EvaluationResult or a float.")


def _column(dataset, field_name: str | None):
    if field_name is None or field_name not in dataset.column_names:
        return None
    return dataset[field_name]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _render(tokenizer, prompt, completion) -> tuple[str, str]:
    """Prompt and completion texts; a conversational pair (lists of messages) goes through the chat template."""
    if isinstance(prompt, list):
        prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        if completion is None:
            return prefix, ""
        full = tokenizer.apply_chat_template(prompt + list(completion), tokenize=False)
        if not full.startswith(prefix):
            raise ValueError("The chat template does not render the prompt as a prefix of prompt + completion.")
        return prefix, full[len(prefix) :]
    return prompt, completion or ""


class PerplexityEvaluator:
    """Perplexity of a dataset's reference completions (or texts) under the candidate model.

    The dataset has either `prompt` and `completion` columns (plain strings, or lists of chat messages rendered
    with the tokenizer's chat template; only completion tokens are scored) or a `text` column (every token after
    the first is scored).

    Args:
        dataset (`datasets.Dataset`): The evaluation set.
        name (`str`, *optional*, defaults to `"perplexity"`): The result's name.
        batch_size (`int`, *optional*, defaults to 8): Sequences per forward pass.
        max_length (`int`, *optional*, defaults to 512): Longer sequences are truncated (from the right).
        max_samples (`int`, *optional*): Evaluate only the first `max_samples` rows.
        text_field, prompt_field, completion_field (`str`): Column names.

    Returns (when called):
        [`EvaluationResult`] with the perplexity over all scored tokens (`exp` of their mean negative
        log-likelihood) as `score` (lower is better), and each sample's mean negative log-likelihood (nats per
        token) as `per_sample`.
    """

    def __init__(
        self,
        dataset,
        *,
        name: str = "perplexity",
        batch_size: int = 8,
        max_length: int = 512,
        max_samples: int | None = None,
        text_field: str = "text",
        prompt_field: str = "prompt",
        completion_field: str = "completion",
    ):
        check_range("batch_size", batch_size, ge=1, integer=True)
        check_range("max_length", max_length, ge=2, integer=True)
        check_range("max_samples", max_samples, ge=1, integer=True, optional=True)
        if max_samples is not None:
            dataset = dataset.select(range(min(max_samples, len(dataset))))
        prompts, completions = _column(dataset, prompt_field), _column(dataset, completion_field)
        texts = _column(dataset, text_field)
        if prompts is None or completions is None:
            if texts is None:
                raise ValueError(
                    f"The {name} dataset has columns {dataset.column_names}; expected {prompt_field!r} and "
                    f"{completion_field!r}, or {text_field!r}."
                )
            prompts, completions = [""] * len(texts), list(texts)
        if len(prompts) == 0:
            raise ValueError(f"The {name} dataset is empty.")
        self.pairs = list(zip(prompts, completions))
        self.name = name
        self.batch_size = batch_size
        self.max_length = max_length

    def _encode(self, tokenizer) -> list[tuple[list[int], int]]:
        encoded = []
        for prompt, completion in self.pairs:
            prompt_text, completion_text = _render(tokenizer, prompt, completion)
            prompt_ids = tokenizer(prompt_text, add_special_tokens=True)["input_ids"] if prompt_text else []
            completion_ids = tokenizer(completion_text, add_special_tokens=not prompt_ids)["input_ids"]
            ids = (prompt_ids + completion_ids)[: self.max_length]
            start = max(len(prompt_ids), 1)  # the first token has no prediction
            if start >= len(ids):
                raise ValueError(
                    f"A {self.name} sample has no completion token left within max_length={self.max_length}."
                )
            encoded.append((ids, start))
        return encoded

    @torch.no_grad()
    def __call__(self, model, tokenizer) -> EvaluationResult:
        device = _model_device(model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        was_training = model.training
        model.eval()
        nll_sums, counts = [], []
        encoded = self._encode(tokenizer)
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start : start + self.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (ids, first) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                scored[row, first : len(ids)] = True
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:].to(device)
            nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            mask = scored[:, 1:].to(device)
            nll_sums.append((nll * mask).sum(dim=1).double().cpu())
            counts.append(mask.sum(dim=1).cpu())
        model.train(was_training)
        nll_sum, count = torch.cat(nll_sums), torch.cat(counts)
        per_sample = (nll_sum / count).numpy()
        return EvaluationResult(
            score=math.exp(nll_sum.sum().item() / count.sum().item()),
            per_sample=per_sample,
            higher_is_better=False,
            name=self.name,
        )


class GenerationEvaluator:
    """Greedy generation on a dataset's prompts, each completion scored by `score_fn`.

    Args:
        dataset (`datasets.Dataset`): Rows with a `prompt` column (a string, or a list of chat messages).
        score_fn (`Callable[[str, dict], float]`): Scores a completion (decoded without special tokens) given
            its dataset row, e.g. 1.0 for a refusal and 0.0 otherwise.
        name (`str`, *optional*, defaults to `"generation"`): The result's name.
        higher_is_better (`bool`, *optional*, defaults to `True`): The direction of `score_fn`.
        max_new_tokens (`int`, *optional*, defaults to 16): Generation length.
        batch_size (`int`, *optional*, defaults to 16): Prompts per `generate` call (left-padded).
        max_samples (`int`, *optional*): Evaluate only the first `max_samples` rows.
        prompt_field (`str`, *optional*, defaults to `"prompt"`): The prompt column.

    Returns (when called):
        [`EvaluationResult`] with the mean of `score_fn` as `score` and each sample's value as `per_sample`.
    """

    def __init__(
        self,
        dataset,
        score_fn: Callable[[str, dict], float],
        *,
        name: str = "generation",
        higher_is_better: bool = True,
        max_new_tokens: int = 16,
        batch_size: int = 16,
        max_samples: int | None = None,
        prompt_field: str = "prompt",
    ):
        check_range("max_new_tokens", max_new_tokens, ge=1, integer=True)
        check_range("batch_size", batch_size, ge=1, integer=True)
        if prompt_field not in dataset.column_names:
            raise ValueError(f"The {name} dataset has columns {dataset.column_names}; expected {prompt_field!r}.")
        if max_samples is not None:
            dataset = dataset.select(range(min(max_samples, len(dataset))))
        self.rows: Sequence[dict] = list(dataset)
        self.score_fn = score_fn
        self.name = name
        self.higher_is_better = higher_is_better
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.prompt_field = prompt_field

    def __call__(self, model, tokenizer) -> EvaluationResult:
        prompts = [_render(tokenizer, row[self.prompt_field], None)[0] for row in self.rows]
        texts = greedy_answers(
            model, tokenizer, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
        )
        scores = [float(self.score_fn(text, row)) for text, row in zip(texts, self.rows)]
        per_sample = np.asarray(scores, dtype=np.float64)
        return EvaluationResult(
            score=float(per_sample.mean()),
            per_sample=per_sample,
            higher_is_better=self.higher_is_better,
            name=self.name,
        )
