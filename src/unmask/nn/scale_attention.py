"""Block-causal attention across scales, for next-scale prediction (VAR, Tian et al. 2024,
"Visual autoregressive modeling: scalable image generation via next-scale prediction",
arXiv:2404.02905; HMAR, Kumbong et al. 2025, "HMAR: efficient hierarchical masked autoregressive
image generation", arXiv:2506.04421).

The sequence holds token maps of growing scales laid end to end (1x1, 2x2, 4x4, ...). A token may
attend to every token of its own scale and of every coarser scale, never to a finer one, so the
outputs at a scale do not change with anything decoded after it. HMAR's Markovian variant
(`markov=True`) lets a scale see only itself and the scale just before it.

    >>> scale_causal_mask([1, 2]).int().tolist()
    [[1, 0, 0], [1, 1, 1], [1, 1, 1]]
"""

from __future__ import annotations

import torch


def scale_causal_mask(sizes, markov: bool = False) -> torch.Tensor:
    """Bool[N, N], N = sum(sizes), True = may attend (the convention of `Transformer`'s attn_mask).

    sizes: tokens per scale, coarse to fine (a class-label prefix may be the first "scale").
    Query i of scale a may read key j of scale b when b <= a (and b >= a - 1 with markov)."""
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"scale sizes must be one or more token counts >= 1, got {sizes}")
    scale = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # [N]: each place's scale
    query, key = scale[:, None], scale[None, :]
    allowed = key <= query
    if markov:
        allowed &= key >= query - 1
    return allowed
