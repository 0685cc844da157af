"""Semi-autoregressive blocks (LLaDA, Nie et al. 2025): the places to fill are cut into blocks of
`length` positions, decoded left to right; the model always reads the whole sequence, but only the
current block may be committed.

Block k of a row covers positions `[s + k * length, s + (k + 1) * length)`, where s is the row's
first hidden position (LLaDA's generation starts right after the prompt), so rows with prompts of
different lengths get their own blocks. `length=None` is one block. A row enters its next block when
the current one has nothing hidden left; on entry the block's hidden count is recorded, because the
samplers that split a block over a fixed number of steps need it.

The bookkeeping is plain lists per row, so it sits inside each sampler's JSON state:
`start` (first hidden position), `block` (current block index), `step` (steps taken in it) and
`size` (its hidden count on entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass
class BlockCursor:
    """Where each row is: Long[B] tensors, converted from and back to the state's lists."""

    start: torch.Tensor
    block: torch.Tensor
    step: torch.Tensor
    size: torch.Tensor

    def lists(self) -> dict[str, list[int]]:
        """The state's lists, read from the device in one go (one host sync per step, not four)."""
        keys = ("start", "block", "step", "size")
        return dict(zip(keys, torch.stack([getattr(self, k) for k in keys]).tolist(), strict=True))


def block_ids(start: torch.Tensor, n: int, length: int | None) -> torch.Tensor:
    """Long[B, N]: the block of every position (-1 before the row's start)."""
    rel = torch.arange(n, device=start.device) - start.unsqueeze(1)
    ids = torch.zeros_like(rel) if length is None else torch.div(rel, length, rounding_mode="floor")
    return ids.masked_fill(rel < 0, -1)


def state_block_ids(start: list[int], n: int, length: int | None, device) -> torch.Tensor:
    """`block_ids` of a state's `start` list, computed once per run and shared: the starts never change
    while a run decodes, and a step spends less on one lookup than on the five operations that build
    the ids. The tensor is shared: read it, never write into it."""
    return _cached_ids(tuple(start), n, length, torch.device(device))


@lru_cache(maxsize=32)
def _cached_ids(start: tuple[int, ...], n: int, length: int | None, device: torch.device) -> torch.Tensor:
    return block_ids(torch.tensor(start, dtype=torch.long, device=device), n, length)


def blocks_per_row(hidden: torch.Tensor, length: int | None) -> list[int]:
    """Blocks each row will decode: up to and including the one holding its last hidden position."""
    start = first_hidden(hidden)
    ids = block_ids(start, hidden.shape[1], length).masked_fill(~hidden, -1)
    return (ids.max(1).values + 1).tolist()


def first_hidden(hidden: torch.Tensor) -> torch.Tensor:
    """Long[B]: the first hidden position of each row (N when nothing is hidden)."""
    n = hidden.shape[1]
    pos = torch.arange(n, device=hidden.device).expand_as(hidden)
    return pos.masked_fill(~hidden, n).min(1).values


def start_cursor(hidden: torch.Tensor, length: int | None) -> dict[str, list[int]]:
    """Fresh bookkeeping: every row at the block of its first hidden position (block 0)."""
    start = first_hidden(hidden)
    ids = block_ids(start, hidden.shape[1], length)
    size = (hidden & (ids == 0)).sum(1)
    zeros = torch.zeros_like(start)
    return BlockCursor(start, zeros, zeros.clone(), size).lists()


_FAR = torch.iinfo(torch.long).max  # the block of a place that is not hidden, when looking for the first


def _first_hidden_block(ids: torch.Tensor, hidden: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor:
    """Long[B]: the block of each row's first hidden place, or `recorded` where nothing is hidden."""
    first = torch.where(hidden, ids, _FAR).amin(1)
    return torch.where(first < _FAR, first, recorded)


def advance(hidden: torch.Tensor, state, length: int | None,
            steps_per_block: torch.Tensor | None = None) -> tuple[BlockCursor, torch.Tensor]:
    """Move every row whose current block is finished to the next block that has hidden places.

    hidden: Bool[B, N]; state: has lists start, block, step, size. A block is finished when nothing
    in it is hidden, or, given `steps_per_block` (Long[B]), when its steps are spent (for samplers
    that may hide earlier places again). Returns the cursor and Bool[B, N], True at the positions
    of each row's current block.

    Without `steps_per_block` the samplers only fill hidden places, so blocks finish in order and the
    current block is the one holding the row's first hidden place (`filling_block`), which takes
    fewer operations than asking whether the recorded block still has hidden places.
    """
    device = hidden.device
    cur = BlockCursor(*torch.tensor([state.start, state.block, state.step, state.size], dtype=torch.long,
                                    device=device))
    ids = state_block_ids(state.start, hidden.shape[1], length, device)
    if steps_per_block is None:
        block = _first_hidden_block(ids, hidden, cur.block)
        moving = block != cur.block
    else:  # a spent block is left for the first block with hidden places, which may be the same one
        later = torch.where(hidden, ids, _FAR).amin(1)
        moving = (cur.step >= steps_per_block) & (later < _FAR)
        block = torch.where(moving, later, cur.block)
    in_block = ids == block.unsqueeze(1)
    cur.block = block
    cur.step = cur.step.masked_fill(moving, 0)
    cur.size = torch.where(moving, (hidden & in_block).sum(1), cur.size)
    return cur, in_block


def filling_block(hidden: torch.Tensor, state, length: int | None) -> torch.Tensor:
    """Long[B]: `advance(hidden, state, length)[0].block` for a sampler that only fills hidden places
    (LLaDA, threshold decoding), in a few operations: such a sampler finishes blocks in order, so a
    row's current block is the one holding its first hidden place, or the block it last decoded when
    nothing is hidden. hidden: Bool[B, N]; state: has lists start and block."""
    ids = state_block_ids(state.start, hidden.shape[1], length, hidden.device)
    return _first_hidden_block(ids, hidden, torch.tensor(state.block, dtype=torch.long, device=hidden.device))


def even_split(size: torch.Tensor, step: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """LLaDA's per-step counts: size // steps each, plus one in the first size % steps steps, so the
    counts of a block add up to its size. All Long[B]."""
    steps = steps.clamp(min=1)
    return size // steps + (step < size % steps).long()
