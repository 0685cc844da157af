"""Token-Shuffle (Ma et al. 2025, "Token-Shuffle: towards high-resolution image generation with
autoregressive models", arXiv:2504.17789): the Transformer reads one token per s x s window of a grid.

Before the blocks, the embeddings of each window's s^2 neighbouring tokens are concatenated along
channels and mapped to one token of width D (token-shuffle); after them, each token is mapped to
s^2 * D channels and split back into its window's s^2 tokens (token-unshuffle), which the output head
reads. The blocks see h * w / s^2 tokens per grid, so their linear layers cost s^2 less and attention
s^4 less. The paper first compresses each token to D / s^2 channels, then concatenates, and wraps
both steps in residual MLPs; one linear over the concatenation is the general form of its first step
(a compression per token is its block-diagonal special case).

Only grid segments are shuffled; other segments (a class label, a prompt) pass through one token
each, as the paper keeps text tokens as they are. Positions are added before the shuffle, at full
resolution, so a merged token knows where each of its children sits. On a 4 x 4 grid with s = 2 the
tokens are read window by window:

    >>> window_order(4, 4, 2).tolist()
    [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import Layout


def check_window(window, h: int, w: int, segment: str = "grid") -> None:
    """ValueError unless `window` is an integer >= 1 that divides both sides of an h x w grid."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"token shuffle window must be an integer >= 1, got {window!r}")
    if h % window or w % window:
        raise ValueError(f"token shuffle window {window} must divide both sides of grid segment "
                         f"{segment!r} ({h} x {w})")


def window_order(h: int, w: int, window: int) -> torch.Tensor:
    """Long[h * w]: the row-major places of an h x w grid listed window by window (windows row-major,
    then the window x window tokens inside each, row-major). `order.argsort()` undoes it."""
    check_window(window, h, w)
    s = window
    grid = torch.arange(h * w).view(h // s, s, w // s, s)  # (window row, row in it, window col, col in it)
    return grid.permute(0, 2, 1, 3).reshape(-1)


class TokenShuffle(nn.Module):
    """`shuffle(x)`: Float[B, N, D] -> Float[B, N', D] with N' = the layout's tokens after merging each
    grid's s x s windows; `unshuffle(y)`: Float[B, N', D] -> Float[B, N, D] in the layout's order."""

    def __init__(self, dim: int, window: int, layout: Layout):
        super().__init__()
        grids = [s for s in layout.segments if s.kind == "grid"]
        if not grids:
            raise ValueError(f"token shuffle merges grid tokens; layout segments {list(layout.names)} hold no grid")
        self.window, self.dim = window, dim
        order, parts, start = [], [], 0
        for seg in layout.segments:
            if seg.kind == "grid":
                check_window(window, *seg.shape, segment=seg.name)
                order.append(start + window_order(*seg.shape, window))
            else:
                order.append(start + torch.arange(seg.length))
            parts.append((seg.length, seg.kind == "grid"))
            start += seg.length
        order = torch.cat(order)
        self.parts = parts  # (tokens, merged?) per segment, in layout order
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("restore", order.argsort(), persistent=False)
        s2 = window * window
        self.merge = nn.Linear(s2 * dim, dim)
        self.split = nn.Linear(dim, s2 * dim)
        self.norm = nn.LayerNorm(dim)

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        s2 = self.window * self.window
        x = x[:, self.order]  # each window's s^2 tokens now lie next to each other
        out, at = [], 0
        for length, merged in self.parts:
            piece = x[:, at:at + length]
            out.append(self.merge(piece.reshape(b, length // s2, s2 * d)) if merged else piece)
            at += length
        return torch.cat(out, 1)

    def unshuffle(self, y: torch.Tensor) -> torch.Tensor:
        b, _, d = y.shape
        s2 = self.window * self.window
        out, at = [], 0
        for length, merged in self.parts:
            width = length // s2 if merged else length
            piece = y[:, at:at + width]
            # the split tokens get their own LayerNorm: the blocks' final norm came before the split linear
            out.append(self.norm(self.split(piece).reshape(b, length, d)) if merged else piece)
            at += width
        return torch.cat(out, 1)[:, self.restore]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(x)
