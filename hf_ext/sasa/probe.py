"""`SASAProbe`: the linear subspace that separates desired from undesired text in a model's own hidden states.

```python
>>> from hf_ext.sasa import SASAProbe
>>> probe = SASAProbe.fit(model, tokenizer, desired_texts, undesired_texts)  # last layer, last non-pad token
>>> probe.margin(hidden_states)  # > 0 on the desired side
>>> probe.save_pretrained("my-probe")  # safetensors + JSON + a card; also push_to_hub(...)
>>> probe = SASAProbe.from_pretrained("my-probe", model=model)  # checks it was fitted on this model
```
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch

from ..hub import HubMixin, make_card
from .lda import fit_lda, linear_margin
from .modeling import causal_lm_of, decoder_body, hidden_states_at, model_signature, positions_from_mask


__all__ = ["SASAProbe", "last_token_hidden_states"]

PROBE_WEIGHTS = "sasa_probe.safetensors"
PROBE_CONFIG = "sasa_probe.json"
FORMAT_VERSION = 1


@torch.no_grad()
def last_token_hidden_states(
    model,
    tokenizer,
    texts: Sequence[str],
    layer: int = -1,
    batch_size: int = 16,
    max_length: int | None = 512,
    show_progress: bool = False,
) -> torch.Tensor:
    """Hidden states of `layer` at the last non-pad token of each text, shape `(len(texts), hidden_size)`, float32.

    Texts are batched with the tokenizer's own padding side; position ids are derived from the padding mask as
    `generate` derives them, so left and right padding give the same states as one text alone.
    """
    from tqdm.auto import tqdm

    body = decoder_body(model)
    device = _device_of(model)
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` before fitting a probe.")
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
        hidden = hidden_states_at(
            body, layer, input_ids=input_ids, attention_mask=mask, position_ids=positions_from_mask(mask)
        )
        last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)  # index of the last non-pad token, either padding side
        rows.append(hidden[torch.arange(hidden.shape[0], device=device), last].float().cpu())
    return torch.cat(rows)


def _device_of(model) -> torch.device:
    lm = causal_lm_of(model)
    device = getattr(lm, "device", None)
    return device if device is not None else next(lm.parameters()).device


class SASAProbe(HubMixin):
    """A fitted SASA subspace: unit direction `w` and midpoint `b` in the hidden-state space of one model, at one
    layer. The margin of a hidden state `h` is `wᵀ (h − b)`, positive on the desired side.

    Build one with [`SASAProbe.fit`]; save and load it with `save_pretrained` / `from_pretrained` / `push_to_hub`
    (safetensors + JSON, with a model card). The probe records the model it was fitted on (name or path,
    architecture, hidden size) and its layer, and refuses to be used with a different model.

    Args:
        direction (`torch.Tensor` of shape `(hidden_size,)`): Unit vector towards the desired side.
        midpoint (`torch.Tensor` of shape `(hidden_size,)`): Midpoint between the two class means.
        layer (`int`, *optional*, defaults to -1): Index into the model's hidden states (`-1`: last layer).
        model_info (`dict`, *optional*): The model's signature ([`model_signature`]).
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
        layer: int = -1,
        shrinkage: float | str = "auto",
        batch_size: int = 16,
        max_length: int | None = 512,
        show_progress: bool = True,
    ) -> SASAProbe:
        """Fit the subspace on labelled texts.

        Each text is embedded as the hidden state of `layer` at its last non-pad token, with batched forwards
        (left or right padding both give the state of the text alone). A linear discriminant with shared,
        shrunk covariance ([`hf_ext.sasa.lda.fit_lda`]) then gives the direction and the midpoint.

        Args:
            model (`PreTrainedModel`): The causal LM (full precision, quantized, or with PEFT adapters).
            tokenizer (`PreTrainedTokenizerBase`): Its tokenizer (with a pad token).
            desired_texts (`Sequence[str]`): Texts on the desired side (e.g. non-toxic).
            undesired_texts (`Sequence[str]`): Texts on the undesired side (e.g. toxic).
            layer (`int`, *optional*, defaults to -1): Which hidden states (`-1`: the last layer, the LM head's input).
            shrinkage (`float` or `"auto"`, *optional*, defaults to `"auto"`): Covariance shrinkage (Ledoit–Wolf
                by default), see [`fit_lda`].
            batch_size (`int`, *optional*, defaults to 16): Texts per forward.
            max_length (`int`, *optional*, defaults to 512): Truncation length in tokens (`None`: no truncation).
            show_progress (`bool`, *optional*, defaults to `True`): Show a progress bar.
        """
        desired_texts, undesired_texts = list(desired_texts), list(undesired_texts)
        for name, texts in (("desired_texts", desired_texts), ("undesired_texts", undesired_texts)):
            if len(texts) < 1 or not all(isinstance(t, str) and t for t in texts):
                raise ValueError(f"{name} must be a non-empty list of non-empty strings.")
        if len(desired_texts) + len(undesired_texts) < 3:
            raise ValueError("Need at least three labelled texts in total to estimate a covariance.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is out of range; expected an integer >= 1.")
        signature = model_signature(model)
        _check_layer(layer, signature["num_hidden_layers"])
        decoder_body(model)  # fail on an unsupported model before any forward

        embed = dict(layer=layer, batch_size=batch_size, max_length=max_length, show_progress=show_progress)
        x_desired = last_token_hidden_states(model, tokenizer, desired_texts, **embed)
        x_undesired = last_token_hidden_states(model, tokenizer, undesired_texts, **embed)
        fitted = fit_lda(x_desired, x_undesired, shrinkage=shrinkage)
        m_desired = linear_margin(x_desired, fitted.direction, fitted.midpoint)
        m_undesired = linear_margin(x_undesired, fitted.direction, fitted.midpoint)
        accuracy = (float((m_desired > 0).sum()) + float((m_undesired <= 0).sum())) / (
            len(desired_texts) + len(undesired_texts)
        )
        fit_info = {
            "num_desired": len(desired_texts),
            "num_undesired": len(undesired_texts),
            "shrinkage": fitted.shrinkage,
            "shrinkage_setting": shrinkage,
            "train_accuracy": accuracy,
            "mean_margin_desired": float(m_desired.mean()),
            "mean_margin_undesired": float(m_undesired.mean()),
            "max_length": max_length,
        }
        return cls(fitted.direction, fitted.midpoint, layer=layer, model_info=signature, fit_info=fit_info)

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
        """Raise `ValueError` unless `model` is the model this probe was fitted on (same architecture and hidden
        size; with `check_name`, the same name or path too)."""
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
        if check_name and ours and signature["model_name_or_path"] and ours != signature["model_name_or_path"]:
            raise ValueError(
                f"This probe was fitted on {ours!r}, not on {signature['model_name_or_path']!r}. Pass "
                "`check_model_name=False` if this is the same model under another name or path."
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
        from ..serialization import save_json, save_tensors

        save_tensors(
            save_directory / PROBE_WEIGHTS,
            {"direction": self.direction, "midpoint": self.midpoint},
            metadata={"format": "pt", "method": "sasa"},
        )
        save_json(save_directory / PROBE_CONFIG, self.to_dict())

    @classmethod
    def _load_files(cls, folder: Path, model=None, check_model_name: bool = True) -> SASAProbe:
        from ..serialization import load_json, load_tensors

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


def _check_layer(layer, num_hidden_layers: int) -> None:
    if not isinstance(layer, int) or not -(num_hidden_layers + 1) <= layer <= num_hidden_layers:
        raise ValueError(
            f"layer={layer!r} is out of range; expected an integer in [{-(num_hidden_layers + 1)}, {num_hidden_layers}] "
            f"(an index into the {num_hidden_layers + 1} hidden states of the model)."
        )
