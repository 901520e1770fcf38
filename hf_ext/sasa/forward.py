"""Exact hidden states of `prefix + v` for K candidate tokens `v`, in one forward on a KV cache.

All K candidates go in as one `(batch, K)` block at the *same* position (the next one), with an additive 4-D
attention mask that lets candidate `k` see the prefix (minus its padding) and itself only: a tree of depth one.
Each candidate then gets exactly the hidden state a separate forward of `prefix + v` would give, while the prefix
keys and values are shared rather than copied K times. The K entries the forward appended to the cache are then
cropped off again, so the cache is left as it was.

The mask is additive float (0 / dtype-min), never boolean: with `attn_implementation="eager"`, a boolean 4-D mask
is added to the attention scores as 0 / 1 and silently gives wrong states.

[`PrefixCache`] is the own-cache path: a cache of the prefix that the processor keeps itself (extended by the
new tokens at each call, re-indexed when beam search reorders rows), used when `generate`'s cache is out of reach
or cannot be cropped.
"""

from __future__ import annotations

import torch

from .._compat import cache_kwargs
from .hidden_states import hidden_states_at, positions_from_mask


__all__ = ["PrefixCache", "candidate_hidden_states", "is_rollback_cache", "rollback", "tree_attention_mask"]


def tree_attention_mask(prefix_mask: torch.Tensor, num_candidates: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask `(batch, 1, K, L + K)`: candidate `k` attends to the prefix's non-pad tokens and to itself."""
    batch, length = prefix_mask.shape
    device = prefix_mask.device
    blocked = torch.finfo(dtype).min
    mask = torch.full((batch, 1, num_candidates, length + num_candidates), blocked, dtype=dtype, device=device)
    prefix_visible = prefix_mask.bool()[:, None, None, :].expand(batch, 1, num_candidates, length)
    mask[..., :length] = mask[..., :length].masked_fill(prefix_visible, 0.0)
    diagonal = torch.eye(num_candidates, dtype=torch.bool, device=device)
    mask[..., length:] = mask[..., length:].masked_fill(diagonal, 0.0)
    return mask


def is_rollback_cache(cache) -> bool:
    """Whether K entries can be appended to `cache` and cropped off again without a trace: a `DynamicCache`
    whose layers are all plain (full attention, not sliding, not quantized, not static)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(cache, DynamicCache) or len(cache.layers) == 0:
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _batch_size(cache) -> int:
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel() > 0:
            return int(layer.keys.shape[0])
    return -1


def rollback(cache, length: int) -> None:
    """Crop every layer of `cache` back to `length` tokens (layers already at `length` are left alone)."""
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def _cache_dtype(cache, fallback: torch.dtype) -> torch.dtype:
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel() > 0:
            return layer.keys.dtype
    return fallback


@torch.no_grad()
def candidate_hidden_states(
    body,
    cache,
    candidate_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
    next_positions: torch.Tensor,
    layer: int = -1,
) -> torch.Tensor:
    """Hidden states `(batch, K, hidden)` of `prefix + candidate_ids[:, k]` for every k, in one forward.

    Args:
        body: The decoder body ([`decoder_body`]).
        cache (`DynamicCache`): Holds exactly the prefix (`L` tokens per row); left as it was on return.
        candidate_ids (`torch.LongTensor` of shape `(batch, K)`): Candidate next tokens.
        prefix_mask (`torch.Tensor` of shape `(batch, L)`): Padding mask of the prefix (1 = real token).
        next_positions (`torch.LongTensor` of shape `(batch,)`): Position id of the next token of each row.
        layer (`int`): Which hidden states to return (`-1`: last layer).
    """
    batch, num = candidate_ids.shape
    length = cache.get_seq_length()
    if prefix_mask.shape != (batch, length):
        raise ValueError(f"prefix_mask has shape {tuple(prefix_mask.shape)}, expected {(batch, length)}.")
    dtype = _cache_dtype(cache, torch.float32)
    mask = tree_attention_mask(prefix_mask, num, dtype)
    positions = next_positions.to(candidate_ids.device)[:, None].expand(batch, num)
    try:
        return hidden_states_at(
            body,
            layer,
            input_ids=candidate_ids,
            attention_mask=mask,
            position_ids=positions,
            **cache_kwargs(cache),
            use_cache=True,
        )
    finally:
        rollback(cache, length)


class PrefixCache:
    """A KV cache of the current prefix that the processor owns (the fallback when `generate`'s is out of reach).

    [`PrefixCache.sync`] brings it to a new `input_ids`: when every row of the new prefix starts with a cached row
    (the next decoding step, or beam search's reordering of rows), the cache is re-indexed and only the new tokens
    are forwarded; otherwise it is rebuilt from scratch.
    """

    def __init__(self, body, config):
        self.body = body
        self.config = config
        self.cache = None
        self.input_ids: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None

    def reset(self) -> None:
        self.cache = self.input_ids = self.attention_mask = None

    def new_cache(self):
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.config)

    def _reusable_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        if self.cache is None or self.input_ids.device != input_ids.device:
            return None
        cached_len = self.input_ids.shape[1]
        if cached_len > input_ids.shape[1]:
            return None
        same_ids = (input_ids[:, None, :cached_len] == self.input_ids[None]).all(-1)
        same_mask = (attention_mask[:, None, :cached_len] == self.attention_mask[None]).all(-1)
        match = same_ids & same_mask  # (new rows, cached rows)
        if not match.any(-1).all():
            return None
        return match.int().argmax(-1)

    @torch.no_grad()
    def sync(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Bring the cache to `input_ids`; returns `(cache, attention_mask, next_positions)`."""
        positions = positions_from_mask(attention_mask)
        rows = self._reusable_rows(input_ids, attention_mask)
        if rows is None:
            self.cache = self.new_cache()
            start = 0
        else:
            start = self.input_ids.shape[1]
            if rows.shape[0] != self.input_ids.shape[0] or not torch.equal(
                rows, torch.arange(rows.shape[0], device=rows.device)
            ):
                self.cache.batch_select_indices(rows)
        if start < input_ids.shape[1]:
            self.body(
                input_ids=input_ids[:, start:],
                attention_mask=attention_mask,
                position_ids=positions[:, start:],
                **cache_kwargs(self.cache),
                use_cache=True,
                return_dict=True,
            )
        self.input_ids, self.attention_mask = input_ids, attention_mask
        return self.cache, attention_mask, positions[:, -1] + 1
