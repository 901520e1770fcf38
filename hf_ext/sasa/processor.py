"""`SASALogitsProcessor`: self-disciplined autoregressive sampling as a `transformers` `LogitsProcessor`.

How it reaches `generate`'s KV cache
------------------------------------
A `LogitsProcessor` gets only `(input_ids, scores)`. In transformers 5.x, `_sample` and `_beam_search` call the
model, then `logits_processor(input_ids, scores)` with the cache of exactly `input_ids` in hand (beam search
reorders it only afterwards). The processor registers a forward hook on the causal LM (`register_forward_hook(...,
with_kwargs=True)`, holding the processor only weakly, removed when the processor is garbage collected or
[`SASALogitsProcessor.remove_hook`] is called) that records, for each forward, the returned cache (a weak
reference), the 2-D padding mask, the position ids and the input ids it consumed. At a processor call, the latest
record is used only if it belongs to this `input_ids`: the cache holds exactly `input_ids.shape[1]` tokens of the
same batch size, the recorded input ids are the tail of `input_ids`, and the cache is a plain `DynamicCache` that
can be cropped back without a trace. Records serve one call and are then dropped (in `generate` every forward is
followed by exactly one processor call), so a cache left behind by an earlier step or generation is never reused. The candidates then go through one tree-masked forward of
the decoder body on that cache (see [`hf_ext.sasa.forward`]) and their K entries are cropped off again.

Otherwise (called standalone, a static / quantized / offloaded cache, `use_generate_cache=False`, a forward with
`inputs_embeds`), the processor uses its own cache of the prefix, extended by the new tokens at each call; the
result is the same, at the cost of one extra forward of the new token per step. Its padding mask is read from the
leading pad tokens of `input_ids` (left padding, as `generate` pads).
"""

from __future__ import annotations

import logging
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from hf_ext._validation import check_range

from .._compat import model_output_cache
from .forward import PrefixCache, candidate_hidden_states, is_rollback_cache
from .guards import calling_generation_config, sampling_conflicts
from .hidden_states import SUPPORTED_ATTENTION, attention_implementation, causal_lm_of, decoder_body
from .probe import SASAProbe
from .sampling import NORMALIZATIONS, candidate_set, tilt_scores
from .trace import SASAStep, SASATrace


__all__ = ["SASALogitsProcessor"]

logger = logging.getLogger(__name__)

LARGE_CANDIDATE_SET = 1024


@dataclass
class _ForwardRecord:
    cache_ref: weakref.ref
    length: int
    batch: int
    tail: torch.Tensor | None
    attention_mask: torch.Tensor | None
    mask_is_2d: bool
    next_positions: torch.Tensor | None


def _capture_hook(processor_ref):
    def hook(module, args, kwargs, output):
        processor = processor_ref()
        if processor is not None:
            processor._record_forward(args, kwargs, output)

    return hook


