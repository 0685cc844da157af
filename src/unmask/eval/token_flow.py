"""Follow the Flow (Kaplan et al. 2025, "Follow the Flow: On Information Flow Across Textual Tokens
in Text-to-Image Models", arXiv:2504.01137, P25): run a conditional generator on a subset of its
*encoded* condition tokens (the others removed after the text encoder) and judge what the output
still shows, to find where an item's information lives: in its own tokens (often one of them), or
also in other items' tokens, where it leaks.

A decoder here reads the encoded condition `memory` [B, M, D] and its own query tokens [B, Q, D] in
one project `Transformer` over `[memory ; queries]`, under `subset_attention_mask`: queries attend to
each other and to the kept condition tokens only, and each condition token attends to itself alone
(it is already encoded: the decoder adds no further mixing between condition tokens). A removed
token is then a key no query reads, at every layer, so it cannot reach the output.

- `subset_attention_mask(keep, queries)`: Bool[B, 1, M + Q, M + Q], True = may attend;
- `decode_subset(transformer, memory, queries, keep)`: Float[B, Q, D], the decoder outputs at the
  queries given the kept condition tokens;
- `keep_items(items, kept)`: Bool[B, M], the condition tokens of the listed items (0 = the start
  token, kept by every subset; -1 = padding, never kept) -- the conditions of the figure (full
  prompt, one item's tokens, the other item's tokens, the start token alone = an empty prompt);
- `keep_last(items, item)`: Bool[B, M], the start token and the last token of one item;
- `flow_shares(scores)`: each condition's score between the empty prompt (0) and the full prompt
  (1): the share of an item's information that condition recovers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..nn.transformer import Transformer

START, PADDING = 0, -1  # item ids of the start token (always kept) and of padding (never kept)


def subset_attention_mask(keep: torch.Tensor, queries: int) -> torch.Tensor:
    """keep: Bool[B, M] -> Bool[B, 1, M + Q, M + Q] (True = may attend) over `[memory ; queries]`:
    a query row reads the kept memory and every query; a memory row reads itself alone."""
    if keep.dtype != torch.bool or keep.ndim != 2:
        raise ValueError(f"keep must be Bool[B, M], got {keep.dtype} of shape {tuple(keep.shape)}")
    if queries < 1:
        raise ValueError(f"need at least one query token, got {queries}")
    if not bool(keep.any(1).all()):
        raise ValueError("every row must keep at least one condition token (e.g. the start token): "
                         "a query with no condition left would read nothing")
    b, m = keep.shape
    n = m + queries
    mask = torch.zeros(b, n, n, dtype=torch.bool, device=keep.device)
    eye = torch.eye(m, dtype=torch.bool, device=keep.device)
    mask[:, :m, :m] = eye  # condition tokens: themselves alone
    mask[:, m:, :m] = keep.unsqueeze(1)  # queries: the kept condition tokens
    mask[:, m:, m:] = True  # queries: each other
    return mask.unsqueeze(1)


def decode_subset(transformer: Transformer, memory: torch.Tensor, queries: torch.Tensor,
                  keep: torch.Tensor) -> torch.Tensor:
    """memory: Float[B, M, D] encoded condition, queries: Float[B, Q, D], keep: Bool[B, M] ->
    Float[B, Q, D], the transformer's outputs at the queries."""
    if memory.shape[:2] != keep.shape or memory.shape[0] != queries.shape[0]:
        raise ValueError(f"memory {tuple(memory.shape)}, queries {tuple(queries.shape)} and keep "
                         f"{tuple(keep.shape)} disagree")
    m, q = memory.shape[1], queries.shape[1]
    x = torch.cat([memory, queries], 1)  # [B, M + Q, D]
    return transformer(x, subset_attention_mask(keep, q), only=slice(m, m + q))


def keep_items(items: torch.Tensor, kept: Sequence[int]) -> torch.Tensor:
    """items: Long[B, M], the item of each condition token (START, PADDING or 1, 2, ...) -> Bool[B, M]:
    the start token and the tokens of the items in `kept` (empty: the start token alone)."""
    if any(i < 1 for i in kept):
        raise ValueError(f"item ids are 1, 2, ...; got {list(kept)}")
    keep = items == START
    for i in kept:
        keep |= items == i
    return keep


def keep_last(items: torch.Tensor, item: int) -> torch.Tensor:
    """Bool[B, M]: the start token and the last token of `item` in each row (rows without it: the
    start token alone)."""
    if item < 1:
        raise ValueError(f"item ids are 1, 2, ...; got {item}")
    places = torch.arange(items.shape[1], device=items.device).expand_as(items)
    last = torch.where(items == item, places, -1).max(1).values  # [B]
    return (items == START) | ((places == last.unsqueeze(1)) & (last >= 0).unsqueeze(1))


def flow_shares(scores: dict[str, float], full: str = "full", empty: str = "empty") -> dict[str, float]:
    """(score - score[empty]) / (score[full] - score[empty]) for every condition: 1 = all the full
    prompt's information about the item, 0 = none beyond the empty prompt."""
    span = scores[full] - scores[empty]
    if span <= 0:
        raise ValueError(f"the full prompt ({scores[full]:.3f}) does not beat the empty one "
                         f"({scores[empty]:.3f}): there is no information to share out")
    return {k: (v - scores[empty]) / span for k, v in scores.items()}
