"""`SASAProbe`: the linear subspace that separates desired from undesired text in a model's own hidden states.

```python
>>> from hf_ext.sasa import SASAProbe
>>> probe = SASAProbe.fit(model, tokenizer, desired_texts, undesired_texts)  # the best layer on held-out texts
>>> probe = SASAProbe.fit_from_judge(model, tokenizer, judge, prompts=stems)  # the model's own text, labelled by a judge
>>> probe.margin(hidden_states)  # > 0 on the desired side
>>> probe.save_pretrained("my-probe")  # safetensors + JSON + a card; also push_to_hub(...)
>>> probe = SASAProbe.from_pretrained("my-probe", model=model)  # checks it was fitted on this model
```
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from hf_ext._validation import check_range

from .._checks import check_tokenizer_fits
from ..hub import HubMixin, make_card
from ..serialization import load_json, load_tensors, save_json, save_tensors
from ._inputs import judge_name, judge_scores, text_list
from .continuations import sample_continuations
from .fingerprint import compare_fingerprints, model_fingerprint
from .hidden_states import causal_lm_of, decoder_body, hidden_states_at, model_signature, positions_from_mask
from .lda import fit_lda, linear_margin, separability


__all__ = ["SASAProbe", "last_token_hidden_states", "prefix_hidden_states", "word_prefixes"]

PROBE_WEIGHTS = "sasa_probe.safetensors"
PROBE_CONFIG = "sasa_probe.json"
FORMAT_VERSION = 1
WEAK_PROBE_AUC = 0.6
"""Below this held-out AUC (0.5 is chance), [`SASAProbe.fit`] warns that the probe barely separates the classes.

The AUC, not the accuracy at the boundary, is what matters: SASA compares the margins of the candidates of a step.
On SmolLM2-135M a probe from the model's own continuations reached a held-out AUC of 0.70 (balanced accuracy 0.64)
and halved the judge's mean toxicity on held-out prompts."""
MIN_HELD_OUT_GROUPS = 2
"""Source texts of each kind (containing undesired text, or not) needed before some can be held out."""