class SASALogitsProcessor(LogitsProcessor):
    r"""
    [`LogitsProcessor`] for self-disciplined autoregressive sampling (SASA, Ko et al., ICLR 2025): tilts each
    decoding step towards the desired side of a linear subspace of the model's own hidden states.

    At each call, the candidates are the tokens of each row's nucleus (`top_p` at `temperature`, at most
    `max_candidates`, by score). For every candidate `v` the processor computes the exact last-layer hidden state of
    `prefix + v` (one batched, tree-masked forward that reuses `generate`'s KV cache; see the module docstring),
    its margin `m_v` under `probe`, and adds `beta * g(m)_v` to its score, with `g` a softmax over the candidates'
    margins (`normalize="softmax"`, the reference implementation) or the margins themselves (`normalize="none"`:
    `p' ∝ p · exp(beta · m)`). With `filter_non_candidates=True` every other token is set to `filter_value`, so the
    processor returns the SASA distribution over its nucleus; with `beta=0` that is exactly nucleus sampling.

    Processor order: `generate` applies user processors *before* its temperature / top-k / top-p warpers, which is
    why this processor selects its nucleus itself. Pass the same `temperature` to `generate` (it then divides the
    tilted scores, so the effective tilt is `beta / temperature`) and leave `generate`'s `top_p` and `top_k` unset:
    a second cut would change the tilted distribution. [`~SASALogitsProcessor.sampling_kwargs`] gives the options
    that leave it as it is. The processor checks the configuration `generate` samples with (see
    [`hf_ext.sasa.guards`]) and warns, once per `generate` call, about a `top_p`, a `top_k` below `max_candidates`,
    a `temperature` other than its own, or another truncating warper (`min_p`, `typical_p`, ...), naming the option
    and what to do. Earlier processors' `-inf` scores are never candidates.

    The probe must have been fitted on `model`: a probe that records another model's weights (its fingerprint, see
    [`SASAProbe.check_model`]) is refused even when the hidden sizes agree.

    Works for batches with left padding, greedy search, sampling and beam search (where scores are
    log-probabilities; the shift is added to them the same way), 4-bit / 8-bit and PEFT models. It never uses the
    random number generator, and does not support continuous batching.

    Args:
        model (`PreTrainedModel`):
            The causal LM that generates (the same object `generate` is called on, or the PEFT model around it).
        probe ([`SASAProbe`]):
            The subspace, fitted on this model.
        beta (`float`, *optional*, defaults to 10.0):
            Strength of the tilt, >= 0. `0` leaves the candidates' scores unchanged.
        top_p (`float`, *optional*, defaults to 0.9):
            Nucleus of the candidate set, in (0, 1].
        temperature (`float`, *optional*, defaults to 1.0):
            Temperature at which the nucleus is computed (use `generate`'s). The reference implementation used 0.6.
        max_candidates (`int`, *optional*, defaults to 50):
            Cap on the candidates per row (the highest-scoring), which bounds the cost of a step; `None`: no cap.
        normalize (`str`, *optional*, defaults to `"softmax"`):
            `"softmax"` or `"none"` (see above).
        filter_non_candidates (`bool`, *optional*, defaults to `True`):
            Set the scores of non-candidates to `filter_value`.
        filter_value (`float`, *optional*, defaults to -inf):
            Score of filtered tokens.
        min_tokens_to_keep (`int`, *optional*, defaults to 1):
            Minimum size of the nucleus (as in `TopPLogitsWarper`).
        use_generate_cache (`bool`, *optional*, defaults to `True`):
            Reuse `generate`'s KV cache when it is provably the prefix's; `False` always uses the processor's own.
        record_trace (`bool`, *optional*, defaults to `False`):
            Keep a [`SASATrace`] of every call in `processor.trace` (candidates, margins, shifts, probabilities).

    Examples:

    ```python
    >>> from transformers import LogitsProcessorList
    >>> from hf_ext.sasa import SASALogitsProcessor, SASAProbe

    >>> probe = SASAProbe.fit(model, tokenizer, desired_texts, undesired_texts)
    >>> sasa = SASALogitsProcessor(model, probe, beta=10.0, top_p=0.9, temperature=0.6)
    >>> out = model.generate(**inputs, **sasa.sampling_kwargs(), logits_processor=LogitsProcessorList([sasa]))
    >>> # the same as: do_sample=True, temperature=0.6, top_p=None, top_k=None
    ```
    """

    supports_continuous_batching = False

    def __init__(
        self,
        model,
        probe: SASAProbe,
        beta: float = 10.0,
        top_p: float = 0.9,
        temperature: float = 1.0,
        max_candidates: int | None = 50,
        normalize: str = "softmax",
        filter_non_candidates: bool = True,
        filter_value: float = -float("inf"),
        min_tokens_to_keep: int = 1,
        use_generate_cache: bool = True,
        record_trace: bool = False,
    ):
        check_range("beta", beta, ge=0)
        check_range("top_p", top_p, gt=0, le=1)
        check_range("temperature", temperature, gt=0)
        check_range("max_candidates", max_candidates, ge=1, integer=True, optional=True)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={normalize!r} is not supported; expected one of {list(NORMALIZATIONS)}.")
        check_range("min_tokens_to_keep", min_tokens_to_keep, ge=1, integer=True)
        if not isinstance(probe, SASAProbe):
            raise ValueError(f"probe must be a SASAProbe, got {type(probe).__name__}.")

        self.body = decoder_body(model)  # raises for a model without a decoder body / hidden states
        self.lm = causal_lm_of(model)
        probe.check_model(model, check_name=False)
        implementation = attention_implementation(model)
        if implementation is not None and implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"attn_implementation={implementation!r} is not supported: the candidate forward needs a 4-D additive "
                f"attention mask; load the model with attn_implementation in {list(SUPPORTED_ATTENTION)}."
            )
        self.vocab_size = _output_vocabulary(self.lm)
        self.num_embeddings = getattr(self.lm.get_input_embeddings(), "num_embeddings", None)
        self.own_cache = PrefixCache(self.body, self.lm.config)
        if not is_rollback_cache(self.own_cache.new_cache()):
            raise ValueError(
                f"{type(self.lm).__name__} uses a cache with sliding-window, linear-attention or other special layers, "
                "which SASA's candidate forward does not support (it needs plain full-attention layers)."
            )

        self.model = model
        self.probe = probe
        self.beta = float(beta)
        self.top_p = float(top_p)
        self.temperature = float(temperature)
        self.max_candidates = max_candidates
        self.normalize = normalize
        self.filter_non_candidates = filter_non_candidates
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep
        self.use_generate_cache = use_generate_cache
        self.trace: SASATrace | None = SASATrace() if record_trace else None
        self.cache_usage = {"generate": 0, "own": 0}
        self._records: list[_ForwardRecord] = []
        self._warned_large = False
        self._checked_config = None
        self._hook = None
        if use_generate_cache:
            self._hook = self.lm.register_forward_hook(_capture_hook(weakref.ref(self)), with_kwargs=True)
            self._finalizer = weakref.finalize(self, self._hook.remove)

    # --------------------------------------------------------------------------------------------- lifecycle
    def remove_hook(self) -> None:
        """Detach from the model (the processor then always uses its own cache)."""
        if self._hook is not None:
            self._finalizer()
            self._hook = None
        self.use_generate_cache = False
        self._records.clear()

    def reset(self) -> None:
        """Forget the recorded forwards, the own cache and the trace (e.g. between two `generate` calls)."""
        self._records.clear()
        self.own_cache.reset()
        if self.trace is not None:
            self.trace = SASATrace()
        self.cache_usage = {"generate": 0, "own": 0}

    def _record_forward(self, args, kwargs, output) -> None:
        cache = model_output_cache(output)
        if cache is None or not hasattr(cache, "get_seq_length"):
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        positions = kwargs.get("position_ids")
        record = _ForwardRecord(
            cache_ref=weakref.ref(cache),
            length=int(cache.get_seq_length()),
            batch=int(input_ids.shape[0]) if isinstance(input_ids, torch.Tensor) else -1,
            tail=input_ids.detach() if isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2 else None,
            attention_mask=mask.detach() if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None,
            mask_is_2d=mask is None or (isinstance(mask, torch.Tensor) and mask.ndim == 2),
            next_positions=positions[:, -1].detach() + 1
            if isinstance(positions, torch.Tensor) and positions.ndim == 2
            else None,
        )
        self._records = [*self._records[-3:], record]

    # --------------------------------------------------------------------------------------------- generate's options
    def sampling_kwargs(self, **generation_kwargs) -> dict:
        """The sampling options of `generate` that leave this processor's distribution as it is: `do_sample=True`,
        the processor's `temperature`, and no truncation of `generate`'s own (`top_p=None`, `top_k=None`; with
        `filter_non_candidates=False`, `generate`'s nucleus cuts the tail instead: `top_p` is the processor's).

        Args:
            generation_kwargs: Further options of `generate`, merged in.

        Returns:
            `dict`: keyword arguments for `generate`.

        Raises:
            `ValueError`: an option in `generation_kwargs` would cut or rescale SASA's distribution again (a
                `top_p`, a `top_k` below `max_candidates`, another `temperature`, `min_p`, ...); the message names it
                and what to do instead.
        """
        problems = sampling_conflicts(
            generation_kwargs,
            top_p=self.top_p,
            temperature=self.temperature,
            max_candidates=self.max_candidates,
            filters=self.filter_non_candidates,
            source="generate would sample",
        )
        if problems:
            raise ValueError(" ".join(problems))
        top_p = None if self.filter_non_candidates else self.top_p
        return {"do_sample": True, "temperature": self.temperature, "top_p": top_p, "top_k": None, **generation_kwargs}

    def _check_generate_options(self) -> None:
        """Warn, once per `generate` call, about options of `generate` that cut SASA's distribution again."""
        config = calling_generation_config(skip=3)
        if config is None or (self._checked_config is not None and self._checked_config() is config):
            return
        self._checked_config = weakref.ref(config)
        for message in sampling_conflicts(
            config,
            top_p=self.top_p,
            temperature=self.temperature,
            max_candidates=self.max_candidates,
            filters=self.filter_non_candidates,
        ):
            warnings.warn(f"SASALogitsProcessor: {message}", UserWarning, stacklevel=3)

    # --------------------------------------------------------------------------------------------- prefix state
    def _generate_cache_for(self, input_ids: torch.Tensor):
        """The recorded cache of the latest forward, if it provably holds `input_ids`. A record serves one call only
        (in `generate`, every forward is followed by one processor call), so a cache left behind by an earlier
        step or an earlier generation is never reused."""
        batch, length = input_ids.shape
        records, self._records = self._records, []
        for record in reversed(records):
            cache = record.cache_ref()
            if cache is None or record.tail is None or not record.mask_is_2d:
                continue
            if record.batch != batch or record.length != length or cache.get_seq_length() != length:
                continue
            tail = record.tail.to(input_ids.device)
            if tail.shape[1] > length or not torch.equal(input_ids[:, -tail.shape[1] :], tail):
                continue
            if not is_rollback_cache(cache):
                continue
            mask = record.attention_mask
            if mask is None:
                mask = torch.ones_like(input_ids)
            elif mask.shape != (batch, length):
                continue
            positions = record.next_positions
            if positions is None:
                positions = torch.full((batch,), length, dtype=torch.long, device=input_ids.device)
            return cache, mask.to(input_ids.device), positions.to(input_ids.device)
        return None

    def _padding_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        pad = getattr(getattr(self.lm, "generation_config", None), "pad_token_id", None)
        if pad is None:
            pad = getattr(self.lm.config, "pad_token_id", None)
        if isinstance(pad, (list, tuple)):
            pad = pad[0] if pad else None
        if pad is None:
            return torch.ones_like(input_ids)
        return ((input_ids != int(pad)).long().cumsum(-1) > 0).long()  # leading pads only (left padding)

    # --------------------------------------------------------------------------------------------- margins
    @torch.no_grad()
    def candidate_hidden_states(self, input_ids: torch.LongTensor, candidate_ids: torch.LongTensor) -> torch.Tensor:
        """Hidden states `(batch, K, hidden)` at the probe's layer of `input_ids + candidate_ids[:, k]`."""
        return self._candidate_hidden_states(input_ids, candidate_ids)[0]

    def _candidate_hidden_states(self, input_ids, candidate_ids):
        # The processor's own forwards run in eval mode: a model in train mode (generation inside a training loop)
        # would otherwise draw dropout masks, which makes the margins noisy (the probe was fitted without dropout)
        # and advances the random generators the sampler uses, on every device the model lives on.
        with _eval_mode(self.body):
            state = self._generate_cache_for(input_ids) if self.use_generate_cache else None
            source = "generate"
            if state is None:
                source = "own"
                state = self.own_cache.sync(input_ids, self._padding_mask(input_ids))
            cache, mask, positions = state
            self.cache_usage[source] += 1
            hidden = candidate_hidden_states(self.body, cache, candidate_ids, mask, positions, self.probe.layer)
        return hidden, source

    def candidate_margins(self, input_ids: torch.LongTensor, candidate_ids: torch.LongTensor) -> torch.Tensor:
        """Probe margins `(batch, K)` of `input_ids + candidate_ids[:, k]`, float32."""
        return self.probe.margin(self.candidate_hidden_states(input_ids, candidate_ids))

    # --------------------------------------------------------------------------------------------- call
    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Indices of input sequence tokens in the vocabulary.
            scores (`torch.Tensor` of shape `(batch_size, config.vocab_size)`):
                Prediction scores of a language modeling head. These can be logits for each vocabulary when not
                using beam search or log softmax for each vocabulary token when using beam search.

        Return:
            `torch.Tensor` of shape `(batch_size, config.vocab_size)`: The processed prediction scores.

        Raises:
            `ValueError`: `scores` are not the model's logits for `input_ids` (another width than its LM head,
                another batch size), hold NaN or `+inf`, or `input_ids` hold ids beyond the model's embeddings.
        """
        self._check_inputs(input_ids, scores)
        self._check_generate_options()
        candidate_ids, valid = candidate_set(
            scores,
            top_p=self.top_p,
            temperature=self.temperature,
            max_candidates=self.max_candidates,
            min_tokens_to_keep=self.min_tokens_to_keep,
        )
        if candidate_ids.shape[1] > LARGE_CANDIDATE_SET and not self._warned_large:
            warnings.warn(
                f"SASALogitsProcessor is forwarding {candidate_ids.shape[1]} candidates per row; set top_p < 1 or "
                "max_candidates to bound the cost of a step.",
                UserWarning,
                stacklevel=2,
            )
            self._warned_large = True
        hidden, source = self._candidate_hidden_states(input_ids, candidate_ids.to(input_ids.device))
        margins = self.probe.margin(hidden).to(scores.device)
        processed, shift = tilt_scores(
            scores,
            candidate_ids,
            valid,
            margins,
            self.beta,
            normalize=self.normalize,
            filter_non_candidates=self.filter_non_candidates,
            filter_value=self.filter_value,
        )
        if self.trace is not None:
            self.trace.append(self._step(input_ids, scores, candidate_ids, valid, margins, shift, source))
        return processed

    def _check_inputs(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        if input_ids.ndim != 2 or scores.ndim != 2 or input_ids.shape[0] != scores.shape[0]:
            raise ValueError(
                f"SASALogitsProcessor expects input_ids (batch, length) and scores (batch, vocab) of the same batch, "
                f"got shapes {tuple(input_ids.shape)} and {tuple(scores.shape)}."
            )
        if self.vocab_size is not None and scores.shape[1] != self.vocab_size:
            raise ValueError(
                f"scores have {scores.shape[1]} columns but the model's vocabulary (its LM head) has {self.vocab_size}: "
                "SASALogitsProcessor re-weights the model's own next-token scores, one per token of its vocabulary."
            )
        if self.num_embeddings is not None and input_ids.numel() and int(input_ids.max()) >= self.num_embeddings:
            raise ValueError(
                f"input_ids hold token id {int(input_ids.max())}, beyond the model's {self.num_embeddings} embeddings; "
                "was the prompt tokenized with another tokenizer?"
            )

    def _step(self, input_ids, scores, candidate_ids, valid, margins, shift, source) -> SASAStep:
        before = scores.gather(1, candidate_ids).float() / self.temperature
        after = before + shift.float() / self.temperature
        probs = before.masked_fill(~valid, float("-inf")).softmax(-1)
        tilted = after.masked_fill(~valid, float("-inf")).softmax(-1)
        return SASAStep(
            input_length=int(input_ids.shape[1]),
            candidate_ids=candidate_ids.cpu(),
            valid=valid.cpu(),
            margins=margins.float().cpu(),
            shift=shift.float().cpu(),
            probs=probs.cpu(),
            tilted_probs=tilted.cpu(),
            source=source,
        )

    def __repr__(self) -> str:
        return (
            f"SASALogitsProcessor(beta={self.beta}, top_p={self.top_p}, temperature={self.temperature}, "
            f"max_candidates={self.max_candidates}, normalize={self.normalize!r}, probe={self.probe!r})"
        )


def _output_vocabulary(lm) -> int | None:
    """Width of the scores `lm` produces: its LM head's output size (the configured vocabulary without a head)."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    width = getattr(head, "out_features", None)
    if width is None and getattr(head, "weight", None) is not None and head.weight.ndim == 2:
        width = head.weight.shape[0]
    if width is None:
        config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        width = getattr(config, "vocab_size", None)
    return int(width) if width is not None else None


@contextmanager
def _eval_mode(module: torch.nn.Module):
    """`module` in eval mode for the block; the modules that were training are put back (and only those)."""
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True
