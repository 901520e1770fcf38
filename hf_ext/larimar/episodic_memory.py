"""Larimar's episodic memory as part of a model: the state that `write_memory` / `forget_memory` keep between calls,
the API that writes, reads and forgets it, its file, and how a batch reads it (the latent it is conditioned on, or
for `memory_readout="text"` the stored text placed before each prompt).

Three things are called memory in `hf_ext.larimar`, each with one name:

- the memory **math**, [`hf_ext.larimar.memory`]: pure tensor functions (write, read, sequential write, scope);
- the memory **layer**, [`LarimarMemoryLayer`] (`model.model.memory`): the learned prior `M0` and the variance of
  the read weights, which training episodes are written against;
- the **episodic memory**, [`EpisodicMemory`] (`model.memory_state`): what a user writes and forgets, kept by
  [`LarimarMemoryMixin`], which the model classes inherit.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from dataclasses import dataclass, field

import torch

from .._checks import embedding_rows
from . import memory as memory_math
from .splicing import SplicedBatch, splice_tokens


__all__ = ["MEMORY_FILE", "BatchRead", "EpisodicMemory", "LarimarMemoryMixin"]

MEMORY_FILE = "larimar_memory.safetensors"
# The files a Larimar `save_pretrained` writes (an earlier save's are replaced, any other file is kept).
SAVE_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    MEMORY_FILE,
    "README.md",
)
"""The file `save_pretrained` writes the episodic memory to (safetensors, with the config it belongs to)."""
MEMORY_FORMAT = "hf-ext-larimar-memory/2"
"""Version 2 keeps no decoder tokens: what a read inserts is always derived from the stored texts."""
READABLE_FORMATS = ("hf-ext-larimar-memory/1", MEMORY_FORMAT)


@dataclass
class EpisodicMemory:
    """What `write_memory` / `forget_memory` maintain: the sequential (ridge) memory, its precision matrix, the
    reference memory its keys come from, the latents currently stored (for scope detection and to forget exactly
    what was written), and per stored item its encoder tokens (to find it again whatever the padding, batch or dtype
    of a later encoding; `None` for an item whose tokens are unknown), its text (`None` for items written as token
    ids) and the decoder tokens that `memory_readout="text"` places before a prompt (always derived from the text
    with a processor; `None` until then)."""

    memory: torch.Tensor  # [K, C]
    precision: torch.Tensor  # [K, K]
    reference: torch.Tensor  # [K, C]
    latents: torch.Tensor  # [S, C]
    ridge: float
    reference_pinv: torch.Tensor | None = field(default=None, repr=False)  # cached M_ref⁺, [C, K]
    tokens: list[tuple[int, ...] | None] = field(default_factory=list, repr=False)  # [S]
    texts: list[str | None] = field(default_factory=list, repr=False)  # [S]
    text_tokens: list[tuple[int, ...] | None] = field(default_factory=list, repr=False)  # [S]
    source: str | None = None
    """The file the memory was loaded from (named in errors)."""
    checked: bool = True
    """Whether the texts' tokens were derived (or verified) with a processor: `False` for a memory loaded without one."""
    tokenizers: dict[str, str] | None = None
    """The fingerprints of the tokenizers the items were tokenized with (`LarimarProcessor.tokenizer_fingerprints`)."""

    def __post_init__(self):
        for name in ("tokens", "texts", "text_tokens"):
            if not getattr(self, name):
                setattr(self, name, [None] * self.size)

    @property
    def size(self) -> int:
        return self.latents.shape[0]

    def keep(self, indices: list[int]) -> None:
        """Keep only the per-item records (latents, tokens, texts, text tokens) of the stored items `indices`."""
        self.latents = self.latents[indices]
        self.tokens = [self.tokens[i] for i in indices]
        self.texts = [self.texts[i] for i in indices]
        self.text_tokens = [self.text_tokens[i] for i in indices]

    def keys(self, z: torch.Tensor) -> torch.Tensor:
        """Reference keys `z M_ref⁺` of latents `[B, N, C]` (the pseudo-inverse is computed once per state)."""
        if self.reference_pinv is None:
            self.reference_pinv = memory_math.pinv(self.reference)
        return z.to(self.reference_pinv.dtype) @ self.reference_pinv

    def to(self, device) -> EpisodicMemory:
        if self.memory.device == torch.device(device):
            return self
        moved = {name: getattr(self, name).to(device) for name in ("memory", "precision", "reference", "latents")}
        pinv = self.reference_pinv.to(device) if self.reference_pinv is not None else None
        return EpisodicMemory(
            **moved,
            ridge=self.ridge,
            reference_pinv=pinv,
            tokens=list(self.tokens),
            texts=list(self.texts),
            text_tokens=list(self.text_tokens),
            source=self.source,
            checked=self.checked,
            tokenizers=self.tokenizers,
        )

    def find(self, latents: torch.Tensor, tokens: list[tuple[int, ...]], rtol: float) -> list[list[int]]:
        """Every stored copy of each of the given items: the stored items with the same encoder tokens, else (for
        items stored without tokens) those whose latent lies within a relative distance of `rtol`; `[]` where none."""
        stored = self.latents.to(latents.device, torch.float32)
        without_tokens = [i for i, t in enumerate(self.tokens) if t is None]
        found = []
        for latent, item_tokens in zip(latents.float(), tokens):
            copies = [i for i, t in enumerate(self.tokens) if t is not None and t == item_tokens]
            if not copies and without_tokens:
                distance = (stored[without_tokens] - latent).norm(dim=-1) / stored[without_tokens].norm(dim=-1)
                copies = [i for i, d in zip(without_tokens, distance.tolist()) if d <= rtol]
            found.append(copies)
        return found

    def write(self, z: torch.Tensor, alpha: float = 1.0) -> None:
        """One recursive least-squares step with the latents `z` (`[N, C]`): `alpha=1` writes, `alpha=-1` forgets
        (the per-item records are the caller's to update)."""
        memory, precision = memory_math.sequential_write(
            z[None], self.keys(z[None]), self.memory[None], self.precision[None], alpha=alpha
        )
        self.memory, self.precision = memory[0], precision[0]


