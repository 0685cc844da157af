"""Dynamic channel-patch (DCP) masking of ChA-MAEViT (Pham, Caicedo and Plummer, NeurIPS 2025,
"ChA-MAEViT: Unifying Channel-Aware Masked Autoencoders and Multi-Channel Vision Transformers for
Improved Cross-Channel Learning", arXiv:2503.19331): each step hides patches within every channel,
whole channels, or both, so the model must rebuild missing channels from the others.

Tokens are (channel, patch) pairs: a `streams` segment `C x P` (channel-major, the patches of a
channel contiguous), or a `video` segment `C x h x w` read the same way (P = h w). One strategy is
drawn per call (per training step, as the paper's `sample_dcp_strategy`), from one float64 uniform u:
- PATCH_ONLY (u < p_patch): exactly round(ratio * P) patches hidden in every channel of every row,
  each (row, channel) with its own noise;
- CHANNEL_ONLY (u < p_patch + p_channel): k whole channels hidden, k uniform on {1, ..., C - 1}
  (on {0, ..., C - 1} without `at_least_one`): never all channels;
- BOTH (otherwise): the union of the two.
The channel set, and so k, is one per call, shared by the whole batch, as in the paper's code when
all images have the same channels: every row then hides the same count, which a drop-hidden encoder
needs (`nn/visible.py`). `shared_channels=False` draws each row's set on its own (same k).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..layout import Layout, Segment
from .base import hide_top, uniform

PATCH_ONLY, CHANNEL_ONLY, BOTH = "patch", "channel", "both"
STRATEGIES = (PATCH_ONLY, CHANNEL_ONLY, BOTH)


class ChannelPatchDraw(NamedTuple):
    mask: torch.Tensor  # Bool[B, N], True = hidden
    strategy: str  # one of STRATEGIES
    hidden_channels: torch.Tensor  # Bool[B, C]: channels hidden whole (all False under PATCH_ONLY)


def channel_patch_shape(segment: Segment) -> tuple[int, int]:
    """(C, P) of a `streams` (C, P) or `video` (C, h, w) segment."""
    if segment.kind not in ("streams", "video"):
        raise ValueError(f"channel-patch masking needs a streams (C x P) or video (C x h x w) segment, "
                         f"got {segment.kind} segment {segment.name!r}")
    return segment.shape[0], segment.length // segment.shape[0]


@dataclass(frozen=True)
class ChannelPatchMask:
    """(layout, batch_size, *, ratio, generator) -> Bool[B, N]: the DCP mask of segment `segment`
    (None: the layout's only segment); other segments stay visible. `draw` also says which strategy
    and which channels."""

    p_patch: float = 0.5
    p_channel: float = 0.5
    at_least_one: bool = True
    shared_channels: bool = True
    segment: str | None = None

    def __post_init__(self):
        if not (0.0 <= self.p_patch <= 1.0 and 0.0 <= self.p_channel <= 1.0):
            raise ValueError(f"p_patch and p_channel must lie in [0, 1], got {self.p_patch}, {self.p_channel}")
        if self.p_patch + self.p_channel > 1.0 + 1e-9:
            raise ValueError(f"p_patch + p_channel must be <= 1 (the rest is BOTH), got "
                             f"{self.p_patch} + {self.p_channel}")

    def strategy(self, generator: torch.Generator | None = None) -> str:
        """One strategy, from one float64 uniform: PATCH_ONLY, CHANNEL_ONLY or BOTH."""
        u = float(uniform((), generator))  # a host draw: reading it waits for nothing
        if u < self.p_patch:
            return PATCH_ONLY
        return CHANNEL_ONLY if u < self.p_patch + self.p_channel else BOTH

    def channel_mask(self, batch_size: int, channels: int, generator) -> torch.Tensor:
        """Bool[B, C]: k whole channels hidden per row, one k for the batch (uniform on
        {1 or 0, ..., C - 1}); one channel set for every row unless `shared_channels` is off."""
        low = 1 if self.at_least_one else 0
        if channels - low < 1:
            raise ValueError(f"channel masking needs at least 2 channels (never all hidden), got {channels}")
        k = int(torch.randint(low, channels, (), generator=generator))
        rows = 1 if self.shared_channels else batch_size
        hidden = hide_top(uniform((rows, channels), generator), torch.full((rows,), k))
        return hidden.expand(batch_size, channels)

    def draw(self, layout: Layout, batch_size: int, *, ratio: float = 0.75, generator=None,
             strategy: str | None = None, **context) -> ChannelPatchDraw:
        """The mask, its strategy (drawn unless given) and its hidden channels."""
        if not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"DCP takes one ratio in [0, 1] for the batch, got {ratio!r}")
        names = layout.names if self.segment is None else (self.segment,)
        if len(names) != 1:
            raise ValueError(f"layout has segments {list(layout.names)}: name the channel-patch one in `segment`")
        seg, where = layout.segment(names[0]), layout.slice(names[0])
        c, p = channel_patch_shape(seg)
        strategy = self.strategy(generator) if strategy is None else strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        hidden = torch.zeros(batch_size, c, p, dtype=torch.bool)
        channels = torch.zeros(batch_size, c, dtype=torch.bool)
        if strategy in (PATCH_ONLY, BOTH):
            counts = torch.full((batch_size * c,), round(ratio * p))
            hidden |= hide_top(uniform((batch_size * c, p), generator), counts).view(batch_size, c, p)
        if strategy in (CHANNEL_ONLY, BOTH):
            channels = self.channel_mask(batch_size, c, generator)
            hidden |= channels.unsqueeze(-1)
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        mask[:, where] = hidden.view(batch_size, c * p)
        return ChannelPatchDraw(mask, strategy, channels.contiguous())

    def __call__(self, layout: Layout, batch_size: int, *, ratio: float = 0.75, generator=None, **context):
        return self.draw(layout, batch_size, ratio=ratio, generator=generator, **context).mask


def patch_only_mask() -> ChannelPatchMask:
    """The baseline: PATCH_ONLY at every step (MAE's random masking within each channel)."""
    return ChannelPatchMask(p_patch=1.0, p_channel=0.0)
