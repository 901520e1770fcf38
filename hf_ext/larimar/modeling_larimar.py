"""PyTorch Larimar: an encoder, an episodic memory and a causal decoder conditioned on what it reads.

The decoder is conditioned on a latent `z` (read from memory, or zero when there is nothing relevant to read) as in
the official model: a linear map of `z` gives one key / value slot per layer, placed before the tokens in the KV
cache (so token positions start at 1), and another linear map of `z` is added to every token embedding. The slot
goes through the ordinary transformers `Cache` API, so any decoder whose attention reads a `Cache` works (GPT-2 and
Llama-family models among them), with `generate`, left padding, beam search and quantized weights.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .._checks import embedding_rows
from .._compat import CACHE_NAME, cache_kwargs, model_output_cache, named_cache_field, pop_cache
from . import memory as memory_math
from .configuration_larimar import LarimarConfig
from .context import SplicedBatch, splice_context


logger = logging.get_logger(__name__)

__all__ = [
    "LarimarCausalLMOutputWithPast",
    "LarimarForCausalLM",
    "LarimarModel",
    "LarimarModelOutput",
    "LarimarPreTrainedModel",
    "LarimarPrefixCache",
]

MEMORY_FILE = "larimar_memory.safetensors"
"""The file `save_pretrained` writes the episodic memory to (safetensors, with the config it belongs to)."""
MEMORY_FORMAT = "hf-ext-larimar-memory/1"


@dataclass
@named_cache_field
class LarimarModelOutput(ModelOutput):
    """
    Output of [`LarimarModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The decoder's last hidden states (for the tokens; the memory slot is not a token).
        cache (`Cache`, *optional*):
            The decoder's cache, memory slot first (`past_key_values` on transformers < 5.24).
        hidden_states, attentions (`tuple(torch.FloatTensor)`, *optional*):
            As returned by the decoder.
        memory_latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`):
            The latent the decoder was conditioned on.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    memory_latent: torch.FloatTensor | None = None


@dataclass
@named_cache_field
class LarimarCausalLMOutputWithPast(ModelOutput):
    """
    Output of [`LarimarForCausalLM`].

    Args:
        loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
            With `labels` and encoder inputs: Larimar's training objective (see [`LarimarForCausalLM.forward`]);
            with `labels` only: the language-modeling loss given the memory latent.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            Prediction scores (in training, those of the items decoded from their memory read-out).
        cache (`Cache`, *optional*):
            The decoder's cache, memory slot first (`past_key_values` on transformers < 5.24).
        hidden_states, attentions (`tuple(torch.FloatTensor)`, *optional*):
            As returned by the decoder.
        memory_latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`):
            The latent the decoder was conditioned on.
        reconstruction_loss, autoencoder_loss, no_memory_loss, query_loss, kl_loss (`torch.FloatTensor`, *optional*):
            The terms of the training objective, unweighted.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    memory_latent: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    autoencoder_loss: torch.FloatTensor | None = None
    no_memory_loss: torch.FloatTensor | None = None
    query_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None


# The memory slot in the KV cache --------------------------------------------------------------------------------


class LarimarPrefixLayer(DynamicLayer):
    """A read-only cache layer holding only the memory slot: `update` returns the slot followed by the new states
    and stores nothing, so a layer recomputed by gradient checkpointing sees exactly what it saw the first time."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class LarimarPrefixCache(Cache):
    """A `Cache` that holds Larimar's memory slot (one key / value per layer) and nothing else.

    Used for full-sequence forwards (training, `use_cache=False`), where no KV cache is kept but the slot must still
    be attended to. Generation uses an ordinary `DynamicCache` pre-filled with the slot instead.
    """

    def __init__(self, prefixes: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__(layers=[LarimarPrefixLayer(k, v) for k, v in prefixes])


# The episodic memory ------------------------------------------------------------------------------------------------


@dataclass
class EpisodicMemoryState:
    """What `write_memory` / `forget_memory` maintain: the sequential (ridge) memory, its precision matrix, the
    reference memory its keys come from, the latents currently stored (for scope detection and to forget exactly what
    was written) and the encoder tokens of each (to find an item again whatever the padding, batch or dtype of a
    later encoding; `None` for items restored from a file that has no tokens), and each item's text and the decoder
    tokens of its context (for `memory_readout="context"`; `None` for items written as token ids)."""

    memory: torch.Tensor  # [K, C]
    precision: torch.Tensor  # [K, K]
    reference: torch.Tensor  # [K, C]
    latents: torch.Tensor  # [S, C]
    ridge: float
    reference_pinv: torch.Tensor | None = field(default=None, repr=False)  # cached M_ref⁺, [C, K]
    tokens: list[tuple[int, ...] | None] = field(default_factory=list, repr=False)  # [S]
    texts: list[str | None] = field(default_factory=list, repr=False)  # [S]
    contexts: list[tuple[int, ...] | None] = field(default_factory=list, repr=False)  # [S]

    def __post_init__(self):
        for name in ("tokens", "texts", "contexts"):
            if not getattr(self, name):
                setattr(self, name, [None] * self.size)

    def keep(self, indices: list[int]) -> None:
        """Keep only the per-item records (latents, tokens, texts, contexts) of the stored items `indices`."""
        self.latents = self.latents[indices]
        self.tokens = [self.tokens[i] for i in indices]
        self.texts = [self.texts[i] for i in indices]
        self.contexts = [self.contexts[i] for i in indices]

    @property
    def size(self) -> int:
        return self.latents.shape[0]

    def keys(self, z: torch.Tensor) -> torch.Tensor:
        """Reference keys `z M_ref⁺` of latents `[B, N, C]` (the pseudo-inverse is computed once per state)."""
        if self.reference_pinv is None:
            self.reference_pinv = memory_math.pinv(self.reference)
        return z.to(self.reference_pinv.dtype) @ self.reference_pinv

    def to(self, device) -> EpisodicMemoryState:
        if self.memory.device == torch.device(device):
            return self
        return EpisodicMemoryState(
            self.memory.to(device),
            self.precision.to(device),
            self.reference.to(device),
            self.latents.to(device),
            self.ridge,
            reference_pinv=self.reference_pinv.to(device) if self.reference_pinv is not None else None,
            tokens=list(self.tokens),
            texts=list(self.texts),
            contexts=list(self.contexts),
        )

    def find(self, latents: torch.Tensor, tokens: list[tuple[int, ...]], rtol: float) -> list[int | None]:
        """The stored item each of the given items is, each stored item matched at most once: the one with the same
        encoder tokens, else (for items stored without tokens) the nearest latent within a relative distance of
        `rtol`; `None` where there is none."""
        taken, found = set(), []
        stored = self.latents.to(latents.device, torch.float32)
        for latent, item_tokens in zip(latents.float(), tokens):
            index = next(
                (i for i, t in enumerate(self.tokens) if i not in taken and t is not None and t == item_tokens), None
            )
            if index is None:
                candidates = [i for i, t in enumerate(self.tokens) if i not in taken and t is None]
                if candidates:
                    distance = (stored[candidates] - latent).norm(dim=-1) / stored[candidates].norm(dim=-1)
                    best = int(distance.argmin())
                    if distance[best] <= rtol:
                        index = candidates[best]
            if index is not None:
                taken.add(index)
            found.append(index)
        return found


@dataclass
class LarimarMemoryOutput(ModelOutput):
    """
    Output of [`LarimarMemory`].

    Args:
        memory (`torch.FloatTensor` of shape `(batch_size, memory_size, latent_size)`, *optional*):
            The posterior memory of each episode (float32 or float64, `config.memory_dtype`).
        read_latents (`torch.FloatTensor` of shape `(batch_size, num_queries, latent_size)`, *optional*):
            What the queries read from the memories.
        read_weights (`torch.FloatTensor` of shape `(batch_size, num_queries, memory_size)`, *optional*):
            The mean read weights `W̄ = Q M⁺`.
        read_logvar (`torch.FloatTensor` broadcastable to `read_weights`, *optional*):
            The log-variance of the read weights (for the KL term of the objective).
        prior (`torch.FloatTensor` of shape `(memory_size, latent_size)`, *optional*):
            A detached copy of the prior memory `M0` (when called without episodes).
    """

    memory: torch.FloatTensor | None = None
    read_latents: torch.FloatTensor | None = None
    read_weights: torch.FloatTensor | None = None
    read_logvar: torch.FloatTensor | None = None
    prior: torch.FloatTensor | None = None


class LarimarMemory(nn.Module):
    """The learned part of the memory: the prior `M0` (`[K, C]`, identity at initialisation) and the parameters
    of the log-variance of the training-time read weights.

    Both are only ever read inside [`~LarimarMemory.forward`], so that sharding wrappers that gather a module's
    parameters around its forward (FSDP, DeepSpeed ZeRO-3) see every use of them.
    """

    def __init__(self, config: LarimarConfig):
        super().__init__()
        self.config = config
        k, c = config.memory_size, config.latent_size
        self.prior = nn.Parameter(torch.eye(k, c))
        if config.w_logvar_mode == "memory":
            self.w_logvar = nn.Linear(k * c, k)
        elif config.w_logvar_mode == "slot":
            self.w_logvar = nn.Parameter(torch.zeros(k))
        else:
            self.w_logvar = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        episodes: torch.Tensor | None = None,
        queries: torch.Tensor | None = None,
        *,
        noise_std: float = 0.0,
        sample: bool = False,
    ) -> LarimarMemoryOutput:
        r"""
        Write episodes into memories in one shot against the prior, and read them with queries.

        Args:
            episodes (`torch.Tensor` of shape `(batch_size, episode_size, latent_size)`, *optional*):
                The encodings to write, one memory per episode. Without them, only a copy of the prior is returned
                (what `write_memory` and `read_long_context` start from).
            queries (`torch.Tensor` of shape `(batch_size, num_queries, latent_size)`, *optional*):
                The encodings to read the memories with.
            noise_std (`float`, *optional*, defaults to 0):
                Standard deviation of the write noise.
            sample (`bool`, *optional*, defaults to `False`):
                Sample the read weights around their mean (the training-time read of the paper).
        """
        if episodes is None:
            return LarimarMemoryOutput(prior=self.prior.detach().clone())
        pinv_kwargs = {"pinv_method": self.config.pinv_method, "pinv_steps": self.config.pinv_steps}
        dtype = self.config.memory_torch_dtype
        # One pseudo-inverse of the prior for all the episodes of this forward.
        # No finiteness check in the training forward (it would synchronise every step); the loss shows a NaN.
        memory = memory_math.write(
            episodes, self.prior, noise_std=noise_std, dtype=dtype, check_finite=False, **pinv_kwargs
        )
        if queries is None:
            return LarimarMemoryOutput(memory=memory)
        w_logvar = self._read_logvar(memory)
        read_latents, read_weights = memory_math.read(
            queries,
            memory,
            w_logvar=w_logvar if sample else None,
            iterations=self.config.read_iterations,
            dtype=dtype,
            return_addresses=True,
            check_finite=False,
            **pinv_kwargs,
        )
        return LarimarMemoryOutput(
            memory=memory, read_latents=read_latents, read_weights=read_weights, read_logvar=w_logvar
        )

    def _read_logvar(self, memory: torch.Tensor) -> torch.Tensor:
        """Log-variance of the read weights for memories `[B, K, C]`, broadcastable to `[B, N, K]`."""
        if isinstance(self.w_logvar, nn.Linear):
            flat = memory.reshape(memory.shape[0], -1).to(self.w_logvar.weight.dtype)
            return self.w_logvar(flat).unsqueeze(1)
        return self.w_logvar.view(1, 1, -1)


