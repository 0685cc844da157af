"""Hi-MAR: low-resolution pivot tokens first, then the dense tokens conditioned on them (Zheng et al.
2025, "Hierarchical masked autoregressive models with low-resolution token pivots", arXiv:2505.20288).

One sequence holds two grids of the same image: the pivots, a token map of the image at lower
resolution (h/f x w/f), then the dense tokens (h x w); `pivot_layout` names them "pivot" and
"dense". Decoding runs in two phases: a sampler fills the pivots (MaskGIT over the pivot grid, the
dense tokens all hidden), then another fills the dense tokens, with every pivot committed and
visible. The pivots are a global plan of the image that every dense step reads from the first call
on, where plain MaskGIT starts from an empty canvas.

Training follows the paper's two phases (`masking.CoarseToFineMask` with
`masking.CoarseToFineCorruption`): a row trains the pivots (some hidden, every dense token hidden and
unscored) or the dense tokens (pivots visible). Without a tokenizer trained at low resolution, the
pivots are the image tokenizer applied to the area-downsampled image (`pivot_tokens`), or, for data
that exists only as tokens, the mode of each window's tokens (`next_scale.mode_pool`). The paper's
released model uses 4x4 pivots for 16x16 latents (f = 4); f is a setting here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..layout import Layout
from . import checks
from .next_scale import check_sampler, stage_slices, start_stages, step_stage


def pivot_layout(h: int, w: int, factor: int = 2) -> Layout:
    """Grid "pivot" (h/factor x w/factor) then grid "dense" (h x w)."""
    if not (checks.is_integer(factor) and factor >= 1) or h % factor or w % factor:
        raise ValueError(f"pivot factor must be an integer >= 1 dividing the dense grid {h} x {w}, got {factor!r}")
    return Layout.grid(h // factor, w // factor, name="pivot") + Layout.grid(h, w, name="dense")


def pivot_tokens(images: torch.Tensor, tokenize: Callable[[torch.Tensor], torch.Tensor],
                 factor: int = 2) -> torch.Tensor:
    """Pivots from images: `tokenize` (Float[B, C, H, W] -> Long[B, h, w]) applied to the images
    area-downsampled by `factor`. images: Float[B, C, H, W] -> Long[B, h/factor, w/factor]."""
    b, _, height, width = images.shape
    if not (checks.is_integer(factor) and factor >= 1) or height % factor or width % factor:
        raise ValueError(f"pivot factor must be an integer >= 1 dividing the image size {height} x {width}, "
                         f"got {factor!r}")
    tokens = tokenize(F.interpolate(images, size=(height // factor, width // factor), mode="area"))
    if tokens.ndim != 3 or tokens.shape[0] != b:
        raise ValueError(f"tokenize must return Long[B, h, w]; it returned shape {tuple(tokens.shape)}")
    return tokens.long()


def join_pivots(pivots: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Long[B, h', w'] pivots and Long[B, h, w] dense tokens -> Long[B, h'w' + hw], row-major, the
    sequence of `pivot_layout`."""
    return torch.cat([pivots.flatten(1), dense.flatten(1)], 1)


@dataclass
class PivotState:
    stage: int  # 0: pivots, 1: dense tokens, 2: done
    inner: list  # the pivot sampler's state and the dense sampler's (plain dicts after a JSON round trip)


@dataclass(frozen=True)
class PivotSampler:
    """inner_pivot fills the first `pivot_length` places (the pivot grid), then inner_dense fills the
    rest; each is any sampler and sees only its own places' logits and tokens."""

    inner_pivot: Any
    inner_dense: Any
    pivot_length: int

    def __post_init__(self):
        check_sampler(self, "inner_pivot")
        check_sampler(self, "inner_dense")
        checks.integer(self, "pivot_length")

    def _slices(self, n: int) -> list[slice]:
        if n <= self.pivot_length:
            raise ValueError(f"PivotSampler: the canvas has {n} places, not more than pivot_length={self.pivot_length}")
        return stage_slices((self.pivot_length, n - self.pivot_length), n)

    def start(self, hidden: torch.Tensor) -> PivotState:
        if not hidden.any():  # nothing to decode: the canvas need not hold a pivot grid
            return PivotState(2, [])
        stage, inner = start_stages([self.inner_pivot, self.inner_dense], self._slices(hidden.shape[1]), hidden)
        return PivotState(stage, inner)

    def step(self, logits, tokens, state: PivotState, generator=None):
        where = self._slices(tokens.shape[1])
        new, stage, inner = step_stage([self.inner_pivot, self.inner_dense], where, logits, tokens, state.stage,
                                       state.inner, generator)
        return new, PivotState(stage, inner)
