"""Attentive masks (A-CLIP, Yang et al. 2023, "Attentive Mask CLIP", ICCV 2023, arXiv:2212.08653):
keep the image tokens an EMA copy of the image encoder attends to most, so the masked view still
holds what the caption talks about, and hide the rest.

Data-driven: the attention comes from the context as `scores: Float[B, L]` (A-CLIP: the [CLS] row of
the EMA encoder's attention maps over the L patches, averaged over every layer and head, on the
whole image), one value per token of a `grid` segment h x w. The rule of the release
(`models.get_att_mask`), scaled to any grid:

1. the scores are averaged over `cell x cell` cells (the release downsamples 14 x 14 to 7 x 7 with
   `interpolate(mode="bilinear")`; for a factor of 2 that is exactly the mean of each 2 x 2 cell);
2. the `int(cells * keep) + 1` cells of highest mean score are kept (at most all of them), every
   other cell is hidden whole, so a row hides exactly `L - cell^2 * kept cells` tokens;
3. equal cell scores are broken by place: the earlier cell (row-major over the cell grid) is kept.
   No randomness: the same scores give the same mask, and the generator is not read.

`AttentiveMask` is the masker form: the contract's `ratio` is the hidden share and `keep = 1 - ratio`
(A-CLIP keeps `keep = 0.5`: 9 of 16 cells on an 8 x 8 grid, so 28 of 64 tokens are hidden, not 32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Masker

A_CLIP_KEEP = 0.5  # the release's get_att_mask(attention, ratio=0.5)
CELL = 2  # the release: 14 x 14 patches -> 7 x 7 cells
SLACK = 1e-9  # int(cells * keep) of a product that should be whole (0.7 x 10) must not fall to 6.999...


def kept_cells(cells: int, keep: torch.Tensor | float) -> torch.Tensor:
    """A-CLIP's kept cell count: int(cells * keep) + 1, at most `cells`. keep: float or Float[B] in
    [0, 1] -> Long[] or Long[B]."""
    k = torch.as_tensor(keep, dtype=torch.float64)
    return (torch.floor(k * cells + SLACK).long() + 1).clamp(max=cells)


def cell_means(scores: torch.Tensor, grid: tuple[int, int], cell: int = CELL) -> torch.Tensor:
    """scores: Float[B, h*w] (row-major) -> Float64[B, (h/cell)*(w/cell)]: the mean score of each
    cell x cell cell, cells row-major."""
    h, w = grid
    if cell < 1 or h % cell or w % cell:
        raise ValueError(f"a {h}x{w} grid does not tile into {cell}x{cell} cells")
    if scores.ndim != 2 or scores.shape[1] != h * w:
        raise ValueError(f"scores must be [B, {h * w}] for a {h}x{w} grid, got {tuple(scores.shape)}")
    maps = scores.double().view(-1, 1, h, w)
    return F.avg_pool2d(maps, cell).flatten(1)


def cell_ranks(means: torch.Tensor) -> torch.Tensor:
    """means: Float[B, C] -> Long[B, C], each cell's rank by mean score (0 = highest); among equal
    means the earlier cell ranks first."""
    order = means.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(means.shape[1], device=means.device).expand_as(order))
    return ranks


def token_cell_ranks(scores: torch.Tensor, grid: tuple[int, int], cell: int = CELL) -> torch.Tensor:
    """Long[B, h*w]: the rank (0 = most attended) of the cell each token lies in."""
    h, w = grid
    ranks = cell_ranks(cell_means(scores, grid, cell)).view(-1, h // cell, w // cell)
    return ranks.repeat_interleave(cell, 1).repeat_interleave(cell, 2).flatten(1)


def attentive_cell_mask(scores: torch.Tensor, grid: tuple[int, int], keep: float = A_CLIP_KEEP,
                        cell: int = CELL) -> torch.Tensor:
    """scores: Float[B, h*w] attention over a row-major h x w grid -> Bool[B, h*w], True = hidden:
    every token outside the int(cells * keep) + 1 most attended cell x cell cells."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    h, w = grid
    cells = (h // cell) * (w // cell)
    ranks = token_cell_ranks(scores, grid, cell)
    return ranks >= kept_cells(cells, keep)


@dataclass(frozen=True)
class AttentiveMask(Masker):
    """Masker form of `attentive_cell_mask` over `grid` segments: ratio (the hidden share) -> keep =
    1 - ratio. Hides L - cell^2 * (int(cells * keep) + 1) tokens per row."""

    cell: int = CELL
    context_key: str = "scores"

    def __post_init__(self):
        if self.cell < 1:
            raise ValueError(f"AttentiveMask cell must be >= 1, got {self.cell}")

    def _grid(self, segment) -> tuple[int, int]:
        if segment.kind != "grid":
            raise ValueError(f"AttentiveMask needs a grid segment, {segment.name!r} is {segment.kind}")
        h, w = segment.shape
        if h % self.cell or w % self.cell:
            raise ValueError(f"AttentiveMask tiles {self.cell}x{self.cell} cells: segment {segment.name!r} is {h}x{w}")
        return h, w

    def count(self, segment, ratio):
        h, w = self._grid(segment)
        cells = (h // self.cell) * (w // self.cell)
        return segment.length - self.cell**2 * kept_cells(cells, 1.0 - ratio)

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"AttentiveMask needs `{self.context_key}` (attention, Float[B, L]) in the context")
        attention = torch.as_tensor(context[self.context_key]).detach().cpu()
        if attention.shape != (counts.shape[0], segment.length):
            raise ValueError(f"{self.context_key} must be [{counts.shape[0]}, {segment.length}] for segment "
                             f"{segment.name!r}, got {tuple(attention.shape)}")
        # hide_top hides the highest priorities: the least attended cells, whole (counts are whole cells)
        return token_cell_ranks(attention, self._grid(segment), self.cell).double()


def hidden_count(grid: tuple[int, int], keep: float = A_CLIP_KEEP, cell: int = CELL) -> int:
    """Tokens an attentive mask hides per row: the count a random baseline must match."""
    h, w = grid
    cells = (h // cell) * (w // cell)
    return h * w - cell**2 * int(kept_cells(cells, keep))

