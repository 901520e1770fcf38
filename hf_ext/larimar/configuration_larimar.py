"""Larimar model configuration."""

from __future__ import annotations

import dataclasses
import difflib

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from hf_ext._validation import check_range, warn_deprecated


__all__ = ["LarimarConfig"]

PINV_METHODS = ("exact", "ben_israel")
MEMORY_DTYPES = ("float32", "float64")
W_LOGVAR_MODES = ("memory", "slot", "scalar")
POOLINGS = ("pooler", "cls", "mean")
MEMORY_READOUTS = ("latent", "text")
ITEM_ADDRESSINGS = ("memory", "nearest")

_RENAMED_FIELDS = {"context_addressing": "item_addressing", "context_template": "text_template"}
"""Fields renamed since hf-ext first released them: old name -> new name."""
_RENAMED_READOUTS = {"context": "text"}
"""`memory_readout` values renamed: old -> new."""

# Keys `PreTrainedConfig` accepts besides its fields: those its `__post_init__` consumes, and the common attributes
# of configurations written by earlier transformers releases (a checkpoint's config.json may still carry them).
_PRETRAINED_CONFIG_KEYS = {
    "add_cross_attention",
    "attn_implementation",
    "auto_map",
    "bos_token_id",
    "cross_attention_hidden_size",
    "custom_pipelines",
    "decoder_start_token_id",
    "eos_token_id",
    "experts_implementation",
    "finetuning_task",
    "gradient_checkpointing",
    "is_decoder",
    "model_type",
    "name_or_path",
    "num_labels",
    "output_attentions",
    "pad_token_id",
    "per_layer_config",
    "prefix",
    "pruned_heads",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "sep_token_id",
    "task_specific_params",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "torch_dtype",
    "torchscript",
    "use_bfloat16",
}


