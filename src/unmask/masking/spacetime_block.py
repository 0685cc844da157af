"""VIOLET's blockwise masking of video patches (Fu et al. 2021, "VIOLET: End-to-End Video-Language
Transformers with Masked Visual-token Modeling", arXiv:2111.12681): hide space-time cuboids of
patches, not scattered ones, so a hidden patch cannot be copied from its neighbours in space or time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, uniform


@dataclass(frozen=True)
class SpaceTimeBlockMask(Masker):
    """VIOLET's blockwise masking on a `video` segment (t x h x w), with exact counts: cuboids of
    random extent (frames uniform in [1, max(1, t - 1)], rows and columns uniform in [1, max(1,
    2h // 3)] and [1, max(1, 2w // 3)]: the paper's code draws `randint(1, 2h // 3)`, exclusive, which
    on a 4 x 4 grid allows single cells only) at random places are added until they cover the count;
    the last one is cut to its first cells in raster order (frame, row, column), so the mask is the
    union of whole cuboids and one raster prefix of a cuboid, never scattered cells."""

    max_draws: int = 1000  # then the rest is random cells (a count near the segment's size)

    def scores(self, segment, counts, generator, **context):
        if segment.kind != "video":
            raise ValueError(f"SpaceTimeBlockMask needs a video segment, {segment.name!r} is {segment.kind}")
        t, h, w = segment.shape
        out = uniform((counts.shape[0], t * h * w), generator)  # top-up noise in [0, 1)
        for b, count in enumerate(counts.tolist()):
            rank = 0  # cells of earlier cuboids, then earlier cells of a cuboid, rank first
            seen = torch.zeros(t * h * w, dtype=torch.bool)
            for block in self.blocks(t, h, w, count, generator):
                cells = cuboid_cells(block, h, w)
                new = cells[~seen[cells]]
                out[b, new] = 2.0 * t * h * w - rank - torch.arange(len(new), dtype=torch.float64)
                seen[new], rank = True, rank + len(new)
        return out

    def blocks(self, t: int, h: int, w: int, count: int, generator) -> list[tuple[int, ...]]:
        """Cuboids (t0, y0, x0, dt, dh, dw), drawn until they cover `count` cells (or `max_draws`)."""
        seen = torch.zeros(t, h, w, dtype=torch.bool)
        out: list[tuple[int, ...]] = []
        extents = (max(1, t - 1), max(1, 2 * h // 3), max(1, 2 * w // 3))
        while int(seen.sum()) < count and len(out) < self.max_draws:
            u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
            size = [1 + int(u[i] * e) for i, e in enumerate(extents)]
            start = [int(u[3 + i] * (n - s + 1)) for i, (n, s) in enumerate(zip((t, h, w), size, strict=True))]
            seen[start[0] : start[0] + size[0], start[1] : start[1] + size[1], start[2] : start[2] + size[2]] = True
            out.append((*start, *size))
        return out


def cuboid_cells(block: tuple[int, ...], h: int, w: int) -> torch.Tensor:
    """Long[dt * dh * dw]: the flat indices (frame * h * w + row * w + column) of a cuboid, in raster order."""
    t0, y0, x0, dt, dh, dw = block
    ts, ys, xs = torch.meshgrid(torch.arange(t0, t0 + dt), torch.arange(y0, y0 + dh), torch.arange(x0, x0 + dw),
                                indexing="ij")
    return (ts * h * w + ys * w + xs).flatten()