@torch.no_grad()
def last_token_hidden_states(
    model,
    tokenizer,
    texts: Sequence[str],
    layer: int | Sequence[int] = -1,
    batch_size: int = 16,
    max_length: int | None = 512,
    show_progress: bool = False,
) -> torch.Tensor:
    """Hidden states at the last non-pad token of each text, float32 on the CPU.

    With one `layer`, shape `(len(texts), hidden_size)`; with a sequence of layers, shape
    `(len(layers), len(texts), hidden_size)`, all from one forward per batch. Texts are batched with the tokenizer's
    own padding side; position ids are derived from the padding mask as `generate` derives them, so left and right
    padding give the same states as one text alone.
    """
    texts = text_list("texts", texts)
    check_range("batch_size", batch_size, ge=1, integer=True)
    body = decoder_body(model)
    device = _device_of(model)
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` before fitting a probe.")
    check_tokenizer_fits(tokenizer, causal_lm_of(model), tokenizer_name="tokenizer")
    layers = None if isinstance(layer, int) else list(layer)
    rows = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="SASA probe: embedding texts", disable=not show_progress, leave=False):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
        )
        input_ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        if (mask.sum(-1) == 0).any():
            raise ValueError("A text tokenizes to no tokens; remove empty texts before fitting a probe.")
        inputs = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions_from_mask(mask))
        last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # index of the last non-pad token, either padding side
        rows_of_batch = torch.arange(input_ids.shape[0], device=device)
        if layers is None:
            hidden = hidden_states_at(body, layer, **inputs)
            rows.append(_take(hidden, rows_of_batch, last))
        else:
            states = body(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            rows.append(torch.stack([_take(states[index], rows_of_batch, last) for index in layers]))
    return torch.cat(rows, dim=0 if layers is None else 1)


@torch.no_grad()
def prefix_hidden_states(
    model,
    tokenizer,
    texts: Sequence[str],
    ends: Sequence[Sequence[int]],
    layer: int | Sequence[int] = -1,
    batch_size: int = 16,
    max_length: int | None = 512,
    show_progress: bool = False,
) -> torch.Tensor:
    """Hidden states at the last token of several prefixes of each text, from one forward of the whole text.

    In a causal model the state at a token depends only on the tokens up to it, so the state of prefix
    `texts[i][:end]` is read off the forward of `texts[i]` at the last token that starts before `end`: the same
    state as embedding the prefix alone (where the tokenizer splits the prefix as it splits the text, as
    byte-level BPE does at a word end), for a fraction of the cost.

    Args:
        texts (`Sequence[str]`): The whole texts.
        ends (`Sequence[Sequence[int]]`): For each text, the character offsets where its prefixes end.
        layer, batch_size, max_length, show_progress: As in [`last_token_hidden_states`].

    Returns:
        `torch.Tensor` of shape `(num_prefixes, hidden_size)` (or `(len(layers), num_prefixes, hidden_size)`), float32
        on the CPU, prefixes in the order of `texts` then `ends`.
    """
    texts = text_list("texts", texts)
    check_range("batch_size", batch_size, ge=1, integer=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("prefix_hidden_states needs a fast tokenizer (character offsets of the tokens).")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` before fitting a probe.")
    check_tokenizer_fits(tokenizer, causal_lm_of(model), tokenizer_name="tokenizer")
    if len(ends) != len(texts):
        raise ValueError(f"Got {len(ends)} lists of prefix ends for {len(texts)} texts.")
    body = decoder_body(model)
    device = _device_of(model)
    layers = None if isinstance(layer, int) else list(layer)
    rows = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="SASA probe: embedding prefixes", disable=not show_progress, leave=False):
        chunk = list(texts[start : start + batch_size])
        batch = tokenizer(
            chunk,
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_offsets_mapping=True,
        )
        offsets = batch.pop("offset_mapping")
        mask = batch["attention_mask"]
        text_rows, token_index = [], []
        for row, text_ends in enumerate(ends[start : start + batch_size]):
            real = mask[row].bool() & (offsets[row, :, 1] > offsets[row, :, 0])
            for end in text_ends:
                covered = real & (offsets[row, :, 0] < end)
                if not covered.any() or int(offsets[row][covered][-1, 1]) < end:
                    raise ValueError(
                        f"The prefix ending at character {end} of text {start + row} is not within its first "
                        f"{max_length} tokens (or starts inside a token); shorten the text or raise max_length."
                    )
                text_rows.append(row)
                token_index.append(int(covered.nonzero()[-1]))
        input_ids, attention_mask = batch["input_ids"].to(device), mask.to(device)
        inputs = dict(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions_from_mask(attention_mask)
        )
        text_rows = torch.tensor(text_rows, device=device, dtype=torch.long)
        token_index = torch.tensor(token_index, device=device, dtype=torch.long)
        if layers is None:
            hidden = hidden_states_at(body, layer, **inputs)
            rows.append(_take(hidden, text_rows, token_index))
        else:
            states = body(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            rows.append(torch.stack([_take(states[index], text_rows, token_index) for index in layers]))
    return torch.cat(rows, dim=0 if layers is None else 1)


def _take(hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`hidden[rows, positions]` in float32 on the CPU; the indices follow `hidden`, which under a multi-device
    `device_map` lives on its layer's device, not the model's first one."""
    return hidden[rows.to(hidden.device), positions.to(hidden.device)].float().cpu()


def word_prefixes(text: str, min_words: int = 1) -> list[str]:
    """Every prefix of `text` that ends at the end of a word, from `min_words` words on, with the text's own
    spacing (the last is `text` without trailing space)."""
    return [text[: match.end()] for match in list(re.finditer(r"\S+", text))[max(min_words, 1) - 1 :]]


def _device_of(model) -> torch.device:
    lm = causal_lm_of(model)
    device = getattr(lm, "device", None)
    return device if device is not None else next(lm.parameters()).device


class SASAProbe(HubMixin):
    """A fitted SASA subspace: unit direction `w` and midpoint `b` in the hidden-state space of one model, at one
    layer. The margin of a hidden state `h` is `wᵀ (h − b)`, positive on the desired side.

    Build one with [`SASAProbe.fit`]; save and load it with `save_pretrained` / `from_pretrained` / `push_to_hub`
    (safetensors + JSON, with a model card). The probe records the model it was fitted on (name or path,
    architecture, hidden size, and a fingerprint of its weights: [`hf_ext.sasa.fingerprint`]) and its layer, and
    refuses to be used with a different model, even one of the same width.

    Args:
        direction (`torch.Tensor` of shape `(hidden_size,)`): Unit vector towards the desired side.
        midpoint (`torch.Tensor` of shape `(hidden_size,)`): Midpoint between the two class means.
        layer (`int`, *optional*, defaults to -1): Index into the model's hidden states (`-1`: last layer).
        model_info (`dict`, *optional*): The model's signature ([`model_signature`]) and, under `"fingerprint"`,
            the fingerprint of its weights at `layer` ([`model_fingerprint`]); a probe built without one is not
            checked against the model's weights.
        fit_info (`dict`, *optional*): Statistics of the fit (sizes, shrinkage, training accuracy, ...).
    """

    hub_files: ClassVar[list[str]] = [PROBE_WEIGHTS, PROBE_CONFIG, "README.md"]

    def __init__(
        self,
        direction: torch.Tensor,
        midpoint: torch.Tensor,
        layer: int = -1,
        model_info: dict | None = None,
        fit_info: dict | None = None,
    ):
        direction = torch.as_tensor(direction, dtype=torch.float32).detach().cpu()
        midpoint = torch.as_tensor(midpoint, dtype=torch.float32).detach().cpu()
        if direction.ndim != 1 or direction.shape != midpoint.shape:
            raise ValueError(
                f"direction and midpoint must be 1-D of the same size, got {tuple(direction.shape)} and "
                f"{tuple(midpoint.shape)}."
            )
        if not (torch.isfinite(direction).all() and torch.isfinite(midpoint).all()):
            raise ValueError("direction and midpoint must be finite.")
        norm = torch.linalg.vector_norm(direction)
        if norm == 0:
            raise ValueError("direction must be non-zero.")
        self.direction = direction / norm
        self.midpoint = midpoint
        self.layer = int(layer)
        self.model_info = dict(model_info or {})
        self.model_info.setdefault("hidden_size", int(direction.shape[0]))
        self.fit_info = dict(fit_info or {})
        self._aligned: dict = {}

    @property
    def hidden_size(self) -> int:
        return int(self.direction.shape[0])

    def __repr__(self) -> str:
        name = self.model_info.get("model_name_or_path")
        return f"SASAProbe(hidden_size={self.hidden_size}, layer={self.layer}, model={name!r})"

    # ----------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        model,
        tokenizer,
        desired_texts: Sequence[str],
        undesired_texts: Sequence[str],
        layer: int | str = "auto",
        shrinkage: float | str = "auto",
        balance: bool = True,
        validation_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 16,
        max_length: int | None = 512,
        show_progress: bool = True,
    ) -> SASAProbe:
        """Fit the subspace on labelled texts.

        Each text is embedded as the hidden state of a layer at its last non-pad token, with batched forwards (left
        or right padding both give the state of the text alone). A linear discriminant with shared, shrunk
        covariance ([`hf_ext.sasa.lda.fit_lda`]) then gives the direction and the midpoint.

        A fraction of the texts is held out first: the probe's held-out separability (AUC and balanced accuracy,
        in `fit_info`) says how well it will tell the two kinds of text apart, and with `layer="auto"` it picks the
        layer. The final probe is fitted on all texts. A probe whose held-out AUC is below [`WEAK_PROBE_AUC`] comes
        with a warning: SASA steers little with it.

        Args:
            model (`PreTrainedModel`): The causal LM (full precision, quantized, or with PEFT adapters).
            tokenizer (`PreTrainedTokenizerBase`): Its tokenizer (with a pad token).
            desired_texts (`Sequence[str]`): Texts on the desired side (e.g. non-toxic).
            undesired_texts (`Sequence[str]`): Texts on the undesired side (e.g. toxic).
            layer (`int` or `"auto"`, *optional*, defaults to `"auto"`): Which hidden states the probe reads (an index
                into the model's hidden states, `-1`: the last layer, the LM head's input). `"auto"`: the layer whose
                held-out texts the probe separates best (highest AUC); on small models it is often an intermediate
                one, and SASA's candidate forward then stops there. Needs at least [`MIN_HELD_OUT_GROUPS`] texts of
                each kind; with fewer, the last layer is used, with a warning.
            shrinkage (`float` or `"auto"`, *optional*, defaults to `"auto"`): Covariance shrinkage (Ledoit–Wolf
                by default), see [`fit_lda`].
            balance (`bool`, *optional*, defaults to `True`): Weigh the two classes equally in the covariance
                (see [`fit_lda`]): labelled text is often mostly desired.
            validation_fraction (`float`, *optional*, defaults to 0.2): Fraction of the texts held out (of each
                kind), in (0, 1).
            seed (`int`, *optional*, defaults to 0): Seed of the held-out split.
            batch_size (`int`, *optional*, defaults to 16): Texts per forward.
            max_length (`int`, *optional*, defaults to 512): Truncation length in tokens (`None`: no truncation).
            show_progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
        """
        desired_texts, undesired_texts = (
            text_list("desired_texts", desired_texts),
            text_list("undesired_texts", undesired_texts),
        )
        texts = desired_texts + undesired_texts
        undesired = [False] * len(desired_texts) + [True] * len(undesired_texts)
        options = dict(batch_size=batch_size, max_length=max_length, show_progress=show_progress)
        return cls._fit(
            model,
            lambda layers: last_token_hidden_states(model, tokenizer, texts, layer=layers, **options),
            undesired,
            groups=list(range(len(texts))),
            layer=layer,
            shrinkage=shrinkage,
            balance=balance,
            validation_fraction=validation_fraction,
            seed=seed,
            options=options,
        )

    @classmethod
    def fit_from_judge(
        cls,
        model,
        tokenizer,
        judge: Callable,
        texts: Sequence[str] | None = None,
        *,
        prompts: Sequence[str] | None = None,
        num_continuations: int = 8,
        max_new_tokens: int = 24,
        temperature: float = 1.0,
        threshold: float = 0.5,
        prefixes: bool = True,
        min_prefix_words: int = 2,
        seed: int = 0,
        **fit_kwargs,
    ) -> SASAProbe:
        """Fit the subspace on unlabelled text, labelled by a judge: a user corpus, or the model's own text.

        - `texts` alone: a corpus; each text is labelled on its own.
        - `texts` and `prompts` (as many): text `i` continues prompt `i`; the probe embeds prompt + text, the judge
          scores the text given its prompt.
        - `prompts` alone: the model's own continuations of the prompts (`num_continuations` each, nucleus-free
          sampling at `temperature`, seeded), then as above. Provocative prompts make the model write some
          undesired text to learn from.

        With `prefixes`, every word prefix of each text (from `min_prefix_words` words on) is embedded and judged
        too: a candidate token during generation is the end of such a prefix, and a text's state right after its
        first rude word is what SASA has to recognise. The prefixes of one text are held out together.

        Args:
            model, tokenizer: As in [`SASAProbe.fit`].
            judge (`Callable[[list[str], list[str]], Sequence[float]]`): Scores texts (given their prompts; `""`
                without one) in [0, 1], 1 = undesired; e.g. [`ProfanityCheckJudge`].
            texts (`Sequence[str]`, *optional*): The texts to judge.
            prompts (`Sequence[str]`, *optional*): Their prompts, or the prompts to sample continuations of.
            num_continuations, max_new_tokens, temperature: Sampling of the model's continuations (without `texts`).
            threshold (`float`, *optional*, defaults to 0.5): A score >= `threshold` labels a text undesired.
            prefixes (`bool`, *optional*, defaults to `True`): Add every word prefix of each text.
            min_prefix_words (`int`, *optional*, defaults to 2): Shortest prefix, in words.
            seed (`int`, *optional*, defaults to 0): Seed of the sampling and of the held-out split.
            fit_kwargs: `layer`, `balance`, `shrinkage`, `validation_fraction`, `batch_size`, `max_length`,
                `show_progress` of [`SASAProbe.fit`].

        The probe's `fit_info` records how many texts the judge labelled each way.
        """
        if not callable(judge):
            raise ValueError(f"judge must be a callable judge(texts, prompts) -> scores, got {type(judge).__name__}.")
        check_range("threshold", threshold, gt=0, le=1)
        check_range("min_prefix_words", min_prefix_words, ge=1, integer=True)
        if texts is None and prompts is None:
            raise ValueError("Give texts (a corpus), prompts (to sample the model's own continuations), or both.")
        sampled_by_the_model = texts is None
        if sampled_by_the_model:
            prompts = text_list("prompts", prompts)
            sampled = sample_continuations(
                model,
                tokenizer,
                prompts,
                num_continuations=num_continuations,
                max_new_tokens=max_new_tokens,
                top_p=1.0,
                temperature=temperature,
                seed=seed,
                show_progress=fit_kwargs.get("show_progress", True),
                desc="SASA probe: sampling continuations",
            )
            texts = [text for row in sampled.texts for text in row]
            prompts = [prompt for prompt in prompts for _ in range(num_continuations)]
            keep = [i for i, text in enumerate(texts) if text.strip()]
            texts, prompts = [texts[i] for i in keep], [prompts[i] for i in keep]
        else:
            texts = text_list("texts", texts)
            prompts = [""] * len(texts) if prompts is None else text_list("prompts", prompts, allow_empty=True)
            if len(prompts) != len(texts):
                raise ValueError(f"Got {len(prompts)} prompts for {len(texts)} texts; expected one prompt per text.")

        # Each text is embedded once; its prefixes are positions in that forward (see `prefix_hidden_states`).
        sources = [prompt + text for prompt, text in zip(prompts, texts)]
        pieces, piece_prompts, groups, ends = [], [], [], []
        seen = set()
        for index, (prompt, text) in enumerate(zip(prompts, texts)):
            text_ends = []
            for piece in word_prefixes(text, min_prefix_words) if prefixes else [text.rstrip()]:
                if piece and (prompt, piece) not in seen:
                    seen.add((prompt, piece))
                    pieces.append(piece)
                    piece_prompts.append(prompt)
                    groups.append(index)
                    text_ends.append(len(prompt) + len(piece))
            ends.append(text_ends)
        if not pieces:
            raise ValueError(f"No text has {min_prefix_words} words or more; lower min_prefix_words.")
        scores = judge_scores(judge, pieces, piece_prompts)
        undesired = [score >= threshold for score in scores]
        num_undesired = sum(undesired)
        if num_undesired == 0 or num_undesired == len(pieces):
            side = "undesired" if num_undesired == 0 else "desired"
            raise ValueError(
                f"The judge labelled no text {side} (threshold {threshold}, {len(pieces)} texts from {len(texts)} "
                "sources): a probe needs both kinds. Give more or more varied text (e.g. more provocative prompts, "
                "more continuations, a higher temperature) or another threshold."
            )
        options = dict(
            batch_size=fit_kwargs.pop("batch_size", 16),
            max_length=fit_kwargs.pop("max_length", 512),
            show_progress=fit_kwargs.pop("show_progress", True),
        )
        return cls._fit(
            model,
            lambda layers: prefix_hidden_states(model, tokenizer, sources, ends, layer=layers, **options),
            undesired,
            groups=groups,
            seed=seed,
            options=options,
            extra_info={
                "labelled_by": judge_name(judge),
                "judge_threshold": threshold,
                "source_texts": len(texts),
                "prefixes": prefixes,
                "continuations_per_prompt": num_continuations if sampled_by_the_model else None,
            },
            **fit_kwargs,
        )

    @classmethod
    def _fit(
        cls,
        model,
        embed: Callable[[list[int]], torch.Tensor],
        undesired: list[bool],
        *,
        groups: list,
        options: dict,
        layer: int | str = "auto",
        shrinkage: float | str = "auto",
        balance: bool = True,
        validation_fraction: float = 0.2,
        seed: int = 0,
        extra_info: dict | None = None,
    ) -> SASAProbe:
        """The fit shared by [`fit`] and [`fit_from_judge`]: `embed(layers)` gives the `(len(layers), N, hidden)`
        states of the N labelled texts, `undesired` their labels, `groups` which texts are held out together."""
        num_undesired = sum(undesired)
        num_texts = len(undesired)
        num_desired = num_texts - num_undesired
        if num_texts < 3:
            raise ValueError("Need at least three labelled texts in total to estimate a covariance.")
        check_range("batch_size", options["batch_size"], ge=1, integer=True)
        check_range("validation_fraction", validation_fraction, gt=0, lt=1)
        signature = model_signature(model)
        num_layers = signature["num_hidden_layers"]
        if isinstance(layer, str) and layer != "auto":
            raise ValueError(f"layer={layer!r} is not supported; expected 'auto' or an integer index.")
        if layer != "auto":
            _check_layer(layer, num_layers)
        decoder_body(model)  # fail on an unsupported model before any forward

        split = _held_out_split(undesired, groups, validation_fraction, seed)
        if split is None:
            message = (
                f"Too few texts to hold some out (need texts from at least {MIN_HELD_OUT_GROUPS} sources of each kind): "
                "the probe's separability cannot be checked"
            )
            if layer == "auto":
                message += " and layer='auto' uses the last layer"
                layer = -1
            warnings.warn(message + ".", UserWarning, stacklevel=3)
        candidates = list(range(1, num_layers)) + [-1] if layer == "auto" else [layer]
        states = embed(candidates)
        labels = torch.tensor(undesired)

        held_out = {}
        if split is not None:
            train, test = split
            for index, candidate in enumerate(candidates):
                x_train, x_test = states[index][train], states[index][test]
                fitted = fit_lda(
                    x_train[~labels[train]], x_train[labels[train]], shrinkage=shrinkage, balanced=balance
                )
                margins = linear_margin(x_test, fitted.direction, fitted.midpoint)
                held_out[candidate] = separability(margins[~labels[test]], margins[labels[test]])
        chosen = max(candidates, key=lambda c: held_out[c].auc) if layer == "auto" else layer
        x = states[candidates.index(chosen)]
        x_desired, x_undesired = x[~labels], x[labels]
        fitted = fit_lda(x_desired, x_undesired, shrinkage=shrinkage, balanced=balance)
        m_desired = linear_margin(x_desired, fitted.direction, fitted.midpoint)
        m_undesired = linear_margin(x_undesired, fitted.direction, fitted.midpoint)
        accuracy = (float((m_desired > 0).sum()) + float((m_undesired <= 0).sum())) / num_texts
        fit_info = {
            "num_desired": num_desired,
            "num_undesired": num_undesired,
            "shrinkage": fitted.shrinkage,
            "shrinkage_setting": shrinkage,
            "balanced": balance,
            "train_accuracy": accuracy,
            "mean_margin_desired": float(m_desired.mean()),
            "mean_margin_undesired": float(m_undesired.mean()),
            "max_length": options["max_length"],
            "layer_selection": "auto" if len(candidates) > 1 else "given",
            **(extra_info or {}),
        }
        if held_out:
            fit_info |= {
                "held_out_texts": len(split[1]),
                "held_out_auc": held_out[chosen].auc,
                "held_out_balanced_accuracy": held_out[chosen].balanced_accuracy,
            }
            if len(candidates) > 1:
                fit_info["held_out_auc_by_layer"] = {str(c): round(held_out[c].auc, 6) for c in candidates}
            if held_out[chosen].auc < WEAK_PROBE_AUC:
                warnings.warn(
                    f"The SASA probe barely separates the two kinds of text: held-out AUC {held_out[chosen].auc:.2f} "
                    f"(0.5 is chance; balanced accuracy {held_out[chosen].balanced_accuracy:.2f}) at layer {chosen}, "
                    f"below {WEAK_PROBE_AUC}. Steering with it will change little; fit on more or clearer "
                    "examples of both kinds.",
                    UserWarning,
                    stacklevel=3,
                )
        model_info = {**signature, "fingerprint": model_fingerprint(model, chosen)}
        return cls(fitted.direction, fitted.midpoint, layer=chosen, model_info=model_info, fit_info=fit_info)

    # ----------------------------------------------------------------------------------------------- use
    def margin(self, hidden: torch.Tensor) -> torch.Tensor:
        """Signed distance `wᵀ (h − b)` of hidden states along the probe direction (positive = desired side).

        Args:
            hidden (`torch.Tensor` of shape `(..., hidden_size)`): Any dtype, on any device.

        Returns:
            `torch.Tensor` of shape `(...)`, float32, on the device of `hidden`.
        """
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden states have size {hidden.shape[-1]}, but the probe has {self.hidden_size}.")
        key = hidden.device
        if key not in self._aligned:
            self._aligned[key] = (self.direction.to(key), self.midpoint.to(key))
        direction, midpoint = self._aligned[key]
        return linear_margin(hidden, direction, midpoint)

    def check_model(self, model, check_name: bool = True) -> None:
        """Raise `ValueError` unless `model` is the model this probe was fitted on: the same architecture and hidden
        size, the same weights (the fingerprint the probe recorded at fitting, see [`hf_ext.sasa.fingerprint`]:
        another model of the same width is refused, the same model in another precision, quantized or with adapters
        is not) and, with `check_name`, the same name or path.

        A probe that records a model but no fingerprint (saved before fingerprints existed) gets a warning instead:
        its weights cannot be checked.
        """
        signature = model_signature(model)
        if signature["hidden_size"] != self.hidden_size:
            raise ValueError(
                f"This probe was fitted on hidden size {self.hidden_size} "
                f"({self.model_info.get('model_name_or_path')!r}) but the model has hidden size "
                f"{signature['hidden_size']} ({signature['model_name_or_path']!r})."
            )
        _check_layer(self.layer, signature["num_hidden_layers"])
        for key in ("model_type", "num_hidden_layers", "vocab_size"):
            ours = self.model_info.get(key)
            if ours is not None and signature[key] is not None and ours != signature[key]:
                raise ValueError(
                    f"This probe was fitted on a model with {key}={ours!r} "
                    f"({self.model_info.get('model_name_or_path')!r}), but this model has {key}={signature[key]!r}."
                )
        ours = self.model_info.get("model_name_or_path")
        self._check_fingerprint(model, signature)
        if check_name and ours and signature["model_name_or_path"] and ours != signature["model_name_or_path"]:
            raise ValueError(
                f"This probe was fitted on {ours!r}, not on {signature['model_name_or_path']!r}. Pass "
                "`check_model_name=False` if this is the same model under another name or path."
            )

    def _check_fingerprint(self, model, signature: dict) -> None:
        fitted_on = self.model_info.get("model_name_or_path")
        saved = self.model_info.get("fingerprint")
        if saved is None:
            if self.model_info.get("model_type") is not None:
                warnings.warn(
                    f"This SASA probe (fitted on {fitted_on!r}) records no fingerprint of that model's weights (it was "
                    f"saved before probes recorded one), so whether the model given ({signature['model_name_or_path']!r}) "
                    "is the one it was fitted on is checked on the architecture only. A probe used on another model of "
                    "the same width steers at random, possibly towards the undesired side: fit it again on this model "
                    "to record a fingerprint.",
                    UserWarning,
                    stacklevel=3,
                )
            return
        current = model_fingerprint(model, saved.get("layer", self.layer))
        difference = compare_fingerprints(saved, current)
        if difference is not None:
            raise ValueError(
                f"This SASA probe was fitted on {fitted_on!r} (weights fingerprint {saved.get('digest')}), but the model "
                f"given is {signature['model_name_or_path']!r} (weights fingerprint {current['digest']}): {difference}. "
                f"Both have hidden size {self.hidden_size}, but the probe's direction means nothing in another model's "
                "hidden states and can steer towards the undesired side. Fit a probe on this model "
                "(SASAProbe.fit or SASAProbe.fit_from_judge)."
            )

    # ----------------------------------------------------------------------------------------------- saving
    def to_dict(self) -> dict:
        """The probe's JSON metadata (everything but the tensors)."""
        return {
            "format_version": FORMAT_VERSION,
            "method": "sasa",
            "layer": self.layer,
            "hidden_size": self.hidden_size,
            "model": self.model_info,
            "fit": self.fit_info,
        }

    def _save_files(self, save_directory: Path) -> None:
        save_tensors(
            save_directory / PROBE_WEIGHTS,
            {"direction": self.direction, "midpoint": self.midpoint},
            metadata={"format": "pt", "method": "sasa"},
        )
        save_json(save_directory / PROBE_CONFIG, self.to_dict())

    @classmethod
    def _load_files(cls, folder: Path, model=None, check_model_name: bool = True) -> SASAProbe:
        config_path, weights_path = folder / PROBE_CONFIG, folder / PROBE_WEIGHTS
        if not config_path.is_file() or not weights_path.is_file():
            raise ValueError(f"{folder} is not a SASA probe: expected {PROBE_CONFIG} and {PROBE_WEIGHTS}.")
        config = load_json(config_path)
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{folder} holds a probe of format version {config['format_version']}; this hf-ext reads up to "
                f"{FORMAT_VERSION}."
            )
        tensors = load_tensors(weights_path)
        probe = cls(
            tensors["direction"],
            tensors["midpoint"],
            layer=config["layer"],
            model_info=config.get("model"),
            fit_info=config.get("fit"),
        )
        if probe.hidden_size != config["hidden_size"]:
            raise ValueError(
                f"{folder}: the tensors have size {probe.hidden_size}, the config {config['hidden_size']}."
            )
        if model is not None:
            probe.check_model(model, check_name=check_model_name)
        return probe

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, model=None, check_model_name: bool = True, **kwargs):
        """Load a probe from a folder or a Hub repo.

        Args:
            name_or_path (`str` or `os.PathLike`): Local folder or Hub repo id.
            model (`PreTrainedModel`, *optional*): If given, the probe must have been fitted on it (see
                [`SASAProbe.check_model`]), else `ValueError`.
            check_model_name (`bool`, *optional*, defaults to `True`): Also compare the model's name or path.
            kwargs: `revision`, `token` (for the Hub).
        """
        return super().from_pretrained(name_or_path, model=model, check_model_name=check_model_name, **kwargs)

    def model_card(self):
        base = self.model_info.get("model_name_or_path")
        base_model = base if base and not os.path.isabs(str(base)) and "/" in str(base) else None
        return make_card(
            "sasa",
            method="sasa",
            base_model=base_model,
            tags=["sasa", "detoxification", "logits-processor"],
            method_config={"layer": self.layer, "hidden_size": self.hidden_size, **self.fit_info},
            title="SASA probe",
            model_name=base or "unknown",
            layer=self.layer,
            hidden_size=self.hidden_size,
            fit=self.fit_info,
        )