@strict
class LarimarConfig(PreTrainedConfig):
    r"""
    Configuration of a Larimar model (Das et al., "Larimar: Large Language Models with Episodic Memory Control",
    ICML 2024): an encoder, an episodic memory of `memory_size` slots of `latent_size` dimensions, and a causal
    decoder conditioned on the latent read from memory, through one extra key / value slot per layer placed before
    the tokens and through the latent added to every token embedding.

    Any Hugging Face encoder and any causal LM can be combined: see
    [`LarimarForCausalLM.from_encoder_decoder_pretrained`].

    Args:
        encoder (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the encoder (a BERT-like model; BERT by default).
        decoder (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the causal decoder (GPT-2 by default; the Llama family works too).
        latent_size (`int`, *optional*, defaults to 768):
            Size C of the latent encodings and of a memory row. The number of facts one memory holds is bounded by
            the rank of the latents, i.e. by `min(latent_size, encoder hidden size)`: keep both well above the
            number of facts an episode holds.
        memory_size (`int`, *optional*, defaults to 512):
            Number K of memory slots.
        pooling (`str`, *optional*, defaults to `"pooler"`):
            How the encoder's output becomes one vector: `"pooler"` (its pooled output, as the paper; falls back
            to `"cls"` for encoders without a pooler), `"cls"` (the first token) or `"mean"` (masked mean). With
            `"cls"` and `"mean"` the encoder's pooler is dropped (or frozen, for encoders that always build one), so
            that no trainable parameter goes without a gradient (an error under DDP).
        pinv_method (`str`, *optional*, defaults to `"exact"`):
            Pseudo-inverse of the memory operations: `"exact"` (an SVD in `memory_dtype` with a cut-off suited to
            the precision of the encodings) or `"ben_israel"` (the official fixed-step iteration, which diverges for
            large encodings).
        pinv_steps (`int`, *optional*, defaults to 15):
            Iterations of the `"ben_israel"` pseudo-inverse.
        memory_dtype (`str`, *optional*, defaults to `"float32"`):
            Dtype of the memory math (`"float32"` or `"float64"`), whatever the model's dtype and with autocast
            off. float32 reads agree with float64's to ~1e-6 relative (see `benchmarks/results/larimar_memory.md`)
            at a fraction of the cost, most of all on GPUs, whose float64 throughput is a small fraction of their
            float32's. The sequential memory of `write_memory` / `forget_memory` is kept in float64 regardless (its
            ridge can make it too ill-conditioned for float32, and it costs one small solve per write).
        write_noise_std (`float`, *optional*, defaults to 0.0):
            Standard deviation of the noise added to the encodings when writing during training.
        w_logvar_mode (`str`, *optional*, defaults to `"memory"`):
            How the log-variance of the training-time read weights is parameterised: `"memory"` (a linear map of the
            flattened memory, the paper's choice, `latent_size * memory_size**2` weights), `"slot"` (one per slot) or
            `"scalar"`.
        deterministic_read (`bool`, *optional*, defaults to `False`):
            Read the mean weights during training too (no sampling, no KL term).
        read_iterations (`int`, *optional*, defaults to 1):
            Number of iterative reads `z <- read(z)`.
        scope_threshold (`float`, *optional*, defaults to 0.5):
            Cosine distance (in `[0, 2]`) above which a query is out of the memory's scope and reads a zero latent
            (the decoder then behaves as if nothing was written). `None` disables scope detection.
        memory_ridge (`float`, *optional*, defaults to 1e-3):
            Ridge `λ` of the sequential memory used by `write_memory` / `forget_memory`.
        center_latents (`bool`, *optional*, defaults to `False`):
            Centre the pooled encoder output with its running mean (tracked during training, like BatchNorm's)
            before projecting it. Encoder outputs share a dominant direction (cosine ~0.85 between unrelated texts
            for a small random BERT); centring separates the latents, which speeds training up and sharpens the
            memory's projections and scope detection. Not in the official model.
        latent_as_embedding (`bool`, *optional*, defaults to `True`):
            Also add a projection of the latent to every token embedding of the decoder.
        mask_empty_slot (`bool`, *optional*):
            Hide the memory slot from attention for a zero latent (empty memory, out-of-scope query). A zero slot is
            a zero key and value that still takes a share of every attention softmax, so without this flag "no
            memory" is not the plain decoder; with it (and the latent embedding, which is linear without bias, at
            zero) a zero latent gives the decoder's own output. Not in the official model. Defaults to `False` with
            `memory_readout="latent"` (the paper's model) and to `True` with `memory_readout="text"`, which promises
            exactly the decoder reading a text and refuses `False`.
        memory_readout (`str`, *optional*, defaults to `"latent"`):
            What a read gives the decoder.

            - `"latent"` (the paper's): the read latent conditions the decoder through the memory slot and the
              embedding offset; the prompt is not lengthened.
            - `"text"` (hf-ext's, not the paper's): Larimar's memory is used as the *addressing* of an in-context
              reader, as retrieval-based editors do (IKE, SERAC, RECIPE). The read's weights over the stored items
              ([`~hf_ext.larimar.memory.item_weights`], or the nearest latent, see `item_addressing`) pick the
              item the prompt addresses, and that item's stored text, formatted with `text_template`, is placed
              before the prompt (after its BOS); the latent is zero and its slot masked. The decoder needs no
              training to use what it is given (a pretrained LM reads a fact it is shown), but its context grows by
              the text read, unlike the paper's read-out, and a read gives one stored text. Needs texts at
              `write_memory`; `forward` and `generate` hide the inserted tokens from their outputs.

            `"context"`, its former name, still works with a `FutureWarning`.
        item_addressing (`str`, *optional*, defaults to `"memory"`):
            How [`~LarimarForCausalLM.read_memory_items`] (and so `memory_readout="text"`) picks the stored item a
            query addresses: `"memory"`, the largest of the memory read's weights over the items (Larimar's read);
            `"nearest"`, the stored latent nearest to the query's (cosine, as scope detection measures). They agree
            while the memory holds far fewer items than its capacity; near and past it the read's least-squares
            weights blur (measured with `NATURAL_RECIPE` on the paraphrases of `counterfact_records`: 75-91 %
            against 100 % for `"nearest"` between 256 and 1,000 items; see examples/larimar/README.md). Formerly
            `context_addressing` (still accepted, with a `FutureWarning`).
        text_template (`str`, *optional*, defaults to `"New fact: {memory}\n"`):
            How a remembered text is placed before the prompt with `memory_readout="text"`; each `{memory}` is the
            text, with a full stop added when it ends without punctuation. Formerly `context_template`.
        episode_size (`int`, *optional*, defaults to 16):
            Items per memory in a hierarchical (long-context) read, and the default training episode size.
        kl_beta (`float`, *optional*, defaults to 0.5):
            Weight of the KL term of the read weights (annealed during training by
            [`LarimarKLAnnealingCallback`]).
        reconstruction_weight (`float`, *optional*, defaults to 1.0):
            Weight of CE(x | read(e(x))), decoding each item from the memory read with its own encoding.
        autoencoder_weight (`float`, *optional*, defaults to 1.0):
            Weight of CE(x | e(x)), decoding each item from its own encoding.
        no_memory_weight (`float`, *optional*, defaults to 1.0):
            Weight of CE(x | z = 0), decoding without memory.
        query_weight (`float`, *optional*, defaults to 1.0):
            Weight of CE(x | read(e(prompt))), decoding each item from the memory read with the encoding of its
            prompt (needs prompts in the batch). Not in the official objective, without it prompt-only queries
            do not reach the facts they belong to.
    """

    model_type = "larimar"
    sub_configs_defaults = {
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "decoder": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    encoder: PreTrainedConfig | dict | None = None
    decoder: PreTrainedConfig | dict | None = None
    latent_size: int = 768
    memory_size: int = 512
    pooling: str = "pooler"
    pinv_method: str = "exact"
    pinv_steps: int = 15
    memory_dtype: str = "float32"
    write_noise_std: float = 0.0
    w_logvar_mode: str = "memory"
    deterministic_read: bool = False
    read_iterations: int = 1
    scope_threshold: float | None = 0.5
    memory_ridge: float = 1e-3
    center_latents: bool = False
    latent_as_embedding: bool = True
    mask_empty_slot: bool | None = None
    memory_readout: str = "latent"
    item_addressing: str = "memory"
    text_template: str = "New fact: {memory}\n"
    episode_size: int = 16
    kl_beta: float = 0.5
    reconstruction_weight: float = 1.0
    autoencoder_weight: float = 1.0
    no_memory_weight: float = 1.0
    query_weight: float = 1.0

    def __post_init__(self, **kwargs):
        for old, new in _RENAMED_FIELDS.items():
            if old in kwargs:
                warn_deprecated(f"LarimarConfig({old}=...) is deprecated; use {new}=... (the same setting).")
                setattr(self, new, kwargs.pop(old))
        if self.memory_readout in _RENAMED_READOUTS:
            new = _RENAMED_READOUTS[self.memory_readout]
            warn_deprecated(
                f'memory_readout="{self.memory_readout}" is deprecated; use memory_readout="{new}" (the same read-out).'
            )
            self.memory_readout = new
        _check_unknown_keys(self, kwargs)
        super().__post_init__(**kwargs)
        check_range("latent_size", self.latent_size, ge=1, integer=True)
        check_range("memory_size", self.memory_size, ge=1, integer=True)
        check_range("pinv_steps", self.pinv_steps, ge=1, integer=True)
        check_range("read_iterations", self.read_iterations, ge=1, integer=True)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("pinv_method", self.pinv_method, PINV_METHODS)
        _check_choice("memory_dtype", self.memory_dtype, MEMORY_DTYPES)
        _check_choice("w_logvar_mode", self.w_logvar_mode, W_LOGVAR_MODES)
        _check_choice("memory_readout", self.memory_readout, MEMORY_READOUTS)
        _check_choice("item_addressing", self.item_addressing, ITEM_ADDRESSINGS)
        if not isinstance(self.text_template, str) or "{memory}" not in self.text_template:
            raise ValueError(
                f"text_template={self.text_template!r} must be a string with '{{memory}}' in it (where the "
                "remembered text goes)."
            )
        if self.mask_empty_slot is None:
            self.mask_empty_slot = self.memory_readout == "text"
        elif not self.mask_empty_slot and self.memory_readout == "text":
            raise ValueError(
                'mask_empty_slot=False does not go with memory_readout="text": that read-out gives the decoder a '
                "text and a zero latent, and promises exactly the decoder reading that text, which a visible zero "
                "slot (and the positions it shifts) would break. Leave mask_empty_slot unset (or True)."
            )
        check_range("episode_size", self.episode_size, ge=2, integer=True)
        check_range("scope_threshold", self.scope_threshold, ge=0, le=2, optional=True, hint="(a cosine distance)")
        check_range("memory_ridge", self.memory_ridge, gt=0)
        for name in (
            "write_noise_std",
            "kl_beta",
            "reconstruction_weight",
            "autoencoder_weight",
            "no_memory_weight",
            "query_weight",
        ):
            check_range(name, getattr(self, name), ge=0)
        if not hasattr(self.encoder, "hidden_size"):
            raise ValueError(f"The encoder config ({type(self.encoder).__name__}) has no hidden_size.")
        if getattr(self.decoder, "is_encoder_decoder", False):
            raise ValueError(
                f"The decoder config ({type(self.decoder).__name__}) is an encoder-decoder; Larimar needs a causal LM."
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PreTrainedConfig.from_dict`, reading the names older hf-ext releases wrote (`context_addressing`,
        `context_template`, `memory_readout="context"`) as today's, without a warning: a saved checkpoint is not
        code a user can change."""
        config_dict = _migrate(dict(config_dict))
        kwargs = _migrate(dict(kwargs))
        return super().from_dict(config_dict, **kwargs)

    @property
    def context_addressing(self) -> str:
        """Deprecated name of `item_addressing`."""
        warn_deprecated("LarimarConfig.context_addressing is deprecated; use LarimarConfig.item_addressing.")
        return self.item_addressing

    @property
    def context_template(self) -> str:
        """Deprecated name of `text_template`."""
        warn_deprecated("LarimarConfig.context_template is deprecated; use LarimarConfig.text_template.")
        return self.text_template

    @property
    def memory_torch_dtype(self):
        import torch

        return getattr(torch, self.memory_dtype)


def _migrate(values: dict) -> dict:
    """Today's names for the renamed fields and read-out values in a dict of config values."""
    for old, new in _RENAMED_FIELDS.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    if values.get("memory_readout") in _RENAMED_READOUTS:
        values["memory_readout"] = _RENAMED_READOUTS[values["memory_readout"]]
    return values


def _generation_keys() -> set[str]:
    from transformers import GenerationConfig

    try:  # the generation parameters older configs carried, which `PreTrainedConfig` drops
        return set(GenerationConfig._get_default_generation_params())
    except AttributeError:  # pragma: no cover - a transformers release without this helper
        return set(GenerationConfig().to_dict())


def _check_unknown_keys(config: LarimarConfig, kwargs: dict) -> None:
    """`PreTrainedConfig` stores any keyword as an attribute, so a typo (`latent_sise=64`) would be kept silently
    while the field it meant keeps its default. Keys that neither `LarimarConfig` nor `PreTrainedConfig` know are
    an error; private keys (`_...`) and the keys transformers itself writes or reads are accepted."""
    fields = {field.name for field in dataclasses.fields(config)}
    known = fields | _PRETRAINED_CONFIG_KEYS | _generation_keys()
    unknown = sorted(key for key in kwargs if not key.startswith("_") and key not in known)
    if not unknown:
        return
    larimar_fields = sorted(fields - {field.name for field in dataclasses.fields(PreTrainedConfig)})
    hints = []
    for key in unknown:
        match = difflib.get_close_matches(key, larimar_fields, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {match[0]!r}?)" if match else ""))
    raise ValueError(
        f"LarimarConfig got unknown argument(s) {', '.join(hints)}; expected the fields {larimar_fields} or the "
        "arguments of transformers' PreTrainedConfig."
    )


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {list(choices)}.")


# When this module is imported first, its `AutoConfig` import skipped the registration (see `auto.py`).
AutoConfig.register("larimar", LarimarConfig, exist_ok=True)