@dataclass
class BatchRead:
    """What a batch reads from the episodic memory: the latent each row is conditioned on, and with
    `memory_readout="text"` the batch with the addressed texts inserted (`splice`, `None` when nothing was)."""

    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    memory_latent: torch.Tensor
    splice: SplicedBatch | None = None

    def restore_outputs(self, outputs):
        """A [`LarimarModelOutput`] of the spliced batch at the original tokens' positions (no cache: the next call
        reads the memory for its whole prompt again)."""
        if self.splice is None:
            return outputs
        hidden_states = outputs.hidden_states
        if hidden_states is not None:
            hidden_states = tuple(self.splice.gather(states) for states in hidden_states)
        return type(outputs)(
            last_hidden_state=self.splice.gather(outputs.last_hidden_state),
            hidden_states=hidden_states,
            memory_latent=outputs.memory_latent,
        )

    def restore_generated(self, output, prompts: torch.Tensor):
        """`generate`'s output for the original prompts: the prompts as given followed by the new tokens, and the
        first step's hidden states at the prompts' positions."""
        if self.splice is None:
            return output
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        prompts = prompts.to(sequences.device)
        if sequences.shape[0] != prompts.shape[0]:  # num_return_sequences: each prompt's outputs are consecutive
            prompts = prompts.repeat_interleave(sequences.shape[0] // prompts.shape[0], dim=0)
        restored = torch.cat([prompts, sequences[:, self.splice.input_ids.shape[1] :]], dim=1)
        if isinstance(output, torch.Tensor):
            return restored
        output.sequences = restored
        hidden_states = getattr(output, "hidden_states", None)
        if hidden_states:
            first = tuple(self.splice.gather(states) for states in hidden_states[0])
            output.hidden_states = (first, *hidden_states[1:])
        return output


class _PromptStreamer:
    """Hands a streamer the user's prompt in place of the spliced one, then every new token as it comes."""

    def __init__(self, streamer, prompts: torch.Tensor):
        self.streamer, self.prompts, self.started = streamer, prompts, False

    def put(self, value):
        if not self.started:
            self.started = True
            value = self.prompts.cpu()
        self.streamer.put(value)

    def end(self):
        self.streamer.end()


class LarimarMemoryMixin:
    """The episodic memory of a Larimar model (inherited by [`LarimarModel`] and [`LarimarForCausalLM`]): write,
    read and forget texts; save and restore them with the model; read it for a batch."""

    # State and capacity ---------------------------------------------------------------------------------------

    @property
    def memory_state(self) -> EpisodicMemory | None:
        """The episodic memory written with [`write_memory`] (`None` when empty)."""
        return self._larimar()._memory_state

    @property
    def memory_capacity(self) -> int:
        """How many items the memory can tell apart: the rank bound `min(memory_size, latent_size, encoder width)`."""
        config = self.config
        return min(config.memory_size, config.latent_size, config.encoder.hidden_size)

    @property
    def memory_texts(self) -> list[str | None]:
        """The texts stored in the episodic memory, in the order written (`None` for items written as token ids)."""
        state = self.memory_state
        return list(state.texts) if state is not None else []

    def reset_memory(self) -> None:
        """Forget everything written: the memory becomes empty and every query reads a zero latent."""
        self._larimar()._memory_state = None

    def _new_state(self) -> EpisodicMemory:
        config = self.config
        # Always float64, whatever `memory_dtype`: the recursive least-squares state accumulates every write and
        # forget, and its precision matrix `λI + WᵀW` has a condition number ~1/λ (1e8 for λ = 1e-8), beyond float32.
        # One K x K solve per write costs little even where float64 is slow.
        dtype = torch.float64
        memory, precision = memory_math.ridge_memory(
            1, config.memory_size, config.latent_size, config.memory_ridge, dtype=dtype, device=self.device
        )
        reference = self._larimar().memory().prior.to(dtype)
        latents = torch.zeros(0, config.latent_size, dtype=torch.float32, device=self.device)
        return EpisodicMemory(memory[0], precision[0], reference, latents, config.memory_ridge)

    # Encoding -------------------------------------------------------------------------------------------------

    @property
    def processor(self):
        """The [`LarimarProcessor`] the memory API uses when none is passed (`None` until set), shared by a
        [`LarimarForCausalLM`] and its inner [`LarimarModel`]."""
        return self._larimar().__dict__.get("_larimar_processor")

    @processor.setter
    def processor(self, value) -> None:
        self._larimar().__dict__["_larimar_processor"] = value

    def _processor(self, processor=None):
        return processor if processor is not None else self.processor

    def _encoder_inputs(self, texts, processor, encoder_input_ids, encoder_attention_mask):
        if texts is not None:
            if isinstance(texts, str):
                texts = [texts]
            if len(texts) == 0:
                raise ValueError("texts is empty: give at least one text.")
            processor = self._processor(processor)
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
        check_encoder_ids(encoder_input_ids, encoder_attention_mask, self._larimar().encoder)
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
            mask = encoder_attention_mask.to(self.device) if encoder_attention_mask is not None else None
            z = model.encode(encoder_input_ids.to(self.device), mask)
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

    # Writing and forgetting -----------------------------------------------------------------------------------

    def write_memory(
        self, texts=None, processor=None, *, replace: bool = True, encoder_input_ids=None, encoder_attention_mask=None
    ):
        """Write texts (facts, sentences) into the episodic memory in one shot, without gradient steps.

        A write **edits** what it addresses. With `replace=True` (the default), a new text replaces the stored
        items it is an edit of, where an edit is defined as:

        1. the two texts say the same thing up to their last words and differ only there: the words they share from
           the start (the subject and the relation, as the texts phrase them, e.g. "Mara Okafor lives in") are at
           least twice as many as the words in which either of them goes on (the objects, e.g. "Lisbon" and
           "Porto"); and
        2. that shared beginning, read as a query, addresses the stored item: of all the stored items, its latent is
           the one nearest to the beginning's (cosine, as `item_addressing="nearest"` reads), within
           `config.scope_threshold`.

        So "Mara Okafor lives in Porto" replaces "Mara Okafor lives in Lisbon" (and a text written again replaces its
        earlier copies), while "Mara Okafor works as a nurse" (another relation: the shared "Mara Okafor" is shorter
        than "works as a nurse"), "Mara Okafor plays the sport of tennis" beside "... plays the cello", and facts
        about other subjects stay. Within one call, a later text replaces an earlier one by the first rule alone. A
        paraphrased edit ("Mara Okafor now resides in Porto") is not recognised: forget the old text. Measured with
        `NATURAL_RECIPE` on 100 facts re-edited twice (`examples/larimar/edits.py`): see examples/larimar/README.md.
        `replace=False` always appends.

        Args:
            texts (`str` or `list[str]`):
                What to remember.
            processor ([`LarimarProcessor`], *optional*):
                Tokenizes `texts` for the encoder (and, for `memory_readout="text"`, the decoder); `model.processor`
                when set.
            replace (`bool`, *optional*, defaults to `True`):
                Replace the stored items each text addresses (see above), or append.
            encoder_input_ids, encoder_attention_mask (`torch.LongTensor`, *optional*):
                Already tokenized texts, instead of `texts`.

        Returns:
            `int`: the number of items the memory holds.
        """
        texts = [texts] if isinstance(texts, str) else texts
        processor = self._processor(processor)
        text_tokens = self._text_tokens(texts, processor)
        z, tokens = self._encode_items(texts, processor, encoder_input_ids, encoder_attention_mask)
        model = self._larimar()
        state = (model._memory_state or self._new_state()).to(self.device)
        self._check_loaded_memory(state, processor)
        count = z.shape[0]
        texts = list(texts) if texts is not None else [None] * count
        text_tokens = text_tokens or [None] * count
        kept = list(range(count))
        if replace and texts[0] is not None:
            kept = [i for i in range(count) if not any(is_edit(texts[j], texts[i]) for j in range(i + 1, count))]
            replaced = self._edited_items(state, [texts[i] for i in kept], processor)
            if replaced:
                state.write(state.latents[replaced], alpha=-1.0)
                state.keep([i for i in range(state.size) if i not in set(replaced)])
        z = z[kept]
        state.write(z)
        state.latents = torch.cat([state.latents, z], 0)
        state.tokens = state.tokens + [tokens[i] for i in kept]
        state.texts = state.texts + [texts[i] for i in kept]
        state.text_tokens = state.text_tokens + [text_tokens[i] for i in kept]
        if processor is not None and hasattr(processor, "tokenizer_fingerprints") and texts[0] is not None:
            state.tokenizers = state.tokenizers or processor.tokenizer_fingerprints()
        model._memory_state = state
        if state.size > self.memory_capacity:
            warnings.warn(
                f"The Larimar memory now holds {state.size} items but can tell apart at most {self.memory_capacity} "
                f"(min of memory_size={self.config.memory_size}, latent_size={self.config.latent_size} and the "
                f"encoder's hidden size={self.config.encoder.hidden_size}): recall of every stored item degrades once "
                "the items outnumber that rank. Forget items, reset the memory or use a larger model"
                + (
                    ' (or item_addressing="nearest", which does not blur with the number of items).'
                    if self.config.memory_readout == "text" and self.config.item_addressing == "memory"
                    else "."
                ),
                stacklevel=2,
            )
        return state.size

    def _edited_items(self, state: EpisodicMemory, texts: list[str], processor) -> list[int]:
        """The stored items that `texts` are edits of (see [`write_memory`]), every copy of each."""
        pairs = [(text, index) for text in texts for index, stored in enumerate(state.texts) if is_edit(text, stored)]
        if not pairs:
            return []
        beginnings = self.encode_texts(
            [shared_beginning(text, state.texts[index]) for text, index in pairs], processor
        )
        stored = torch.nn.functional.normalize(state.latents.to(beginnings.device, torch.float32), dim=-1)
        similarity = torch.nn.functional.normalize(beginnings, dim=-1) @ stored.T
        nearest = similarity.argmax(-1)
        threshold = self.config.scope_threshold
        if threshold is not None:
            nearest = torch.where(1 - similarity.amax(-1) <= threshold, nearest, -1)
        # (a copy of the item's text counts as the item: every copy is replaced)
        hits = {
            state.texts[index]
            for (_, index), item in zip(pairs, nearest.tolist())
            if item >= 0 and state.texts[item] == state.texts[index]
        }
        return [index for index, stored in enumerate(state.texts) if stored in hits]

    def _text_tokens(self, texts: list[str] | None, processor) -> list[tuple[int, ...]] | None:
        """The decoder tokens each text is placed as with `memory_readout="text"` (`None` without texts), checked to
        fit the decoder's positions."""
        needed = self.config.memory_readout == "text"
        if texts is None:
            if needed:
                raise ValueError(
                    'memory_readout="text" places the written texts before the prompt, so write_memory needs the '
                    "texts (and a processor), not encoder_input_ids."
                )
            return None
        if processor is None or not hasattr(processor, "text_ids"):
            if needed:
                raise ValueError(
                    'memory_readout="text" needs a LarimarProcessor (it tokenizes the texts for the decoder); got '
                    f"{type(processor).__name__}."
                )
            return None
        result = [tuple(ids) for ids in processor.text_ids(texts, self.config.text_template)]
        limit = self._decoder_positions()
        if needed and limit is not None:
            for index, ids in enumerate(result):
                if len(ids) >= limit // 2:
                    raise ValueError(
                        f"texts[{index}] is {len(ids)} decoder tokens as placed before a prompt, but the decoder "
                        f"reads at most {limit} positions: a remembered text may take at most half of them "
                        f"({limit // 2 - 1} tokens), to leave room for the prompt and the answer. Split it into "
                        "shorter facts."
                    )
        return result

    def _decoder_positions(self) -> int | None:
        decoder = self.config.decoder
        return getattr(decoder, "max_position_embeddings", None) or getattr(decoder, "n_positions", None)

    def forget_memory(self, texts=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None):
        """Forget texts written earlier with [`write_memory`] (a recursive least-squares step with weight -1).

        Each text is found among the stored items by its encoder tokens, so the padding, batch and dtype it is
        encoded with now do not matter, and every stored copy of it is removed, each with the latent stored when it
        was written, which undoes those writes exactly. (Items whose tokens are unknown are matched by their
        latent.) Texts that are not in the memory are named in a warning and skipped. Returns the number of items
        the memory holds.
        """
        processor = self._processor(processor)
        z, tokens = self._encode_items(texts, processor, encoder_input_ids, encoder_attention_mask)
        model = self._larimar()
        state = model._memory_state
        if state is None or state.size == 0:
            warnings.warn("The Larimar memory is empty: there is nothing to forget.", stacklevel=2)
            return 0
        state = state.to(self.device)
        self._check_loaded_memory(state, processor)
        found = state.find(z, tokens, rtol=latent_match_rtol(model.encoder))
        missing = [i for i, copies in enumerate(found) if not copies]
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
        gone = sorted({index for copies in found for index in copies})
        if gone:
            state.write(state.latents[gone], alpha=-1.0)  # exactly what was written
            state.keep([i for i in range(state.size) if i not in set(gone)])
        model._memory_state = state
        return state.size

    # Reading --------------------------------------------------------------------------------------------------

    def read_memory(
        self, queries=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None, scope=True
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
        state = self._larimar()._memory_state
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

    def read_memory_items(
        self, queries=None, processor=None, *, encoder_input_ids=None, encoder_attention_mask=None, scope=True
    ) -> list[int | None]:
        """For each query, the index (in [`memory_texts`]) of the stored item it addresses: the largest of the
        memory read's weights over the items ([`~hf_ext.larimar.memory.item_weights`]), or the nearest stored latent
        with `config.item_addressing="nearest"`. `None` for a query out of scope (`config.scope_threshold`, with
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
        if self.config.item_addressing == "nearest":
            stored = torch.nn.functional.normalize(state.latents.to(q.dtype), dim=-1)
            best = (torch.nn.functional.normalize(q, dim=-1) @ stored.T).argmax(-1)
        else:
            keys = state.keys(q[None])
            best = memory_math.item_weights(keys, state.keys(state.latents[None]), state.precision[None])[0].argmax(-1)
        if scope and self.config.scope_threshold is not None:
            in_scope = memory_math.scope_mask(q[None], state.latents[None], self.config.scope_threshold)[0]
            best = torch.where(in_scope, best, -1)
        return [index if index >= 0 else None for index in best.tolist()]

    def read_long_context(self, context, queries, processor=None, *, episode_size: int | None = None) -> torch.Tensor:
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
        dtype = self.config.memory_torch_dtype
        found = memory_math.hierarchical_read(
            chunks[None],
            q[None],
            self._larimar().memory().prior.float(),
            episode_size or self.config.episode_size,
            write_fn=lambda z, m0: memory_math.write(z, m0, dtype=dtype),
            read_fn=lambda q_, m: memory_math.read(q_, m, dtype=dtype),
        )
        return found[0].to(self.dtype)

    def _zero_latents(self, batch: int) -> torch.Tensor:
        """The latents of "no memory" (`[batch, latent_size]`, the model's dtype)."""
        return torch.zeros(batch, self.config.latent_size, device=self.device, dtype=self.dtype)

    # A batch's read -------------------------------------------------------------------------------------------

    def _read_for_batch(
        self,
        input_ids,
        attention_mask,
        inputs_embeds,
        memory_latent,
        encoder_input_ids,
        encoder_attention_mask,
        *,
        side: str | None = None,
        cache=None,
        refused: dict | None = None,
        generating: bool = False,
    ) -> BatchRead:
        """What a batch reads: `memory_latent` when given; else, with encoder queries, the latent they read
        (`memory_readout="latent"`) or a zero latent and the batch with each addressed text inserted after its BOS
        (`"text"`); else a zero latent. `refused` holds the arguments the text read-out cannot honour; `generating`
        encodes the queries as `read_memory` does (eval mode, token ids checked)."""
        if memory_latent is not None or encoder_input_ids is None:
            if memory_latent is None:
                batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
                memory_latent = self._zero_latents(batch)
            return BatchRead(input_ids, attention_mask, memory_latent)
        if self.config.memory_readout == "latent":
            if generating:
                q = self.encode_texts(
                    encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask
                )
            else:
                q = self._larimar().encode(encoder_input_ids, encoder_attention_mask)
            return BatchRead(input_ids, attention_mask, self._read_latents(q.float()))
        if input_ids is None:
            raise ValueError('memory_readout="text" needs input_ids (the remembered text is placed between tokens).')
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(
                'memory_readout="text" reads the memory for a whole prompt: call it without a filled cache, or use '
                "generate()."
            )
        for name, value in (refused or {}).items():
            if value is not None and value is not False:
                raise ValueError(
                    f'{name} is not supported with memory_readout="text" and encoder inputs: the decoder runs on '
                    f"the prompt with a remembered text inserted, so {_REFUSAL_REASONS[name]}"
                )
        zero = self._zero_latents(input_ids.shape[0])
        splice = self._splice_texts(input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, side)
        if splice is None:
            return BatchRead(input_ids, attention_mask, zero)
        return BatchRead(splice.input_ids, splice.attention_mask, zero, splice)

    def _splice_texts(self, input_ids, attention_mask, encoder_input_ids, encoder_attention_mask, side):
        """The batch with the text each query addresses placed after its prompt's BOS (see [`splice_tokens`]);
        `None` when no query addresses anything."""
        state = self._larimar()._memory_state
        if state is None or state.size == 0:
            return None
        q = self.encode_texts(encoder_input_ids=encoder_input_ids, encoder_attention_mask=encoder_attention_mask)
        items = self._read_items(q)
        if all(index is None for index in items):
            return None
        self._check_loaded_memory(state, self._processor())
        if not state.checked:
            raise ValueError(
                f'The episodic memory loaded from {state.source} holds texts that memory_readout="text" places '
                "before the prompt; their decoder tokens are derived (and the file's tokens checked) with a "
                "LarimarProcessor, and none was available: call model.load_memory(path, processor=processor), set "
                "model.processor, or save the processor next to the model (processor.save_pretrained(folder)) so "
                "that from_pretrained finds it."
            )
        insertions = [state.text_tokens[i] if i is not None else None for i in items]
        if not any(insertions):
            return None
        # The padding is masked: any id the embeddings have will do.
        bos = self.config.decoder.bos_token_id
        splice = splice_tokens(input_ids, attention_mask, insertions, pad_token_id=0, bos_token_id=bos, side=side)
        limit = self._decoder_positions()
        if limit is not None and splice.input_ids.shape[1] > limit:
            raise ValueError(
                f"The prompts with their remembered texts are {splice.input_ids.shape[1]} tokens, more than the "
                f"{limit} positions the decoder reads: shorten the prompts."
            )
        return splice

    def _generation_kwargs(self, read: BatchRead, prompts: torch.Tensor, kwargs: dict) -> dict:
        """`generate`'s arguments for a spliced batch: lengths counted on the user's tokens, the streamer shown the
        user's prompt."""
        if read.splice is None:
            return kwargs
        kwargs = dict(kwargs)
        generation_config = kwargs.get("generation_config") or self.generation_config
        added = read.splice.added
        if kwargs.get("max_new_tokens", generation_config.max_new_tokens) is None:
            kwargs["max_length"] = kwargs.get("max_length", generation_config.max_length) + added
        elif "max_length" in kwargs:
            kwargs["max_length"] += added
        new_tokens = kwargs.get("max_new_tokens", generation_config.max_new_tokens)
        limit = self._decoder_positions()
        total = read.splice.input_ids.shape[1] + new_tokens if new_tokens is not None else kwargs["max_length"]
        if limit is not None and total > limit:
            raise ValueError(
                f"The prompts with their remembered texts ({read.splice.input_ids.shape[1]} tokens) and the tokens "
                f"asked for reach {total} positions, more than the {limit} the decoder reads: ask for fewer tokens."
            )
        if kwargs.get("min_new_tokens", generation_config.min_new_tokens) is None:
            min_length = kwargs.get("min_length", generation_config.min_length)
            if min_length:
                kwargs["min_length"] = min_length + added
        if kwargs.get("streamer") is not None:
            kwargs["streamer"] = _PromptStreamer(kwargs["streamer"], prompts)
        return kwargs

    # Saving and loading ---------------------------------------------------------------------------------------

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
        """A model card rendered from `model_cards/larimar.md` (a `huggingface_hub.ModelCard`), describing the
        read-out in use and every Larimar setting of the config."""
        from ..hub import make_card

        config = self.config
        own = {"encoder", "decoder"}
        fields = [name for name in type(config).__dataclass_fields__ if name not in own and _is_larimar_field(name)]
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
            memory_readout=config.memory_readout,
            capacity=self.memory_capacity,
            memory_items=state.size if state is not None else 0,
            repo_id=repo_id or "path/to/this/model",
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the episodic memory in `larimar_memory.safetensors` and a model
        card (`README.md`). With `push_to_hub=True`, everything is uploaded in one commit (`repo_id`, `token`,
        `private`, `commit_message` as in `PreTrainedModel.save_pretrained`).

        All or nothing: weights, memory and card are written beside `save_directory` and moved into it together
        (journaled: a save killed half-way is rolled back by the next save or load, so weights never sit beside
        another save's memory). The files of an earlier Larimar save are replaced; other files are kept, a
        `README.md` hf-ext did not write included (the card of an earlier save is refreshed). The folder is locked
        for the save: a second process saving into it fails at once.

        The memory file holds the stored texts in plain form (in its metadata). Forgetting a text and pushing again
        removes it from the repository's latest revision, not from its history: squash the history
        (`HfApi().super_squash_history`) or re-create the repository to erase it."""
        push_to_hub = kwargs.pop("push_to_hub", False)
        push_kwargs = {
            key: kwargs.pop(key) for key in ("repo_id", "token", "private", "commit_message") if key in kwargs
        }
        if not kwargs.get("is_main_process", True):  # another process of a distributed run saves
            return super().save_pretrained(save_directory, *args, **kwargs)
        from ..serialization import staged_save

        with staged_save(save_directory, replace=SAVE_FILES) as staging:
            result = super().save_pretrained(staging, *args, **kwargs)
            self._save_memory_and_card(staging)
        if push_to_hub:
            from ..hub import push_folder

            repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            push_folder(save_directory, repo_id, **push_kwargs)
        return result

    def _save_memory_and_card(self, save_directory) -> None:
        from ..hub import save_card

        save_card(self.model_card(), save_directory)
        from ..serialization import save_tensors

        target = os.path.join(save_directory, MEMORY_FILE)
        state = self.memory_state
        metadata = {
            "format": MEMORY_FORMAT,
            "latent_size": str(self.config.latent_size),
            "memory_size": str(self.config.memory_size),
            "memory_dtype": self.config.memory_dtype,
            "items": str(state.size if state is not None else 0),
        }
        if state is None or state.size == 0:
            # Written empty too, so that a checkpoint without the file is known to have lost its memory.
            save_tensors(target, {"latents": torch.zeros(0, self.config.latent_size)}, metadata=metadata)
            return
        # Each item's encoder tokens (for forget_memory), concatenated; length -1 marks an item without them. The
        # texts go in the metadata, as JSON; the tokens a read places before a prompt are derived from them.
        lengths, flat = _flatten_token_lists(state.tokens)
        tensors = {
            "memory": state.memory,
            "precision": state.precision,
            "reference": state.reference,
            "latents": state.latents,
            "item_lengths": lengths,
            "item_tokens": flat,
        }
        metadata.update({"ridge": repr(state.ridge), "item_texts": json.dumps(state.texts)})
        if state.tokenizers:
            metadata["tokenizers"] = json.dumps(state.tokenizers, sort_keys=True)
        save_tensors(target, tensors, metadata=metadata)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, restoring the episodic memory saved with the model (if any), checked
        against the processor saved beside it (see [`load_memory`])."""
        from safetensors import SafetensorError

        from .._checks import safetensors_load_error
        from ..transactions import recover_before_loading

        recover_before_loading(pretrained_model_name_or_path)
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:  # transformers lets it through without the file's name
            raise safetensors_load_error(
                pretrained_model_name_or_path, error, subfolder=kwargs.get("subfolder") or ""
            ) from None
        loaded = model[0] if isinstance(model, tuple) else model  # output_loading_info=True
        path = _find_memory_file(pretrained_model_name_or_path, kwargs)
        if path is not None:
            loaded.load_memory(path, processor=_SIBLING_PROCESSOR, _repo=(pretrained_model_name_or_path, kwargs))
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

    def load_memory(self, path: str | os.PathLike, processor=None, *, _repo=None) -> None:
        """Load an episodic memory saved by `save_pretrained`.

        Every count, shape, dtype and token id of the file is checked against this model (a `ValueError` names the
        file and the field). The texts the memory shows are what a `memory_readout="text"` read inserts: their
        tokens are derived from the texts with `processor` (`model.processor`, or the processor saved beside the
        file, when not given), and the file's own tokens (encoder tokens, and the decoder tokens older files kept)
        must be those of its texts, made by the same tokenizers; a mismatch is a `ValueError` naming the file.
        Without any processor the memory loads unchecked, and is checked the first time one is at hand (a write, a
        forget, or `model.processor`); a text read-out refuses to insert unchecked texts.
        """
        from ..serialization import open_safetensors

        with open_safetensors(path) as handle:  # a truncated file is an error naming it
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        state = _memory_from_file(str(path), metadata, tensors, self)
        if state is None:
            self._larimar()._memory_state = None
            return
        if processor is _SIBLING_PROCESSOR:
            processor = self._processor() or _sibling_processor(path, _repo)
        self._check_loaded_memory(state, self._processor(processor))
        if self.config.memory_readout == "text" and None in state.texts:
            warnings.warn(
                f'{path} holds items without their text (written as token ids): with memory_readout="text" a prompt '
                "that addresses one of them gets no text. Write them again with write_memory(texts, processor=...).",
                UserWarning,
                stacklevel=2,
            )
        self._larimar()._memory_state = state.to(self.device)

    def _check_loaded_memory(self, state: EpisodicMemory, processor) -> None:
        """Derive the loaded memory's text tokens with `processor` and check the file's tokens against them (once)."""
        if state.checked or processor is None or not hasattr(processor, "text_ids"):
            return
        source = state.source
        fingerprints = processor.tokenizer_fingerprints()
        for name, value in (state.tokenizers or {}).items():
            if fingerprints.get(name) != value:
                raise ValueError(
                    f"{source}: its items were tokenized by another {name.replace('_', ' ')} than this processor's "
                    f"(tokenizers[{name!r}] = {value!r}, this one's {fingerprints.get(name)!r}); load it with the "
                    "processor saved with it."
                )
        indices = [i for i, text in enumerate(state.texts) if text is not None]
        if indices:
            texts = [state.texts[i] for i in indices]
            encoder_tokens = processor.memory_ids(texts)
            text_tokens = processor.text_ids(texts, self.config.text_template)
            for i, encoded, placed in zip(indices, encoder_tokens, text_tokens):
                if state.tokens[i] is not None and state.tokens[i] != tuple(encoded):
                    raise ValueError(
                        f"{source}: item_tokens of item {i} are not the encoder tokens of its text "
                        f"{state.texts[i]!r}: the file was written with another encoder tokenizer, or edited."
                    )
                if state.text_tokens[i] is not None and state.text_tokens[i] != tuple(placed):
                    shown = processor.decoder_tokenizer.decode(list(state.text_tokens[i]))
                    raise ValueError(
                        f"{source}: context_tokens of item {i} are not the tokens of its text {state.texts[i]!r} "
                        f"(they read {shown!r}): the file was written with another decoder tokenizer or template, "
                        "or edited, and would insert a text the memory does not show."
                    )
                state.tokens[i] = tuple(encoded)
                state.text_tokens[i] = tuple(placed)
        state.tokenizers = state.tokenizers or fingerprints
        state.checked = True


_REFUSAL_REASONS = {
    "position_ids": "positions given for the prompt alone would not number the inserted tokens; leave them out "
    "(each row is numbered from its first token).",
    "output_attentions": "the attention maps cover the inserted tokens and cannot be mapped back to the prompt's; "
    "ask for hidden states instead (they are returned at the prompt's positions).",
}

_SIBLING_PROCESSOR = object()
"""`load_memory`'s processor when called by `from_pretrained`: the one saved beside the checkpoint, if any."""


def _is_larimar_field(name: str) -> bool:
    from transformers import PreTrainedConfig

    return name not in PreTrainedConfig.__dataclass_fields__


def _words(text: str) -> list[str]:
    return text.strip().rstrip(".!?;:").split()


def shared_beginning(text: str, other: str) -> str:
    """The words `text` and `other` share from their start."""
    words, others = _words(text), _words(other)
    count = 0
    while count < min(len(words), len(others)) and words[count] == others[count]:
        count += 1
    return " ".join(words[:count])


def is_edit(text: str | None, stored: str | None) -> bool:
    """Whether `text` and `stored` differ only in their last words (the first rule of an edit, see
    [`LarimarMemoryMixin.write_memory`]): the same words up to a point, at least twice as many of those as of the
    words in which either goes on. Equal texts are edits of each other."""
    if text is None or stored is None:
        return False
    words, others = _words(text), _words(stored)
    shared = len(shared_beginning(text, stored).split())
    return shared > 0 and shared >= 2 * (max(len(words), len(others)) - shared)


def _sibling_processor(path, repo):
    """The `LarimarProcessor` saved in the folder (or Hub repo) of a checkpoint, or `None`."""
    from .processing_larimar import SUBFOLDERS, LarimarProcessor

    folder = os.path.dirname(os.path.abspath(str(path)))
    if all(os.path.isdir(os.path.join(folder, name)) for name in SUBFOLDERS):
        return LarimarProcessor.from_pretrained(folder)
    if repo is None or os.path.isdir(str(repo[0])):
        return None
    name, kwargs = repo
    options = {key: kwargs.get(key) for key in ("revision", "subfolder", "token", "cache_dir", "local_files_only")}
    try:
        return LarimarProcessor.from_pretrained(name, **{k: v for k, v in options.items() if v is not None})
    except (OSError, ValueError):  # a Hub repo without a processor (or offline): the memory loads unchecked
        return None


def _memory_from_file(path: str, metadata: dict, tensors: dict, model) -> EpisodicMemory | None:
    """The memory a file holds, every field checked; `None` for an empty memory."""
    config = model.config
    if metadata.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path} is not a Larimar memory file (format={metadata.get('format')!r}).")
    expected = {"latent_size": str(config.latent_size), "memory_size": str(config.memory_size)}
    found = {key: metadata.get(key) for key in expected}
    if found != expected:
        raise ValueError(
            f"The memory in {path} was written by a model with {found}, but this model has {expected}: "
            "it belongs to another configuration."
        )

    def bad(name: str, what: str) -> ValueError:
        return ValueError(f"{path}: {name} {what}; the file is damaged or was not written by save_pretrained.")

    items = metadata.get("items", "")
    if not items.isdigit():
        raise bad("items", f"is {items!r}, expected a count")
    items = int(items)
    k, c = config.memory_size, config.latent_size
    latents = tensors.get("latents")
    if latents is None:
        raise bad("latents", "is missing")
    if items == 0:
        if latents.shape != (0, c) or set(tensors) != {"latents"}:
            raise bad("latents", f"has shape {tuple(latents.shape)} and tensors {sorted(tensors)} for items=0")
        return None
    shapes = {"memory": (k, c), "precision": (k, k), "reference": (k, c), "latents": (items, c)}
    for name, shape in shapes.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise bad(name, f"is missing (items={items})")
        if tuple(tensor.shape) != shape:
            raise bad(name, f"has shape {tuple(tensor.shape)}, expected {shape} (items={items})")
        if tensor.dtype not in (torch.float32, torch.float64):
            raise bad(name, f"has dtype {tensor.dtype}, expected float32 or float64")
        if not torch.isfinite(tensor).all():
            raise bad(name, "holds NaN or infinite values")
    ridge = metadata.get("ridge", repr(config.memory_ridge))
    try:
        ridge = float(ridge)
    except ValueError:
        raise bad("ridge", f"is {ridge!r}, expected a number") from None
    if not ridge > 0:
        raise bad("ridge", f"is {ridge}, expected > 0")
    try:
        texts = json.loads(metadata["item_texts"]) if "item_texts" in metadata else [None] * items
    except json.JSONDecodeError:
        raise bad("item_texts", "is not JSON") from None
    if not isinstance(texts, list) or len(texts) != items or not all(t is None or isinstance(t, str) for t in texts):
        raise bad("item_texts", f"is not a list of {items} texts (or nulls)")
    tokens = _token_lists(
        path, tensors, "item_lengths", "item_tokens", items, embedding_rows(model._larimar().encoder)
    )
    decoder_rows = embedding_rows(model)
    text_tokens = _token_lists(path, tensors, "context_lengths", "context_tokens", items, decoder_rows)
    tokenizers = None
    if "tokenizers" in metadata:
        try:
            tokenizers = json.loads(metadata["tokenizers"])
        except json.JSONDecodeError:
            raise bad("tokenizers", "is not JSON") from None
        if not isinstance(tokenizers, dict) or not all(isinstance(v, str) for v in tokenizers.values()):
            raise bad("tokenizers", "is not a mapping of tokenizer fingerprints")
    known = {"memory", "precision", "reference", "latents", "item_lengths", "item_tokens"}
    known |= {"context_lengths", "context_tokens"}
    if set(tensors) - known:
        raise bad("tensors", f"include unknown {sorted(set(tensors) - known)}")
    return EpisodicMemory(
        tensors["memory"],
        tensors["precision"],
        tensors["reference"],
        latents.float(),
        ridge,
        tokens=tokens or [None] * items,
        texts=texts,
        text_tokens=text_tokens or [None] * items,
        source=path,
        checked=not any(t is not None for t in texts) and not text_tokens,
        tokenizers=tokenizers,
    )


def _token_lists(path, tensors, lengths_name, tokens_name, items, rows) -> list[tuple[int, ...] | None]:
    """Per-item token lists stored as `(lengths, concatenated tokens)`, checked; `[]` when the file has none."""
    lengths, flat = tensors.get(lengths_name), tensors.get(tokens_name)
    if lengths is None and flat is None:
        return []
    for name, tensor in ((lengths_name, lengths), (tokens_name, flat)):
        if tensor is None or tensor.ndim != 1 or tensor.dtype != torch.long:
            shown = "missing" if tensor is None else f"{tensor.dtype} of shape {tuple(tensor.shape)}"
            raise ValueError(f"{path}: {name} is {shown}, expected a 1-D int64 tensor beside its partner.")
    lengths, flat = lengths.tolist(), flat.tolist()
    if len(lengths) != items or any(n < -1 for n in lengths):
        raise ValueError(
            f"{path}: {lengths_name} has {len(lengths)} entries (each >= -1 expected), for {items} items."
        )
    if sum(max(n, 0) for n in lengths) != len(flat):
        raise ValueError(
            f"{path}: {lengths_name} add up to {sum(max(n, 0) for n in lengths)} tokens but {tokens_name} holds "
            f"{len(flat)}."
        )
    if flat and (min(flat) < 0 or (rows is not None and max(flat) >= rows)):
        raise ValueError(
            f"{path}: {tokens_name} hold ids from {min(flat)} to {max(flat)}, beyond the {rows} the model embeds: "
            "they were made by another tokenizer."
        )
    result, start = [], 0
    for length in lengths:
        result.append(tuple(flat[start : start + length]) if length >= 0 else None)
        start += max(length, 0)
    return result


def _flatten_token_lists(lists: list[tuple[int, ...] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item token lists as `(lengths, concatenated tokens)`; length -1 marks an item without a list."""
    lengths = [len(t) if t is not None else -1 for t in lists]
    flat = [token for t in lists if t is not None for token in t]
    return torch.tensor(lengths, dtype=torch.long), torch.tensor(flat, dtype=torch.long)


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


def latent_match_rtol(encoder) -> float:
    """How far (relative distance) a new encoding of a stored text may be from the stored latent: rounding in the
    encoder's dtype, amplified through its layers, with another padding or batch composition."""
    dtype = next(encoder.parameters()).dtype
    return 1e-3 if dtype in (torch.float32, torch.float64) else 0.1


def check_encoder_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, encoder) -> None:
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
    check_id_range("encoder_input_ids", low, high, embedding_rows(encoder), "encoder")


def check_id_range(name: str, low: int, high: int, rows: int | None, side: str) -> None:
    if rows is not None and (low < 0 or high >= rows):
        raise ValueError(
            f"{name} hold token ids from {low} to {high}, but the {side} embeds ids 0..{rows - 1}: they were made by "
            f"another tokenizer than the {side}'s."
        )
