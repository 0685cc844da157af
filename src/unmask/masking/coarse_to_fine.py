"""Training masks for coarse-to-fine generators: each row trains one stage, with every coarser stage
visible and every finer one out of sight.

Hi-MAR (Zheng et al. 2025, "Hierarchical masked autoregressive models with low-resolution token
pivots", arXiv:2505.20288) trains in two phases: the pivots with some of them hidden and the dense
tokens all hidden (the loss on the pivots only), and the dense tokens with the pivots visible. The
same rule trains a next-scale model whose scales are decoded by masked steps (HMAR, Kumbong et al.
2025, arXiv:2506.04421): the row's scale is partly hidden, the coarser ones are visible.

`CoarseToFineMask(stages)` picks one stage per row (with `weights`, by default in proportion to
each stage's tokens, so every token is trained equally often) and hides round(ratio * L) of its
tokens, at least one: the row's stage is the first stage with a hidden token. The loss scores
exactly those. `CoarseToFineCorruption(layout, stages)` then turns every token of the finer stages
into the mask id in the model's input, without scoring them: at sampling time they are all hidden
while the stage is decoded, so that is what the model must learn to read. (A model with block-causal
attention across the stages never reads them; the corruption changes nothing there.)

    stages = ("pivot", "dense")
    objective = MaskedTokenModeling(model, CoarseToFineMask(stages, weights=(0.5, 0.5)),
                                    corruption=CoarseToFineCorruption(model.config.layout, stages))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, hide_top, ratio_per_segment, uniform


@dataclass(frozen=True)
class CoarseToFineMask(Masker):
    """segments: the stages (segment names), decoded in layout order; None: every segment. Segments
    not named (a class label) are never hidden. weights: each stage's chance per row (None: its token
    count). Returns Bool[B, N], True = hidden, inside one stage per row."""

    weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.weights is not None and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"weights must be values >= 0 with a positive sum, got {self.weights}")

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context):
        chosen = self.eligible(layout)
        if self.segments is not None and [s.name for s, _ in chosen] != list(self.segments):
            raise ValueError(f"stages {list(self.segments)} must be named coarse to fine, in the layout's order "
                             f"{list(layout.names)}")
        if self.weights is not None and len(self.weights) != len(chosen):
            raise ValueError(f"weights has {len(self.weights)} values for {len(chosen)} stages "
                             f"{[s.name for s, _ in chosen]}")
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))  # [B, S]
        weights = torch.tensor(self.weights or [s.length for s, _ in chosen], dtype=torch.float64)
        pick = torch.multinomial(weights, batch_size, replacement=True, generator=generator)  # [B]
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for k, (segment, where) in enumerate(chosen):
            counts = self.count(segment, ratios[:, k]).clamp(min=1) * (pick == k)
            mask[:, where] = hide_top(uniform((batch_size, segment.length), generator), counts)
        return mask


@dataclass(frozen=True)
class CoarseToFineCorruption:
    """tokens Long[B, N], mask Bool[B, N] -> inputs Long[B, N]: hidden places become the mask id, and
    so does every place of the stages after each row's first stage with a hidden place."""

    layout: Layout
    stages: tuple[str, ...]

    def __post_init__(self):
        for name in self.stages:
            self.layout.segment(name)  # a KeyError naming the segments that exist

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, mask_id: int, generator=None) -> torch.Tensor:
        inputs = tokens.masked_fill(mask, mask_id)
        reached = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)  # [B]: a stage was found
        for segment in self.layout.segments:
            if segment.name not in self.stages:
                continue
            where = self.layout.slice(segment.name)
            inputs[:, where] = inputs[:, where].masked_fill(reached[:, None], mask_id)
            reached = reached | mask[:, where].any(1)
        return inputs
