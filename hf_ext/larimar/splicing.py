"""Placing remembered text before the decoder's tokens (`memory_readout="text"`), as pure tensor bookkeeping.

Each row of a batch gets its own inserted tokens (or none) right after its beginning-of-sequence token, the batch is
padded again on the side it was padded on, and the position of every original token in the new rows is returned, so
that outputs can be gathered back to the shape of the original batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


__all__ = ["SplicedBatch", "padding_side", "splice_tokens"]


@dataclass
class SplicedBatch:
    """A batch with tokens inserted after each row's BOS.

    `positions[b, j]` is where row `b` now holds what predicted original position `j`'s successor: the original
    token `j` itself, or for a leading BOS the last inserted token (which has seen the BOS and the insertion).
    Padding positions point at position 0 of their row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor | None = None

    @property
    def added(self) -> int:
        """How many columns the splice added to the batch."""
        return self.input_ids.shape[1] - self.positions.shape[1]

    def gather(self, states: torch.Tensor) -> torch.Tensor:
        """`states` (`[batch * n, new_length, ...]`, rows of one input row consecutive, as `generate` repeats them
        for beams and returned sequences) at the original rows' positions: `[batch * n, length, ...]`."""
        positions = self.positions.to(states.device)
        if states.shape[0] != positions.shape[0]:
            positions = positions.repeat_interleave(states.shape[0] // positions.shape[0], dim=0)
        index = positions.view(*positions.shape, *([1] * (states.ndim - 2))).expand(-1, -1, *states.shape[2:])
        return states.gather(1, index)


def padding_side(attention_mask: torch.Tensor) -> str:
    """`"left"` when some row starts with padding, else `"right"` (a batch without padding is both)."""
    return "left" if bool((attention_mask[:, 0] == 0).any()) else "right"


def splice_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    insertions: list[list[int] | tuple[int, ...] | None],
    *,
    pad_token_id: int,
    bos_token_id: int | None,
    labels: torch.Tensor | None = None,
    side: str | None = None,
) -> SplicedBatch:
    """Insert `insertions[b]` (token ids, no BOS) into row `b` of `input_ids`: after its BOS when it starts with one,
    else at its start. Rows with `None` or no tokens are kept as they are. Labels, when given, get -100 over the
    inserted tokens.

    Args:
        side (`str`, *optional*): Padding side of the result; by default the side `input_ids` is padded on.
    """
    batch, length = input_ids.shape
    if len(insertions) != batch:
        raise ValueError(f"Got {len(insertions)} insertions for a batch of {batch} rows; give one per row (or None).")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    side = side or padding_side(attention_mask)
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r} is not supported; expected 'left' or 'right'.")
    rows, row_labels, offsets = [], [], []
    keep = attention_mask.bool().cpu()
    ids_cpu = input_ids.cpu()
    labels_cpu = labels.cpu() if labels is not None else None
    for row in range(batch):
        real = keep[row].nonzero().flatten()
        tokens = ids_cpu[row, real].tolist()
        inserted = list(insertions[row] or ())
        cut = 1 if tokens and bos_token_id is not None and tokens[0] == bos_token_id else 0
        rows.append(tokens[:cut] + inserted + tokens[cut:])
        if labels_cpu is not None:
            own = labels_cpu[row, real].tolist()
            row_labels.append(own[:cut] + [-100] * len(inserted) + own[cut:])
        offsets.append((real, len(inserted)))
    new_length = max(len(tokens) for tokens in rows)
    new_ids = torch.full((batch, new_length), pad_token_id, dtype=input_ids.dtype)
    new_mask = torch.zeros((batch, new_length), dtype=attention_mask.dtype)
    new_labels = torch.full((batch, new_length), -100, dtype=labels.dtype) if labels is not None else None
    positions = torch.zeros((batch, length), dtype=torch.long)
    for row, tokens in enumerate(rows):
        start = new_length - len(tokens) if side == "left" else 0
        new_ids[row, start : start + len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
        new_mask[row, start : start + len(tokens)] = 1
        if new_labels is not None:
            new_labels[row, start : start + len(tokens)] = torch.tensor(row_labels[row], dtype=labels.dtype)
        real, added = offsets[row]
        positions[row, real] = start + added + torch.arange(len(real))
    device = input_ids.device
    return SplicedBatch(
        input_ids=new_ids.to(device),
        attention_mask=new_mask.to(device),
        positions=positions.to(device),
        labels=new_labels.to(device) if new_labels is not None else None,
    )
