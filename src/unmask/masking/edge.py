"""Edge masks: hide the tokens nearest one edge of a grid, the edge drawn per row (the outpainting
masks of MaskGIT, Chang et al. 2022, arXiv:2202.04200, which extends an image past a border).

Exact count: round(ratio * h * w) tokens, taken line by line from the chosen edge inwards; within the
last, partly hidden line, positions are chosen at random. With ratio 0.5 and the bottom edge, the
bottom half of the image is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, uniform

EDGES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class EdgeMask(Masker):
    edges: tuple[str, ...] = EDGES  # the edges a row may start from, drawn uniformly

    def __post_init__(self):
        if not self.edges or set(self.edges) - set(EDGES):
            raise ValueError(f"edges must be a non-empty subset of {EDGES}, got {self.edges}")

    def scores(self, segment, counts, generator, **context):
        if segment.kind not in ("grid", "streams"):
            raise ValueError(f"EdgeMask needs a grid or streams segment, {segment.name!r} is {segment.kind}")
        h, w = segment.shape
        b = counts.shape[0]
        rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w).flatten()
        cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w).flatten()
        depth = torch.stack([rows, h - 1 - rows, cols, w - 1 - cols])  # [4, L]: lines from each edge
        which = torch.tensor([EDGES.index(e) for e in self.edges])
        pick = which[torch.randint(len(which), (b,), generator=generator)]  # [B]
        # nearer lines first; uniform noise in [0, 1) orders the positions within a line
        return -depth[pick] + uniform((b, h * w), generator)
