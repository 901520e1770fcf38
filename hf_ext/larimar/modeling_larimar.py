"""PyTorch Larimar: an encoder, an episodic memory and a causal decoder conditioned on what it reads.

With `memory_readout="latent"` (the paper's) the decoder is conditioned on a latent `z` (read from memory, or zero
when there is nothing relevant to read) as in the official model: a linear map of `z` gives one key / value slot per
layer, placed before the tokens in the KV cache (so token positions start at 1), and another linear map of `z` is
added to every token embedding. The slot goes through the ordinary transformers `Cache` API, so any decoder whose
attention reads a `Cache` works (GPT-2 and Llama-family models among them), with `generate`, left padding, beam
search and quantized weights. With `memory_readout="text"` (hf-ext's) the memory only addresses a stored text, which
is placed before the prompt (see [`LarimarConfig`]). The episodic memory itself (its state, API and file) lives in
`episodic_memory.py`, the training objectives in `objective.py`.
"""

from __future__ import annotations

import inspect
import os
import weakref
from dataclasses import dataclass

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
from .episodic_memory import MEMORY_FILE, EpisodicMemory, LarimarMemoryMixin, check_id_range
from .objective import LarimarObjectiveMixin


logger = logging.get_logger(__name__)

__all__ = [
    "LarimarCausalLMOutputWithPast",
    "LarimarForCausalLM",
    "LarimarModel",
    "LarimarMemoryLayer",
    "LarimarModelOutput",
    "LarimarPreTrainedModel",
    "LarimarPrefixCache",
    "MEMORY_FILE",
]

_RENAMED = {"LarimarMemory": "LarimarMemoryLayer", "EpisodicMemoryState": "EpisodicMemory"}
"""Names this module had before: old -> new (still importable, with a `FutureWarning`)."""


def __getattr__(name: str):
    if name in _RENAMED:
        from .._validation import warn_deprecated

        warn_deprecated(f"hf_ext.larimar.modeling_larimar.{name} is deprecated; use {_RENAMED[name]}.")
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


# The memory layer ---------------------------------------------------------------------------------------------------


@dataclass
class LarimarMemoryOutput(ModelOutput):
    """
    Output of [`LarimarMemoryLayer`].

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


class LarimarMemoryLayer(nn.Module):
    """The memory layer (`model.model.memory`): the learned prior `M0` (`[K, C]`, identity at initialisation) and
    the parameters of the log-variance of the training-time read weights. Training episodes are written against
    the prior and read in its `forward`; the episodic memory a user writes ([`EpisodicMemory`]) starts from it.

    Both are only ever read inside [`~LarimarMemoryLayer.forward`], so that sharding wrappers that gather a module's
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


class LarimarPreTrainedModel(LarimarMemoryMixin, PreTrainedModel):
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
        if isinstance(module, LarimarMemoryLayer):
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
        self.memory = LarimarMemoryLayer(config)
        self._memory_state: EpisodicMemory | None = None
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
        read = self._read_for_batch(
            input_ids,
            attention_mask,
            inputs_embeds,
            memory_latent,
            encoder_input_ids,
            encoder_attention_mask,
            cache=cache,
            refused={"position_ids": position_ids, "output_attentions": kwargs.get("output_attentions")},
        )
        outputs = self.decode(
            input_ids=read.input_ids,
            attention_mask=read.attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache if read.splice is None else None,
            use_cache=use_cache if read.splice is None else False,
            memory_latent=read.memory_latent,
            **kwargs,
        )
        return read.restore_outputs(outputs)

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


class LarimarForCausalLM(LarimarObjectiveMixin, LarimarPreTrainedModel, GenerationMixin):
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
        from safetensors import SafetensorError

        from .._checks import safetensors_load_error

        kwargs_encoder = {k[len("encoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("encoder_")}
        kwargs_decoder = {k[len("decoder_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder_")}
        encoder = kwargs_encoder.pop("model", None)
        if encoder is None:
            if encoder_pretrained_model_name_or_path is None:
                raise ValueError("Give encoder_pretrained_model_name_or_path (or encoder_model=...).")
            try:
                encoder = AutoModel.from_pretrained(encoder_pretrained_model_name_or_path, **kwargs_encoder)
            except SafetensorError as error:  # a truncated weights file, named
                raise safetensors_load_error(encoder_pretrained_model_name_or_path, error) from None
        causal_lm = kwargs_decoder.pop("model", None)
        if causal_lm is None:
            if decoder_pretrained_model_name_or_path is None:
                raise ValueError("Give decoder_pretrained_model_name_or_path (or decoder_model=...).")
            try:
                causal_lm, loading_info = AutoModelForCausalLM.from_pretrained(
                    decoder_pretrained_model_name_or_path, output_loading_info=True, **kwargs_decoder
                )
            except SafetensorError as error:
                raise safetensors_load_error(decoder_pretrained_model_name_or_path, error) from None
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
          `config.memory_readout="text"`, the text each query addresses is placed before its tokens instead (see
          [`LarimarConfig`]); in eval mode, `labels` with encoder inputs then give the LM loss of the prompt's own
          tokens after that text (the training objective is used in training mode only), and the logits and hidden
          states are at the prompt's own positions.

        Other arguments are those of [`LarimarModel.forward`].
        """
        kwargs.pop("return_dict", None)
        cache = pop_cache(kwargs, cache)
        training_objective = self.training or self.config.memory_readout != "text"
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

        With `config.memory_readout="text"` the text each prompt addresses is inserted after its BOS, and hidden from
        what `generate` gives back: the returned sequences are the prompts as given followed by the new tokens, a
        `streamer` is shown the prompt and the new tokens only, `max_length` / `min_length` count the prompt's own
        tokens (as `max_new_tokens` counts the new ones), and the first step's hidden states are at the prompt's
        positions (scores and logits are per new token). `output_attentions` and `position_ids` are refused.
        """
        if memory_latent is None and encoder_input_ids is None and self.memory_state is not None:
            logger.warning_once(
                "generate() got no encoder_input_ids: the episodic memory is not read (pass the inputs of "
                "LarimarProcessor, or memory_latent)."
            )
        read = self._read_for_batch(
            input_ids,
            attention_mask,
            kwargs.get("inputs_embeds"),
            memory_latent,
            encoder_input_ids,
            encoder_attention_mask,
            side="left",
            refused={name: kwargs.get(name) for name in ("position_ids", "output_attentions")},
            generating=True,
        )
        if read.input_ids is not None and read.input_ids.numel():
            low, high = torch.stack([read.input_ids.min(), read.input_ids.max()]).tolist()  # one copy per call
            check_id_range("input_ids", low, high, embedding_rows(self), "decoder")
        output = super().generate(
            input_ids=read.input_ids,
            attention_mask=read.attention_mask,
            memory_latent=read.memory_latent,
            **self._generation_kwargs(read, input_ids, kwargs),
        )
        return read.restore_generated(output, input_ids)

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
