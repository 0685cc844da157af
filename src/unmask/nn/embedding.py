"""Token and position embeddings.

Token ids 0..V-1 are data; id V is the mask token (DESIGN: one convention everywhere). Positions are
learned, or fixed sin-cos per segment (1-D for seq, 2-D for grid and streams, 3-D for video; MAE
uses the 2-D form), plus a learned embedding per segment when a layout has several.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import Layout


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """positions: [M] float -> [M, dim] with sin on the first half, cos on the second."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_nd(shape: tuple[int, ...], dim: int) -> torch.Tensor:
    """Fixed positions for a row-major grid of any rank: the width is split evenly between axes
    (rounded to even parts; any rest is zero). Returns [prod(shape), dim]."""
    part = (dim // len(shape)) // 2 * 2
    coords = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    pieces = [sincos_1d(c.flatten(), part) for c in coords]
    out = torch.zeros(coords[0].numel(), dim)
    out[:, : part * len(shape)] = torch.cat(pieces, dim=1)
    return out


class Embedding(nn.Module):
    """tokens: Long[B, N] in 0..V (V = mask) -> Float[B, N, D]."""

    def check(self, tokens: torch.Tensor) -> None:
        """ValueError if an id lies outside 0..V. The test runs where the tokens are: on a GPU as a
        device-side assert, so no step waits for it to be read (an id out of range stops the device
        at the next sync); on the CPU at once."""
        inside = ((tokens >= 0) & (tokens <= self.vocab_size)).all()
        message = f"token ids must lie in 0..{self.vocab_size} (the mask id)"
        try:
            torch._assert_async(inside, message)
        except RuntimeError:
            raise ValueError(message) from None

    def __init__(self, vocab_size: int, dim: int, layout: Layout, positions: str = "learned"):
        super().__init__()
        if positions not in ("learned", "sincos"):
            raise ValueError(f"positions must be 'learned' or 'sincos', got {positions!r}")
        self.vocab_size = vocab_size
        self.tokens = nn.Embedding(vocab_size + 1, dim)
        n = layout.n
        if positions == "learned":
            self.pos = nn.Parameter(torch.zeros(1, n, dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
        else:
            fixed = torch.cat([sincos_nd(s.shape, dim) for s in layout.segments])
            self.register_buffer("pos", fixed.unsqueeze(0), persistent=False)
        self.segment = None
        if len(layout.segments) > 1:
            ids = torch.cat([torch.full((s.length,), i) for i, s in enumerate(layout.segments)])
            self.register_buffer("segment_ids", ids, persistent=False)
            self.segment = nn.Embedding(len(layout.segments), dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check(tokens)
        x = self.tokens(tokens) + self.pos[:, : tokens.shape[1]]
        if self.segment is not None:
            x = x + self.segment(self.segment_ids[: tokens.shape[1]])
        return x
