"""Generating octree sequences token by token, coarse to fine (Uni-3DAR: Lu et al. 2025,
arXiv:2503.16278): the tree level by level, each level's node count read from the bytes of the level
above, then each leaf's atom type and fine position.

Every row keeps an `OctreeCursor`, which knows the next token's kind, level and cell; the model is
asked for that token alone (for masked next-token prediction: the real tokens so far, then one mask
token at the next token's place), and the draw is `categorical`'s float64 inverse CDF over the ids
the kind allows. A tree byte is drawn from 1..255 only, so every listed node has a child and the
decoded leaves are exactly those the bytes name. Each step re-reads the prefix (no key/value cache:
the sequences here are a few hundred tokens).

    clouds = sample_shapes(objective, 16, torch.Generator().manual_seed(0))  # list of Float[M_i, 3]
    mols = sample_structures(objective, 100, generator)                       # list of Structure

`sample_shapes(model, n, generator) -> list[Float[M_i, 3]]` is the discrete-token baseline other
point generators compare with: points at the centres of the occupied finest cells, in the cube of
`model.geo`. A row that reaches `max_tokens` before its tree is complete keeps the leaves reached so
far (maybe none); `sample_sequences` says which rows completed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..data.octree import OctreeCursor
from ..data.structures import OctreeGeometry, Structure
from ..nn.octree_transformer import causal_mask
from .categorical import categorical

if TYPE_CHECKING:  # the sampler reads a trained model; it does not build one
    from ..objectives.octree_ar import OctreeAR

# (history: tokens, kind, level Long[n, t], centre Float[n, t, 3]; next: kind, level Long[n], centre
# Float[n, 3]) -> logits Float[n, V] of the next token
NextLogits = Callable[..., torch.Tensor]


def model_logits(model: OctreeAR) -> NextLogits:
    """The next-token logits of a trained `OctreeAR` (masked or plain next-token)."""
    net = model.net

    def next_logits(tokens, kind, level, centre, q_kind, q_level, q_centre) -> torch.Tensor:
        if model.cfg.masked:  # the reals so far, then a mask token at the next token's place
            x = [torch.cat([a, b.unsqueeze(1)], 1) for a, b in
                 ((tokens, torch.full_like(q_kind, net.mask_id)), (kind, q_kind), (level, q_level), (centre, q_centre))]
        else:  # a start token, then the reals so far
            n = tokens.shape[0]
            start = [torch.full((n, 1), net.mask_id, device=tokens.device), torch.zeros_like(q_kind[:, None]),
                     torch.zeros_like(q_level[:, None]), torch.full_like(q_centre[:, None], 0.5)]
            x = [torch.cat([s, a], 1) for s, a in zip(start, (tokens, kind, level, centre), strict=True)]
        length = x[0].shape[1]
        out = net(*x, causal_mask(length, tokens.device), q_kind[:, None], only=slice(length - 1, length))
        return out[:, 0]

    return next_logits


def level_unigram(data: dict[str, torch.Tensor], geo: OctreeGeometry, smoothing: float = 0.1) -> NextLogits:
    """The per-level occupancy baseline: each token drawn from the frequency of its id among the
    training tokens of the same kind and level (add-`smoothing` counts over the allowed ids), blind to
    everything else. data: `OctreeGeometry.batch` output."""
    v = geo.vocab_size
    counts = torch.zeros(5, geo.depth + 1, v, dtype=torch.float64)
    valid = data["valid"]
    index = (data["kind"][valid] * (geo.depth + 1) + data["level"][valid]) * v + data["tokens"][valid]
    counts.view(-1).index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    allowed = geo.allowed()[:, None, :]  # [5, 1, V]
    table = torch.where(allowed, (counts + smoothing).log(), float("-inf"))  # [5, D + 1, V]

    def next_logits(tokens, kind, level, centre, q_kind, q_level, q_centre) -> torch.Tensor:
        return table[q_kind, q_level].to(tokens.device)

    return next_logits


def sample_sequences(geo: OctreeGeometry, next_logits: NextLogits, n: int, generator: torch.Generator | None = None,
                     *, temperature: float = 1.0, max_tokens: int = 1024, device=None) -> list[OctreeCursor]:
    """n sequences, generated together one token per step; returns each row's cursor (`.done`: the
    sequence completed; `.tokens`, `.leaves`, `.leaf_values`)."""
    if n < 1 or max_tokens < 1:
        raise ValueError(f"n and max_tokens must be >= 1, got {n}, {max_tokens}")
    cursors = [OctreeCursor(geo.depth, geo.leaf_kinds) for _ in range(n)]
    tokens = torch.zeros(n, 0, dtype=torch.long, device=device)
    kind, level = tokens.clone(), tokens.clone()
    centre = torch.zeros(n, 0, 3, device=device)
    for _ in range(max_tokens):
        nxt = [c.next() for c in cursors]
        if all(x is None for x in nxt):
            break
        # finished rows get a dummy query; their draws are dropped
        q = [x if x is not None else (0, 0, (0, 0, 0)) for x in nxt]
        q_kind = torch.tensor([k for k, _, _ in q], device=device)
        q_level = torch.tensor([lv for _, lv, _ in q], device=device)
        q_cell = torch.tensor([c for _, _, c in q], dtype=torch.float32, device=device)
        q_centre = (q_cell + 0.5) / (2.0**q_level.float()).unsqueeze(1)  # [n, 3] in the unit cube
        with torch.no_grad():
            logits = next_logits(tokens, kind, level, centre, q_kind, q_level, q_centre)  # [n, V]
        drawn = categorical(logits.float(), temperature, generator)  # [n]
        for c, x, value in zip(cursors, nxt, drawn.tolist(), strict=True):
            if x is not None:
                c.push(value)
        tokens = torch.cat([tokens, drawn[:, None]], 1)
        kind, level = torch.cat([kind, q_kind[:, None]], 1), torch.cat([level, q_level[:, None]], 1)
        centre = torch.cat([centre, q_centre[:, None]], 1)
    return cursors


def _leaves(geo: OctreeGeometry, c: OctreeCursor) -> Structure:
    if c.done:
        return geo.detokenize(c)
    cells = torch.tensor(c.leaves, dtype=torch.float64).view(-1, 3)
    return Structure(geo.low + (cells + 0.5) * geo.cell_size)


@torch.no_grad()
def sample_shapes(model: OctreeAR, n: int, generator: torch.Generator | None = None, *,
                  temperature: float = 1.0, max_tokens: int = 1024) -> list[torch.Tensor]:
    """n generated shapes as points at the centres of their occupied finest cells: list of
    Float[M_i, 3] in the cube of `model.geo`."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    cursors = sample_sequences(model.geo, model_logits(model), n, generator, temperature=temperature,
                               max_tokens=max_tokens, device=device)
    model.train(was)
    return [_leaves(model.geo, c).positions.float() for c in cursors]


@torch.no_grad()
def sample_structures(model: OctreeAR, n: int, generator: torch.Generator | None = None, *,
                      temperature: float = 1.0, max_tokens: int = 1024) -> list[Structure | None]:
    """n generated molecules (atom types and positions); None for a row that did not complete."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    cursors = sample_sequences(model.geo, model_logits(model), n, generator, temperature=temperature,
                               max_tokens=max_tokens, device=device)
    model.train(was)
    return [model.geo.detokenize(c) if c.done else None for c in cursors]