def _held_out_split(undesired: list[bool], groups: list, fraction: float, seed: int):
    """`(train_indices, held_out_indices)`: whole groups held out, a `fraction` of the groups that contain undesired
    text and of those that do not (at least one of each); `None` when either kind has too few groups or a side would
    lack a class."""
    members: dict = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    with_undesired = [g for g, idx in members.items() if any(undesired[i] for i in idx)]
    without = [g for g, idx in members.items() if not any(undesired[i] for i in idx)]
    if len(with_undesired) < MIN_HELD_OUT_GROUPS or len(without) < MIN_HELD_OUT_GROUPS:
        return None
    rng = random.Random(seed)
    held = set()
    for kind in (with_undesired, without):
        kind = list(kind)
        rng.shuffle(kind)
        held.update(kind[: min(len(kind) - 1, max(1, round(fraction * len(kind))))])
    test = [i for g in held for i in members[g]]
    train = [i for g in members if g not in held for i in members[g]]
    labels_train = {undesired[i] for i in train}
    labels_test = {undesired[i] for i in test}
    if labels_train != {True, False} or labels_test != {True, False} or len(train) < 3:
        return None
    return torch.tensor(sorted(train)), torch.tensor(sorted(test))


def _check_layer(layer, num_hidden_layers: int) -> None:
    check_range(
        "layer",
        layer,
        ge=-(num_hidden_layers + 1),
        le=num_hidden_layers,
        integer=True,
        hint=f"(an index into the {num_hidden_layers + 1} hidden states of the model)",
    )