def _decoder_geometry(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a decoder config."""
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if head_dim * heads != config.hidden_size and getattr(config, "head_dim", None) is None:
        raise ValueError(
            f"The decoder's hidden_size={config.hidden_size} is not a multiple of num_attention_heads={heads}."
        )
    layer_types = getattr(config, "layer_types", None) or []
    unsupported = sorted({t for t in layer_types if "attention" not in t or "linear" in t})
    if unsupported:
        raise ValueError(
            f"The decoder has layers of type {unsupported}; Larimar's memory slot needs attention layers with a KV cache."
        )
    return layers, kv_heads, head_dim


class LarimarPreTrainedModel(PreTrainedModel):
    config: LarimarConfig
    config_class = LarimarConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _skip_keys_device_placement = [CACHE_NAME]
    # Larimar's own layers stay in float32 (and unquantized) whatever the dtype or quantization of the encoder and
    # the decoder: the memory math is sensitive to rounding.
    _keep_in_fp32_modules = ["latent_projection", "prefix_projection", "embedding_projection", "memory"]
    # (`_keep_in_fp32_modules` alone only applies to float16; the strict list applies to bfloat16 as well.)
    _keep_in_fp32_modules_strict = _keep_in_fp32_modules
    # The loss is averaged inside `forward`; let `Trainer` scale it for gradient accumulation.
    accepts_loss_kwargs = False
    # The encoder's pooler is dropped unless `pooling="pooler"` (see `_drop_unused_pooler`).
    _keys_to_ignore_on_load_unexpected = [r"encoder\.pooler\."]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LarimarMemory):
            init.copy_(module.prior, torch.eye(*module.prior.shape, dtype=module.prior.dtype))
            if isinstance(module.w_logvar, nn.Parameter):
                init.zeros_(module.w_logvar)
        elif isinstance(module, LarimarModel):
            init.zeros_(module.latent_center)
            init.zeros_(module.latent_center_batches)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, **kwargs):
        from torch.utils.checkpoint import checkpoint

        super()._set_gradient_checkpointing(
            enable=enable, gradient_checkpointing_func=gradient_checkpointing_func or checkpoint, **kwargs
        )
        decoder = self._larimar().decoder
        # The memory slot lives in a read-only cache: checkpointed layers may keep reading it (the recompute sees the
        # same states), so the decoder must not drop its cache under checkpointing.
        decoder.gradient_checkpointing = False
        for module in decoder.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module._can_checkpoint_with_cache = enable

    def _larimar(self) -> LarimarModel:
        return self if isinstance(self, LarimarModel) else self.model

    # Memory API (shared by LarimarModel and LarimarForCausalLM) --------------------------------------------------

    @property
    def memory_state(self) -> EpisodicMemoryState | None:
        """The episodic memory written with [`write_memory`] (`None` when empty)."""
        return self._larimar()._memory_state

    @property
    def memory_capacity(self) -> int:
        """How many items the memory can tell apart: the rank bound `min(memory_size, latent_size, encoder width)`."""
        config = self.config
        return min(config.memory_size, config.latent_size, config.encoder.hidden_size)

    def _encoder_inputs(self, texts, processor, encoder_input_ids, encoder_attention_mask):
        if texts is not None:
            if isinstance(texts, str):
                texts = [texts]
            if len(texts) == 0:
                raise ValueError("texts is empty: give at least one text.")
            processor = processor or getattr(self, "processor", None)
            if processor is None:
                raise ValueError(
                    "Pass processor=LarimarProcessor(...) (or set model.processor) to write texts, or pass "
                    "encoder_input_ids."
                )
            self._check_processor(processor)
            inputs = processor.encode_memory(texts)
            encoder_input_ids, encoder_attention_mask = inputs["encoder_input_ids"], inputs["encoder_attention_mask"]
        if encoder_input_ids is None or encoder_input_ids.shape[0] == 0:
            raise ValueError("Nothing to encode: give texts (with a processor) or a non-empty encoder_input_ids.")
        _check_encoder_ids(encoder_input_ids, encoder_attention_mask, self._larimar().encoder)
        return encoder_input_ids, encoder_attention_mask

    def _check_processor(self, processor) -> None:
        """`processor.check_model(self)`, once per processor object (it reads both tokenizers' vocabularies)."""
        checked = getattr(self, "_checked_processor", None)
        if checked is not None and checked() is processor:
            return
        if hasattr(processor, "check_model"):
            processor.check_model(self)
        self._checked_processor = weakref.ref(processor)

    @torch.no_grad()
    def encode_texts(self, texts=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None):
        """Latent encodings (`[N, latent_size]`, float32) of texts, computed in eval mode."""
        encoder_input_ids, encoder_attention_mask = self._encoder_inputs(
            texts, processor, encoder_input_ids, encoder_attention_mask
        )
        model = self._larimar()
        was_training = model.training
        model.eval()  # no dropout, and the latent centre is not updated
        try:
            z = model.encode(encoder_input_ids.to(self.device), _to_device(encoder_attention_mask, self.device))
        finally:
            model.train(was_training)
        return z.float()

    def _encode_items(self, texts, processor, encoder_input_ids, encoder_attention_mask):
        """Latents of the items to write or forget, and each item's encoder tokens (padding removed)."""
        encoder_input_ids, encoder_attention_mask = self._encoder_inputs(
            texts, processor, encoder_input_ids, encoder_attention_mask
        )
        z = self.encode_texts(encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask)
        mask = encoder_attention_mask if encoder_attention_mask is not None else torch.ones_like(encoder_input_ids)
        tokens = [tuple(row[keep.bool()].tolist()) for row, keep in zip(encoder_input_ids.cpu(), mask.cpu())]
        return z, tokens

    def reset_memory(self) -> None:
        """Forget everything written: the memory becomes empty and every query reads a zero latent."""
        self._larimar()._memory_state = None

    def _new_state(self) -> EpisodicMemoryState:
        config = self.config
        # Always float64, whatever `memory_dtype`: the recursive least-squares state accumulates every write and
        # forget, and its precision matrix `λI + WᵀW` has a condition number ~1/λ (1e8 for λ = 1e-8), beyond float32.
        # One K x K solve per write costs little even where float64 is slow.
        dtype = torch.float64
        model = self._larimar()
        memory, precision = memory_math.ridge_memory(
            1, config.memory_size, config.latent_size, config.memory_ridge, dtype=dtype, device=self.device
        )
        reference = model.memory().prior.to(dtype)
        latents = torch.zeros(0, config.latent_size, dtype=torch.float32, device=self.device)
        return EpisodicMemoryState(memory[0], precision[0], reference, latents, config.memory_ridge)

    def write_memory(self, texts=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None):
        """Write texts (facts, sentences) into the episodic memory in one shot, without gradient steps.

        Args:
            texts (`str` or `list[str]`):
                What to remember.
            processor ([`LarimarProcessor`], *optional*):
                Tokenizes `texts` for the encoder; `model.processor` when set.
            encoder_input_ids, encoder_attention_mask (`torch.LongTensor`, *optional*):
                Already tokenized texts, instead of `texts`.

        Returns:
            `int`: the number of items the memory holds.
        """
        texts = [texts] if isinstance(texts, str) else texts
        contexts = self._context_tokens(texts, processor)
        z, tokens = self._encode_items(texts, processor, encoder_input_ids, encoder_attention_mask)
        model = self._larimar()
        state = model._memory_state or self._new_state()
        state = state.to(self.device)
        keys = state.keys(z[None])
        memory, precision = memory_math.sequential_write(
            z[None], keys, state.memory[None], state.precision[None], alpha=1.0
        )
        state.memory, state.precision = memory[0], precision[0]
        state.latents = torch.cat([state.latents, z], 0)
        state.tokens = state.tokens + tokens
        state.texts = state.texts + (list(texts) if texts is not None else [None] * len(tokens))
        state.contexts = state.contexts + (contexts or [None] * len(tokens))
        model._memory_state = state
        if state.size > self.memory_capacity:
            warnings.warn(
                f"The Larimar memory now holds {state.size} items but can tell apart at most {self.memory_capacity} "
                f"(min of memory_size={self.config.memory_size}, latent_size={self.config.latent_size} and the "
                f"encoder's hidden size={self.config.encoder.hidden_size}): recall of every stored item degrades once "
                "the items outnumber that rank. Forget items, reset the memory or use a larger model"
                + (
                    ' (or context_addressing="nearest", which does not blur with the number of items).'
                    if self.config.memory_readout == "context" and self.config.context_addressing == "memory"
                    else "."
                ),
                stacklevel=2,
            )
        return state.size

    def _context_tokens(self, texts: list[str] | None, processor) -> list[tuple[int, ...] | None] | None:
        """The decoder tokens each text is read back as with `memory_readout="context"`; `None` without texts."""
        needed = self.config.memory_readout == "context"
        if texts is None:
            if needed:
                raise ValueError(
                    'memory_readout="context" places the written texts before the prompt, so write_memory needs the '
                    "texts (and a processor), not encoder_input_ids."
                )
            return None
        processor = processor or getattr(self, "processor", None)
        if processor is None or not hasattr(processor, "context_ids"):
            if needed:
                raise ValueError(
                    'memory_readout="context" needs a LarimarProcessor (it tokenizes the texts for the decoder); got '
                    f"{type(processor).__name__}."
                )
            return None
        return [tuple(ids) for ids in processor.context_ids(texts, self.config.context_template)]

    @property
    def memory_texts(self) -> list[str | None]:
        """The texts stored in the episodic memory, in the order written (`None` for items written as token ids)."""
        state = self.memory_state
        return list(state.texts) if state is not None else []

    def read_memory_items(
        self,
        queries=None,
        processor=None,
        *,
        encoder_input_ids=None,
        encoder_attention_mask=None,
        scope: bool = True,
    ) -> list[int | None]:
        """For each query, the index (in [`memory_texts`]) of the stored item it addresses: the largest of the
        memory read's weights over the items ([`~hf_ext.larimar.memory.item_weights`]), or the nearest stored latent
        with `config.context_addressing="nearest"`. `None` for a query out of scope (`config.scope_threshold`, with
        `scope=True`) and for every query of an empty memory."""
        q = self.encode_texts(
            queries, processor, encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask
        )
        return self._read_items(q, scope=scope)

    def _read_items(self, q: torch.Tensor, scope: bool = True) -> list[int | None]:
        state = self._larimar()._memory_state
        if state is None or state.size == 0:
            return [None] * q.shape[0]
        state = state.to(q.device)
        if self.config.context_addressing == "nearest":
            stored = torch.nn.functional.normalize(state.latents.to(q.dtype), dim=-1)
            best = (torch.nn.functional.normalize(q, dim=-1) @ stored.T).argmax(-1)
        else:
            keys = state.keys(q[None])
            best = memory_math.item_weights(keys, state.keys(state.latents[None]), state.precision[None])[0].argmax(-1)
        if scope and self.config.scope_threshold is not None:
            in_scope = memory_math.scope_mask(q[None], state.latents[None], self.config.scope_threshold)[0]
            best = torch.where(in_scope, best, -1)
        return [index if index >= 0 else None for index in best.tolist()]

    def _splice_memory_context(
        self, input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, side: str | None = None
    ) -> SplicedBatch | None:
        """`memory_readout="context"`: the batch with the context each query reads placed after its prompt's BOS
        (see [`splice_context`]); `None` when no query reads anything."""
        if input_ids is None:
            raise ValueError('memory_readout="context" needs input_ids (the context is placed between tokens).')
        state = self._larimar()._memory_state
        if state is None or state.size == 0:
            return None
        q = self.encode_texts(encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask)
        contexts = [state.contexts[i] if i is not None else None for i in self._read_items(q)]
        if not any(contexts):
            return None
        # The padding is masked: any id the embeddings have will do.
        bos = self.config.decoder.bos_token_id
        return splice_context(input_ids, attention_mask, contexts, pad_token_id=0, bos_token_id=bos, side=side)

    def _zero_latents(self, batch: int) -> torch.Tensor:
        """The latents of "no memory" (`[batch, latent_size]`, the model's dtype)."""
        return torch.zeros(batch, self.config.latent_size, device=self.device, dtype=self.dtype)

    def forget_memory(self, texts=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None):
        """Forget texts written earlier with [`write_memory`] (a recursive least-squares step with weight -1).

        Each text is found among the stored items by its encoder tokens, so the padding, batch and dtype it is
        encoded with now do not matter, and the latent stored when it was written is removed, which undoes that
        write exactly. (Items restored from a memory file without tokens are matched by their nearest latent.)
        Texts that are not in the memory are named in a warning and skipped. Returns the number of items the memory
        holds.
        """
        z, tokens = self._encode_items(texts, processor, encoder_input_ids, encoder_attention_mask)
        model = self._larimar()
        state = model._memory_state
        if state is None or state.size == 0:
            warnings.warn("The Larimar memory is empty: there is nothing to forget.", stacklevel=2)
            return 0
        state = state.to(self.device)
        found = state.find(z, tokens, rtol=_latent_match_rtol(self._larimar().encoder))
        missing = [i for i, index in enumerate(found) if index is None]
        if missing:
            if texts is None:
                names = [f"encoder_input_ids[{i}]" for i in missing]
            else:
                items = [texts] if isinstance(texts, str) else list(texts)
                names = [repr(items[i]) for i in missing]
            warnings.warn(
                f"{len(missing)} of the {len(found)} items to forget are not in the memory and were skipped: "
                f"{', '.join(names)}.",
                stacklevel=2,
            )
        indices = [index for index in found if index is not None]
        if indices:
            z_found = state.latents[indices][None]  # exactly what was written
            memory, precision = memory_math.sequential_write(
                z_found, state.keys(z_found), state.memory[None], state.precision[None], alpha=-1.0
            )
            state.memory, state.precision = memory[0], precision[0]
            gone = set(indices)
            state.keep([i for i in range(state.size) if i not in gone])
        model._memory_state = state
        return state.size

    def read_memory(
        self,
        queries=None,
        processor=None,
        *,
        encoder_input_ids=None,
        encoder_attention_mask=None,
        scope: bool = True,
    ) -> torch.Tensor:
        """The latents (`[N, latent_size]`, in the model's dtype) that queries read from the episodic memory.

        With `scope=True` (and `config.scope_threshold` set), a query farther than the threshold (cosine distance)
        from everything stored reads a zero latent, as does every query of an empty memory.
        """
        q = self.encode_texts(
            queries, processor, encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask
        )
        return self._read_latents(q, scope=scope)

    def _read_latents(self, q: torch.Tensor, scope: bool = True) -> torch.Tensor:
        model = self._larimar()
        state = model._memory_state
        dtype = self.dtype if self.dtype.is_floating_point else torch.float32
        if state is None or state.size == 0:
            return torch.zeros(q.shape[0], self.config.latent_size, device=self.device, dtype=dtype)
        state = state.to(q.device)
        z = q[None]
        for _ in range(self.config.read_iterations):
            z = memory_math.read_with_keys(state.keys(z), state.memory[None])
        z = z[0]
        if scope and self.config.scope_threshold is not None:
            in_scope = memory_math.scope_mask(q[None], state.latents[None], self.config.scope_threshold)[0]
            z = torch.where(in_scope[:, None], z, torch.zeros_like(z))
        return z.to(dtype)

    def read_long_context(
        self,
        context,
        queries,
        processor=None,
        *,
        episode_size: int | None = None,
    ) -> torch.Tensor:
        """Latents for queries over a context longer than one memory episode (paper §5.5).

        The context's chunks are written into memories of `episode_size` (default `config.episode_size`) chunks
        each, every memory is read with the query, the read-outs are written into a next-level memory, and so on
        until one episode remains; the final read-out is returned (`[N, latent_size]`), ready for
        `generate(..., memory_latent=...)`. The episodic memory of [`write_memory`] is left untouched.

        Args:
            context (`list[str]`): The context, split into chunks (sentences).
            queries (`str` or `list[str]`): The questions.
        """
        if isinstance(context, str) or len(context) == 0:
            raise ValueError("context must be a non-empty list of chunks (e.g. sentences).")
        chunks = self.encode_texts(context, processor)
        q = self.encode_texts(queries, processor)
        model = self._larimar()
        episode_size = episode_size or self.config.episode_size
        found = memory_math.hierarchical_read(
            chunks[None],
            q[None],
            model.memory().prior.float(),
            episode_size,
            write_fn=lambda z, m0: memory_math.write(z, m0, dtype=self.config.memory_torch_dtype),
            read_fn=lambda q_, m: memory_math.read(q_, m, dtype=self.config.memory_torch_dtype),
        )
        return found[0].to(self.dtype)

    # Saving and loading the memory ------------------------------------------------------------------------------

    def model_card(
        self,
        repo_id: str | None = None,
        *,
        base_model: str | list[str] | None = None,
        datasets: str | list[str] | None = None,
        license: str | None = None,
        summary: str | None = None,
        details: str | None = None,
    ):
        """A model card rendered from `model_cards/larimar.md` (a `huggingface_hub.ModelCard`)."""
        from ..hub import make_card

        config = self.config
        fields = (
            "latent_size",
            "memory_size",
            "pooling",
            "center_latents",
            "latent_as_embedding",
            "mask_empty_slot",
            "memory_readout",
            "context_addressing",
            "context_template",
            "pinv_method",
            "memory_dtype",
            "memory_ridge",
            "scope_threshold",
            "read_iterations",
            "episode_size",
            "w_logvar_mode",
            "deterministic_read",
            "kl_beta",
            "reconstruction_weight",
            "autoencoder_weight",
            "no_memory_weight",
            "query_weight",
        )
        state = self.memory_state
        return make_card(
            "larimar",
            method="larimar",
            base_model=base_model,
            datasets=datasets,
            license=license,
            tags=["episodic-memory", "knowledge-editing"],
            method_config={name: getattr(config, name) for name in fields},
            title=f"Larimar ({config.encoder.model_type} encoder, {config.decoder.model_type} decoder)",
            summary=summary or "",
            details=details or "",
            encoder_type=config.encoder.model_type,
            decoder_type=config.decoder.model_type,
            memory_size=config.memory_size,
            latent_size=config.latent_size,
            capacity=self.memory_capacity,
            memory_items=state.size if state is not None else 0,
            repo_id=repo_id or "path/to/this/model",
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the episodic memory in `larimar_memory.safetensors` and a model
        card (`README.md`, unless the folder has one). With `push_to_hub=True`, everything is uploaded in one commit
        (`repo_id`, `token`, `private`, `commit_message` as in `PreTrainedModel.save_pretrained`)."""
        push_to_hub = kwargs.pop("push_to_hub", False)
        push_kwargs = {
            key: kwargs.pop(key) for key in ("repo_id", "token", "private", "commit_message") if key in kwargs
        }
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self._save_memory_and_card(save_directory)
        if push_to_hub:
            from ..hub import push_folder

            repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            push_folder(save_directory, repo_id, **push_kwargs)
        return result

    def _save_memory_and_card(self, save_directory) -> None:
        if not os.path.exists(os.path.join(save_directory, "README.md")):
            from ..hub import save_card

            save_card(self.model_card(), save_directory)
        from ..serialization import save_tensors

        target = os.path.join(save_directory, MEMORY_FILE)
        state = self.memory_state
        if state is None or state.size == 0:
            # Written empty too, so that a checkpoint without the file is known to have lost its memory.
            save_tensors(
                target,
                {"latents": torch.zeros(0, self.config.latent_size)},
                metadata=self._memory_metadata(items=0),
            )
            return

        # Each item's encoder tokens (for forget_memory) and context tokens (for memory_readout="context"),
        # concatenated; length -1 marks an item stored without them. The texts go in the metadata, as JSON.
        lengths, flat = _flatten_token_lists(state.tokens)
        context_lengths, context_flat = _flatten_token_lists(state.contexts)
        save_tensors(
            target,
            {
                "memory": state.memory,
                "precision": state.precision,
                "reference": state.reference,
                "latents": state.latents,
                "item_lengths": lengths,
                "item_tokens": flat,
                "context_lengths": context_lengths,
                "context_tokens": context_flat,
            },
            metadata={
                **self._memory_metadata(items=state.size),
                "ridge": repr(state.ridge),
                "item_texts": json.dumps(state.texts),
            },
        )

    def _memory_metadata(self, items: int) -> dict[str, str]:
        return {
            "format": MEMORY_FORMAT,
            "latent_size": str(self.config.latent_size),
            "memory_size": str(self.config.memory_size),
            "memory_dtype": self.config.memory_dtype,
            "items": str(items),
        }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, restoring the episodic memory saved with the model (if any)."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model  # output_loading_info=True
        path = _find_memory_file(pretrained_model_name_or_path, kwargs)
        if path is not None:
            loaded.load_memory(path)
        else:
            warnings.warn(
                f"{str(pretrained_model_name_or_path)!r} has no {MEMORY_FILE}: the model starts with an empty "
                "episodic memory. save_pretrained always writes that file (an empty memory too), so it was not "
                "copied with the checkpoint, or the checkpoint predates it. Copy the file next to config.json or "
                "call model.load_memory(path) to restore a memory; write_memory(...) fills an empty one.",
                UserWarning,
                stacklevel=2,
            )
        return model

    def load_memory(self, path: str | os.PathLike) -> None:
        """Load an episodic memory saved by `save_pretrained` (checked against this model's config)."""
        from ..serialization import open_safetensors

        with open_safetensors(path) as handle:  # a truncated file is an error naming it
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        if metadata.get("format") != MEMORY_FORMAT:
            raise ValueError(f"{path} is not a Larimar memory file (format={metadata.get('format')!r}).")
        expected = {"latent_size": str(self.config.latent_size), "memory_size": str(self.config.memory_size)}
        found = {key: metadata.get(key) for key in expected}
        if found != expected:
            raise ValueError(
                f"The memory in {path} was written by a model with {found}, but this model has {expected}: "
                "it belongs to another configuration."
            )
        if "memory" not in tensors:  # an empty memory (`items` = 0)
            self._larimar()._memory_state = None
            return
        # (files written before hf-ext stored tokens, contexts or texts have none of them)
        tokens = _unflatten_token_lists(tensors.get("item_lengths"), tensors.get("item_tokens"))
        contexts = _unflatten_token_lists(tensors.get("context_lengths"), tensors.get("context_tokens"))
        texts = json.loads(metadata["item_texts"]) if "item_texts" in metadata else []
        if self.config.memory_readout == "context" and (
            len(contexts) < tensors["latents"].shape[0] or None in contexts
        ):
            warnings.warn(
                f"{path} holds items without their text (written as token ids, or by an older hf-ext): with "
                'memory_readout="context" a prompt that addresses one of them gets no context. Write them again with '
                "write_memory(texts, processor=...).",
                UserWarning,
                stacklevel=3,
            )
        device = self.device
        self._larimar()._memory_state = EpisodicMemoryState(
            tensors["memory"].to(device),
            tensors["precision"].to(device),
            tensors["reference"].to(device),
            tensors["latents"].to(device),
            float(metadata.get("ridge", self.config.memory_ridge)),
            tokens=tokens,
            texts=texts,
            contexts=contexts,
        )


def _flatten_token_lists(lists: list[tuple[int, ...] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item token lists as `(lengths, concatenated tokens)`; length -1 marks an item without a list."""
    lengths = [len(t) if t is not None else -1 for t in lists]
    flat = [token for t in lists if t is not None for token in t]
    return torch.tensor(lengths, dtype=torch.long), torch.tensor(flat, dtype=torch.long)


def _unflatten_token_lists(lengths: torch.Tensor | None, flat: torch.Tensor | None) -> list[tuple[int, ...] | None]:
    if lengths is None:
        return []
    tokens, flat, start = [], flat.tolist(), 0
    for length in lengths.tolist():
        tokens.append(tuple(flat[start : start + length]) if length >= 0 else None)
        start += max(length, 0)
    return tokens


def _find_memory_file(name_or_path, kwargs) -> str | None:
    if os.path.isdir(str(name_or_path)):
        candidate = os.path.join(str(name_or_path), kwargs.get("subfolder", "") or "", MEMORY_FILE)
        return candidate if os.path.isfile(candidate) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(
            str(name_or_path),
            MEMORY_FILE,
            revision=kwargs.get("revision"),
            subfolder=kwargs.get("subfolder") or None,
            token=kwargs.get("token"),
            cache_dir=kwargs.get("cache_dir"),
            local_files_only=kwargs.get("local_files_only", False),
        )
    except Exception:  # a checkpoint without a memory file, or offline
        return None


def _drop_unused_pooler(encoder: nn.Module) -> None:
    """With `pooling="cls"` or `"mean"` the encoder's pooler is never run: its parameters would get no gradient, an
    error under DDP ("Expected to have finished reduction ...") and wasted optimizer state otherwise. Encoders that
    build it optionally (`add_pooling_layer`, as BERT) lose it; others keep it, frozen."""
    pooler = getattr(encoder, "pooler", None)
    if not isinstance(pooler, nn.Module):
        return
    if "add_pooling_layer" in inspect.signature(type(encoder).__init__).parameters:
        encoder.pooler = None
    else:
        pooler.requires_grad_(False)


def _latent_match_rtol(encoder: nn.Module) -> float:
    """How far (relative distance) a new encoding of a stored text may be from the stored latent: rounding in the
    encoder's dtype, amplified through its layers, with another padding or batch composition."""
    dtype = next(encoder.parameters()).dtype
    return 1e-3 if dtype in (torch.float32, torch.float64) else 0.1


def _to_device(tensor, device):
    return tensor.to(device) if tensor is not None else None


class LarimarModel(LarimarPreTrainedModel):
    """Larimar without a language-modeling head: the encoder, the memory, and the decoder's base model, returning
    the decoder's hidden states.

    Args:
        config ([`LarimarConfig`]): The configuration.
        encoder, decoder ([`PreTrainedModel`], *optional*): Ready-made encoder and base decoder (e.g. pretrained);
            built from the config otherwise.
    """

    def __init__(self, config: LarimarConfig, encoder: PreTrainedModel | None = None, decoder=None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder)
        self.decoder = decoder if decoder is not None else AutoModel.from_config(config.decoder)
        _check_submodel("encoder", self.encoder, config.encoder)
        _check_submodel("decoder", self.decoder, config.decoder)
        if config.pooling != "pooler":
            _drop_unused_pooler(self.encoder)
        # The sub-models share the composite config's sub-configs, so that later changes stay in sync.
        self.config.encoder._attn_implementation = self.encoder.config._attn_implementation
        self.config.decoder._attn_implementation = self.decoder.config._attn_implementation
        self.encoder.config = self.config.encoder
        self.decoder.config = self.config.decoder
        self.num_layers, self.num_kv_heads, self.head_dim = _decoder_geometry(config.decoder)
        # With `center_latents`, the pooled encoder output is centred with its running mean (tracked in training,
        # like BatchNorm's): the bias would only add back a direction shared by every latent.
        self.latent_projection = nn.Linear(
            config.encoder.hidden_size, config.latent_size, bias=not config.center_latents
        )
        self.register_buffer("latent_center", torch.zeros(config.encoder.hidden_size))
        self.register_buffer("latent_center_batches", torch.zeros((), dtype=torch.long))
        self.prefix_projection = nn.Linear(
            config.latent_size, self.num_layers * self.num_kv_heads * self.head_dim, bias=False
        )
        self.embedding_projection = (
            nn.Linear(config.latent_size, config.decoder.hidden_size, bias=False)
            if config.latent_as_embedding
            else None
        )
        self.memory = LarimarMemory(config)
        self._memory_state: EpisodicMemoryState | None = None
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.decoder.set_input_embeddings(value)

    def encode(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Latent encodings `z` (`[batch, latent_size]`) of encoder inputs."""
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        pooling = self.config.pooling
        hidden = outputs.last_hidden_state
        if pooling == "mean":
            if attention_mask is None:
                pooled = hidden.mean(1)
            else:
                mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        elif pooling == "pooler" and getattr(outputs, "pooler_output", None) is not None:
            pooled = outputs.pooler_output
        else:
            pooled = hidden[:, 0]
        pooled = pooled.to(self.latent_projection.weight.dtype)
        if self.config.center_latents:
            if self.training:
                with torch.no_grad():
                    # Cumulative mean at first, then an exponential moving average (momentum 0.01).
                    momentum = max(1.0 / float(self.latent_center_batches + 1), 0.01)
                    self.latent_center.lerp_(pooled.detach().float().mean(0).to(self.latent_center.dtype), momentum)
                    self.latent_center_batches += 1
            pooled = pooled - self.latent_center.to(pooled.dtype)
        return self.latent_projection(pooled)

    def memory_prefix(self, latent: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The memory slot for latents `[B, C]`: one `(key, value)` of shape `[B, kv_heads, 1, head_dim]` per layer
        (the same vector is used as key and value, as in the official model)."""
        weight = self.prefix_projection.weight
        projected = self.prefix_projection(latent.to(weight.dtype if weight.is_floating_point() else latent.dtype))
        projected = projected.view(latent.shape[0], self.num_layers, self.num_kv_heads, 1, self.head_dim)
        return [(projected[:, layer], projected[:, layer]) for layer in range(self.num_layers)]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        memory_latent: torch.FloatTensor | None = None,
        encoder_input_ids: torch.LongTensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> LarimarModelOutput:
        r"""
        Run the decoder conditioned on a memory latent.

        Args:
            input_ids, inputs_embeds (*optional*):
                The decoder's tokens (or their embeddings). With a non-empty `cache`, only the new ones.
            attention_mask (`torch.Tensor` of shape `(batch_size, past_tokens + sequence_length)`, *optional*):
                The tokens' padding mask; the memory slot is always visible and is not part of it.
            position_ids (`torch.LongTensor`, *optional*):
                Token positions counted from 0 at the first real token (the memory slot shifts them by one inside).
            cache (`Cache`, *optional*):
                A cache from a previous call (it holds the memory slot first). An empty `Cache` is filled with the
                slot; without one, a `DynamicCache` is made when `use_cache` and a read-only slot cache otherwise.
                (`past_key_values`, its name before transformers 5.24, is accepted too.)
            memory_latent (`torch.FloatTensor` of shape `(batch_size, latent_size)`, *optional*):
                The latent to condition on. Without it, the encoder inputs are read from the episodic memory (with
                scope detection) or, without those, a zero latent ("no memory") is used.
            encoder_input_ids, encoder_attention_mask (*optional*):
                Encoder tokens of the memory queries (see [`LarimarProcessor`]).
        """
        kwargs.pop("return_dict", None)
        cache = pop_cache(kwargs, cache)
        if memory_latent is None and encoder_input_ids is not None and self.config.memory_readout == "context":
            return self._forward_with_context(
                input_ids, attention_mask, cache, use_cache, encoder_input_ids, encoder_attention_mask, kwargs
            )
        if memory_latent is None:
            memory_latent = self.latents_for(input_ids, inputs_embeds, encoder_input_ids, encoder_attention_mask)
        return self.decode(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            memory_latent=memory_latent,
            **kwargs,
        )

    def _forward_with_context(
        self, input_ids, attention_mask, cache, use_cache, encoder_input_ids, encoder_attention_mask, kwargs
    ) -> LarimarModelOutput:
        """`memory_readout="context"`: each row's remembered text is placed after its BOS, the decoder runs on the
        longer rows with a zero latent, and `last_hidden_state` is gathered back to the rows' own positions (the
        hidden states and attentions, when asked for, keep the longer rows; no cache is returned)."""
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                'memory_readout="context" reads the memory for a whole prompt: call it without a filled cache, or '
                "use generate()."
            )
        spliced = self._splice_memory_context(input_ids, attention_mask, encoder_input_ids, encoder_attention_mask)
        if spliced is None:  # a zero latent: the decoder as it is
            return self.decode(
                input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=use_cache, **kwargs
            )
        outputs = self.decode(
            input_ids=spliced.input_ids, attention_mask=spliced.attention_mask, use_cache=False, **kwargs
        )
        hidden = outputs.last_hidden_state
        return LarimarModelOutput(
            last_hidden_state=hidden.gather(1, spliced.positions[..., None].expand(-1, -1, hidden.shape[-1])),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            memory_latent=outputs.memory_latent,
        )

    def latents_for(self, input_ids, inputs_embeds, encoder_input_ids, encoder_attention_mask) -> torch.Tensor:
        """The latents a batch reads: from the episodic memory with the encoder queries, else zero."""
        if encoder_input_ids is not None:
            q = self.encode(encoder_input_ids, encoder_attention_mask)
            return self._read_latents(q.float())
        return self._zero_latents((input_ids if input_ids is not None else inputs_embeds).shape[0])

    def _latent_embedding(self, latent: torch.Tensor) -> torch.Tensor:
        """`embedding_projection(latent)` as `[B, 1, hidden]`. During generation the very same latent tensor comes
        back at every step, so the last result is reused while that tensor (and the weights) are unchanged."""
        weight = self.embedding_projection.weight
        cached = getattr(self, "_latent_embedding_cache", None)
        if (
            cached is not None
            and not torch.is_grad_enabled()
            and cached[0]() is latent
            and cached[1] == (latent._version, weight._version)
        ):
            return cached[2]
        value = self.embedding_projection(latent.to(weight.dtype)).unsqueeze(1)
        if not torch.is_grad_enabled():
            self._latent_embedding_cache = (weakref.ref(latent), (latent._version, weight._version), value)
        return value

    def decode(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        memory_latent=None,
        **kwargs,
    ) -> LarimarModelOutput:
        """The decoder's forward pass conditioned on `memory_latent` (see [`forward`])."""
        cache = pop_cache(kwargs, cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.decoder.get_input_embeddings()(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if memory_latent is None:
            memory_latent = torch.zeros(batch, self.config.latent_size, device=inputs_embeds.device)
        if memory_latent.shape != (batch, self.config.latent_size):
            raise ValueError(
                f"memory_latent has shape {tuple(memory_latent.shape)}; expected ({batch}, {self.config.latent_size})."
            )
        memory_latent = memory_latent.to(inputs_embeds.device)
        if self.embedding_projection is not None:
            inputs_embeds = inputs_embeds + self._latent_embedding(memory_latent).to(inputs_embeds.dtype)

        if use_cache is None:
            use_cache = getattr(self.config.decoder, "use_cache", True)
        if self.decoder.training and any(
            getattr(m, "gradient_checkpointing", False) for m in self.decoder.modules() if m is not self.decoder
        ):
            use_cache = False
        fresh = cache is None or cache.get_seq_length() == 0
        if fresh:
            prefix = [
                (k.to(inputs_embeds.dtype), v.to(inputs_embeds.dtype)) for k, v in self.memory_prefix(memory_latent)
            ]
            if use_cache:
                if cache is None:
                    cache = DynamicCache(config=self.config.decoder)
                for layer, (key, value) in enumerate(prefix):
                    cache.update(key, value, layer)
            else:
                cache = LarimarPrefixCache(prefix)
        cached = cache.get_seq_length()  # memory slot + earlier tokens
        if attention_mask is None:
            attention_mask = torch.ones(batch, cached - 1 + length, device=inputs_embeds.device, dtype=torch.long)
        if attention_mask.shape != (batch, cached - 1 + length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({batch}, {cached - 1 + length}) "
                "(earlier tokens + new tokens; the memory slot is added inside)."
            )
        slot = attention_mask.new_ones(batch, 1)
        if self.config.mask_empty_slot:
            slot = (memory_latent != 0).any(-1, keepdim=True).to(attention_mask.dtype)
        full_mask = torch.cat([slot, attention_mask], dim=-1)
        if position_ids is None:
            # (clamped: left padding before a masked empty slot would otherwise get position -1)
            position_ids = (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        else:
            position_ids = position_ids + 1
        outputs = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=full_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **cache_kwargs(cache),
            **kwargs,
        )
        return LarimarModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            **cache_kwargs(model_output_cache(outputs) if use_cache else None),
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
            memory_latent=memory_latent,
        )


class LarimarForCausalLM(LarimarPreTrainedModel, GenerationMixin):
    """Larimar with a language-modeling head: the model `AutoModelForCausalLM` loads for `model_type="larimar"`.

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from hf_ext.larimar import LarimarProcessor
    >>> model = AutoModelForCausalLM.from_pretrained(path)
    >>> processor = LarimarProcessor.from_pretrained(path)
    >>> model.write_memory(["Alice lives in Paris."], processor=processor)
    >>> out = model.generate(**processor(["Alice lives in"]), max_new_tokens=3)
    ```
    """

    def __init__(self, config: LarimarConfig, encoder=None, decoder=None, lm_head: nn.Module | None = None):
        super().__init__(config)
        self.model = LarimarModel(config, encoder=encoder, decoder=decoder)
        decoder_config = config.decoder
        self.vocab_size = decoder_config.vocab_size
        self.lm_head = (
            lm_head
            if lm_head is not None
            else nn.Linear(decoder_config.hidden_size, decoder_config.vocab_size, bias=False)
        )
        # Which parameter the head shares depends on the decoder family (`wte` for GPT-2, `embed_tokens` ...).
        self._tied_weights_keys = self._decoder_tied_weights_keys()
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        # The decoder's own config says whether its head is tied to its input embeddings.
        tied = super().get_expanded_tied_weights_keys(all_submodels=all_submodels)
        if getattr(self.config.decoder, "tie_word_embeddings", False):
            tied.update(self._tied_weights_keys)
        return tied

    def _decoder_tied_weights_keys(self) -> dict[str, str]:
        embeddings = self.model.decoder.get_input_embeddings()
        for name, module in self.model.decoder.named_modules():
            if module is embeddings:
                return {"lm_head.weight": f"model.decoder.{name}.weight"}
        return {}

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
        decoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
        **kwargs,
    ) -> LarimarForCausalLM:
        r"""Build a Larimar from any pretrained encoder and causal LM; the memory and the projections start fresh.

        Args:
            encoder_pretrained_model_name_or_path (`str` or `os.PathLike`):
                An encoder (`AutoModel`), e.g. BERT or all-MiniLM-L6-v2.
            decoder_pretrained_model_name_or_path (`str` or `os.PathLike`):
                A causal LM (`AutoModelForCausalLM`), e.g. GPT-2 or a Llama-family model.
            kwargs:
                `encoder_*` and `decoder_*` go to the respective `from_pretrained` (e.g.
                `decoder_quantization_config=BitsAndBytesConfig(...)`, `decoder_model=` a ready model); the rest
                (`latent_size=...`, `memory_size=...`) configure the [`LarimarConfig`].

        ```python
        >>> model = LarimarForCausalLM.from_encoder_decoder_pretrained(
        ...     "prajjwal1/bert-tiny", "openai-community/gpt2", latent_size=128, memory_size=128
        ... )
        ```
        """
        kwargs_encoder = {k[len("encoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("encoder_")}
        kwargs_decoder = {k[len("decoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder_")}
        encoder = kwargs_encoder.pop("model", None)
        if encoder is None:
            if encoder_pretrained_model_name_or_path is None:
                raise ValueError("Give encoder_pretrained_model_name_or_path (or encoder_model=...).")
            encoder = AutoModel.from_pretrained(encoder_pretrained_model_name_or_path, **kwargs_encoder)
        causal_lm = kwargs_decoder.pop("model", None)
        if causal_lm is None:
            if decoder_pretrained_model_name_or_path is None:
                raise ValueError("Give decoder_pretrained_model_name_or_path (or decoder_model=...).")
            causal_lm, loading_info = AutoModelForCausalLM.from_pretrained(
                decoder_pretrained_model_name_or_path, output_loading_info=True, **kwargs_decoder
            )
            _check_decoder_checkpoint(causal_lm, loading_info["missing_keys"], decoder_pretrained_model_name_or_path)
        if causal_lm.get_output_embeddings() is None:
            raise ValueError(f"The decoder {type(causal_lm).__name__} has no language-modeling head.")
        if getattr(causal_lm.config, "is_decoder", None) is False:
            raise ValueError(
                f"The decoder {type(causal_lm).__name__} ({causal_lm.config._name_or_path or 'given as decoder_model'}) "
                "is configured as a bidirectional encoder (is_decoder=False): it would see the tokens it has to "
                "predict. Pass a causal LM (GPT-2, a Llama-family model, ...) as the decoder."
            )
        if encoder.get_output_embeddings() is not None:
            raise ValueError(
                f"The encoder {type(encoder).__name__} has a language-modeling head; load it with AutoModel."
            )
        decoder_base = causal_lm.get_submodule(causal_lm.base_model_prefix)
        # Keep the sub-models' attention implementations (a new config would reset them).
        kwargs.setdefault(
            "attn_implementation",
            {"encoder": encoder.config._attn_implementation, "decoder": causal_lm.config._attn_implementation},
        )
        config = LarimarConfig(encoder=encoder.config, decoder=causal_lm.config, **kwargs)
        model = cls(config, encoder=encoder, decoder=decoder_base, lm_head=causal_lm.get_output_embeddings())
        if causal_lm.generation_config is not None:
            model.generation_config = causal_lm.generation_config
        quantizer = getattr(causal_lm, "hf_quantizer", None)
        if quantizer is not None:
            # The new parts (projections, memory) stay in the compute dtype; only the decoder is quantized.
            model.is_quantized = True
        return model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        memory_latent: torch.FloatTensor | None = None,
        encoder_input_ids: torch.LongTensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        query_input_ids: torch.LongTensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        episode_size: int | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LarimarCausalLMOutputWithPast:
        r"""
        Two uses:

        - **Training** (`labels` and `encoder_input_ids` given, no `memory_latent`): each batch holds episodes of
          `episode_size` items (the whole batch by default). The items are encoded, written into one memory per
          episode and read back, and the loss is the paper's objective plus a query term,
          `w_r CE(x | read(e(x))) + w_a CE(x | e(x)) + β KL(W) + w_0 CE(x | 0) + w_q CE(x | read(e(prompt)))`,
          with padding masked (`labels == -100`). The query term needs `query_input_ids` (the prompts' encoder
          tokens); see [`LarimarEpisodeCollator`].
        - **Inference**: the decoder conditioned on `memory_latent`, or on what the encoder queries read from the
          episodic memory (with scope detection), or on a zero latent; `labels` give the usual LM loss. With
          `config.memory_readout="context"`, the text each query reads is placed before its tokens instead (see
          [`LarimarConfig`]); in eval mode, `labels` with encoder inputs then give the LM loss of the prompt's own
          tokens after that text (the training objective is used in training mode only).

        Other arguments are those of [`LarimarModel.forward`].
        """
        kwargs.pop("return_dict", None)
        cache = pop_cache(kwargs, cache)
        training_objective = self.training or self.config.memory_readout != "context"
        if labels is not None and encoder_input_ids is not None and memory_latent is None and training_objective:
            return self._objective(
                input_ids,
                attention_mask,
                labels,
                encoder_input_ids,
                encoder_attention_mask,
                query_input_ids,
                query_attention_mask,
                episode_size,
                **kwargs,
            )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            memory_latent=memory_latent,
            encoder_input_ids=encoder_input_ids,
            encoder_attention_mask=encoder_attention_mask,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.vocab_size)
        return LarimarCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **cache_kwargs(model_output_cache(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            memory_latent=outputs.memory_latent,
        )

    def _objective(
        self,
        input_ids,
        attention_mask,
        labels,
        encoder_input_ids,
        encoder_attention_mask,
        query_input_ids,
        query_attention_mask,
        episode_size,
        **kwargs,
    ) -> LarimarCausalLMOutputWithPast:
        config = self.config
        kwargs.pop("num_items_in_batch", None)
        items = input_ids.shape[0]
        episode_size = int(episode_size or items)
        if items % episode_size:
            raise ValueError(
                f"The batch of {items} items does not split into episodes of episode_size={episode_size}."
            )
        episodes = items // episode_size
        model = self.model
        if config.memory_readout == "context":
            return self._addressing_objective(
                encoder_input_ids, encoder_attention_mask, query_input_ids, query_attention_mask, episodes
            )
        z = model.encode(encoder_input_ids, encoder_attention_mask)
        z_episodes = z.view(episodes, episode_size, -1)
        queries = z_episodes
        if query_input_ids is not None:
            q = model.encode(query_input_ids, query_attention_mask).view(episodes, episode_size, -1)
            queries = torch.cat([z_episodes, q], 1)  # one pseudo-inverse of the memory for both reads
        read = model.memory(
            z_episodes,
            queries,
            noise_std=config.write_noise_std if self.training else 0.0,
            sample=self.training and not config.deterministic_read,
        )
        read_out = read.read_latents
        z_read, w_mean = read_out[:, :episode_size], read.read_weights[:, :episode_size]
        kl = memory_math.w_kl(w_mean, read.read_logvar.to(w_mean.dtype), check_finite=False).mean()

        streams = {"reconstruction": z_read.reshape(items, -1), "autoencoder": z, "no_memory": torch.zeros_like(z)}
        if query_input_ids is not None:
            streams["query"] = read_out[:, episode_size:].reshape(items, -1)
        weights = {
            "reconstruction": config.reconstruction_weight,
            "autoencoder": config.autoencoder_weight,
            "no_memory": config.no_memory_weight,
            "query": config.query_weight,
        }
        names = [name for name in streams if weights[name] > 0 or name == "reconstruction"]
        latents = torch.cat([streams[name].to(z.dtype) for name in names], 0)
        repeat = len(names)
        outputs = model.decode(
            input_ids=input_ids.repeat(repeat, 1),
            attention_mask=attention_mask.repeat(repeat, 1) if attention_mask is not None else None,
            memory_latent=latents,
            use_cache=False,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        losses = {}
        for index, name in enumerate(names):
            chunk = logits[index * items : (index + 1) * items]
            losses[name] = self.loss_function(logits=chunk, labels=labels, vocab_size=self.vocab_size)
        loss = sum(weights[name] * losses[name] for name in names) + config.kl_beta * self.kl_scale * kl.to(
            logits.dtype
        )
        return LarimarCausalLMOutputWithPast(
            loss=loss,
            logits=logits[:items],
            memory_latent=streams["reconstruction"],
            reconstruction_loss=losses["reconstruction"].detach(),
            autoencoder_loss=losses.get("autoencoder", torch.zeros(())).detach(),
            no_memory_loss=losses.get("no_memory", torch.zeros(())).detach(),
            query_loss=losses["query"].detach() if "query" in losses else None,
            kl_loss=kl.detach(),
        )

    def _addressing_objective(
        self, encoder_input_ids, encoder_attention_mask, query_input_ids, query_attention_mask, episodes
    ) -> LarimarCausalLMOutputWithPast:
        """The objective of `memory_readout="context"`: the decoder only reads the text of the item a query
        addresses, so what trains is the addressing. In each episode the first half of the items is stored; every
        item's query must address its own item among those ([`~hf_ext.larimar.memory.addressing_loss`]), and the
        second half's queries (about nothing stored) must fall outside the scope threshold."""
        if query_input_ids is None:
            raise ValueError(
                'memory_readout="context" trains the addressing: the batch needs query_input_ids (each item\'s query, '
                "e.g. a paraphrase of its prompt; LarimarEpisodeCollator(prompt_field=...))."
            )
        model = self.model
        size = encoder_input_ids.shape[0] // episodes
        if size < 2:
            raise ValueError(f"episode_size={size} is too small to store some items and query others; use >= 2.")
        z = model.encode(encoder_input_ids, encoder_attention_mask).view(episodes, size, -1)
        q = model.encode(query_input_ids, query_attention_mask).view(episodes, size, -1)
        stored = (size + 1) // 2
        targets = torch.arange(size, device=z.device)
        targets = torch.where(targets < stored, targets, -1).expand(episodes, -1)
        threshold = self.config.scope_threshold if self.config.scope_threshold is not None else 0.5
        loss = memory_math.addressing_loss(q, z[:, :stored], targets, threshold=threshold)
        return LarimarCausalLMOutputWithPast(loss=loss, query_loss=loss.detach())

    kl_scale: float = 1.0
    """Multiplies `config.kl_beta` (set by [`LarimarKLAnnealingCallback`] during training)."""

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_input_ids: torch.LongTensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        memory_latent: torch.FloatTensor | None = None,
        **kwargs,
    ):
        r"""`GenerationMixin.generate` conditioned on the episodic memory.

        The memory is read once per sequence, with the encoder queries (`encoder_input_ids`, from
        [`LarimarProcessor`]) and scope detection, and the latent conditions every step; pass `memory_latent` to
        condition on a latent of your own (e.g. from [`read_long_context`]). Everything else is `generate`'s.
        """
        if memory_latent is None and encoder_input_ids is not None and self.config.memory_readout == "context":
            return self._generate_with_context(
                input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, kwargs
            )
        if memory_latent is None:
            if encoder_input_ids is not None:
                memory_latent = self.read_memory(
                    encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask
                )
            else:
                if self.memory_state is not None:
                    logger.warning_once(
                        "generate() got no encoder_input_ids: the episodic memory is not read (pass the inputs of "
                        "LarimarProcessor, or memory_latent)."
                    )
                memory_latent = self._zero_latents(
                    (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[0]
                )
        if input_ids is not None and input_ids.numel():
            low, high = torch.stack([input_ids.min(), input_ids.max()]).tolist()  # one copy per generate call
            _check_id_range("input_ids", low, high, embedding_rows(self), "decoder")
        return super().generate(
            input_ids=input_ids, attention_mask=attention_mask, memory_latent=memory_latent, **kwargs
        )

    def _generate_with_context(self, input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, kwargs):
        """`memory_readout="context"`: generate after each prompt's remembered text (placed after its BOS, the rows
        padded on the left again), then return the prompts as given followed by what was generated."""
        spliced = self._splice_memory_context(
            input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, side="left"
        )
        zero = self._zero_latents(input_ids.shape[0])
        if spliced is None:
            return self.generate(input_ids=input_ids, attention_mask=attention_mask, memory_latent=zero, **kwargs)
        output = self.generate(
            input_ids=spliced.input_ids, attention_mask=spliced.attention_mask, memory_latent=zero, **kwargs
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        prompts = input_ids.to(sequences.device)
        if sequences.shape[0] != prompts.shape[0]:  # num_return_sequences: each prompt's outputs are consecutive
            prompts = prompts.repeat_interleave(sequences.shape[0] // prompts.shape[0], dim=0)
        restored = torch.cat([prompts, sequences[:, spliced.input_ids.shape[1] :]], dim=1)
        if isinstance(output, torch.Tensor):
            return restored
        output.sequences = restored
        return output

    def _prepare_cache_for_generation(
        self, generation_config, model_kwargs, generation_mode, batch_size: int, max_cache_length: int
    ):
        # The memory slot takes the first position of the cache: a cache of fixed size (static, or for
        # `torch.compile`) needs one more position than the tokens.
        return super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, max_cache_length + 1
        )

    def create_masks_for_generate(self, attention_mask=None, **kwargs):
        """Keep the tokens' 2D padding mask with a compilable (static) cache: [`LarimarModel.decode`] adds the
        memory slot to it, and the decoder builds its own 4D mask from the result, sized to its cache."""
        return attention_mask


def _check_encoder_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, encoder: nn.Module) -> None:
    """Every encoder input must have a token, and every token id an embedding (one device-to-host copy)."""
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(
            f"encoder_input_ids must have shape [items, tokens] with at least one token; got {tuple(input_ids.shape)}."
        )
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    tokens = mask.ne(0).sum(1)
    low, high, fewest = torch.stack([input_ids.min(), input_ids.max(), tokens.min()]).tolist()
    if fewest == 0:
        row = int(tokens.eq(0).nonzero()[0])
        raise ValueError(f"encoder_input_ids[{row}] has no token (its attention mask is all 0): nothing to encode.")
    _check_id_range("encoder_input_ids", low, high, embedding_rows(encoder), "encoder")


def _check_id_range(name: str, low: int, high: int, rows: int | None, side: str) -> None:
    if rows is not None and (low < 0 or high >= rows):
        raise ValueError(
            f"{name} hold token ids from {low} to {high}, but the {side} embeds ids 0..{rows - 1}: they were made by "
            f"another tokenizer than the {side}'s."
        )


def _check_decoder_checkpoint(causal_lm, missing_keys, name_or_path) -> None:
    """A checkpoint without a causal LM head (e.g. an encoder's) loads into `AutoModelForCausalLM` with a random
    head (transformers only logs it): refuse it, naming the checkpoint and the missing weights."""
    prefix = f"{causal_lm.base_model_prefix}."
    head_missing = sorted(key for key in missing_keys if not key.startswith(prefix))
    if head_missing:
        shown = ", ".join(head_missing[:4]) + (", ..." if len(head_missing) > 4 else "")
        raise ValueError(
            f"The decoder checkpoint {str(name_or_path)!r} has no language-modeling head: its weights lack "
            f"{shown}, which {type(causal_lm).__name__} would initialise at random (architectures in its config: "
            f"{causal_lm.config.architectures}). It is not a causal LM (an encoder checkpoint?); pass a causal LM "
            "(GPT-2, a Llama-family model, ...) as the decoder."
        )


def _check_submodel(name: str, module: nn.Module, config) -> None:
    hidden = getattr(module.config, "hidden_size", None)
    if hidden != config.hidden_size:
        raise ValueError(
            f"The {name} has hidden_size={hidden} but the config's {name} has hidden_size={config.hidden_size}: "
            "they do not match."
        )


def _register() -> None:
    """Map `model_type="larimar"` to the real classes (replacing the lazy stand-ins registered on `import hf_ext`)."""
    AutoConfig.register("larimar", LarimarConfig, exist_ok=True)
    AutoModel.register(LarimarConfig, LarimarModel, exist_ok=True)
    AutoModelForCausalLM.register(LarimarConfig, LarimarForCausalLM, exist_ok=True)


_register()
