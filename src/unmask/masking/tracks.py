"""Track masking (GETMusic, Lv et al. 2023, "GETMusic: Generating Any Music Tracks with a Unified
Representation and Diffusion Framework", P16): each example splits the tracks of a `streams` segment
into content tracks, to be generated, and condition tracks, given as they are; only content tokens
are ever hidden.

Per row: the number of content tracks k is uniform on [min_content, max_content], the k tracks are a
uniform subset, and exactly round(ratio * k * T) of their k * T tokens are hidden, uniformly (the
schedule-drawn share of the content, GETMusic's masking diffusion on the target tracks). With
`content=Bool[B, S]` in the context, those tracks are the content instead (harmonisation: soprano
given, alto, tenor and bass hidden, is content [False, True, True, True] with ratio 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, hide_top, ratio_per_segment, uniform


@dataclass(frozen=True)
class TrackMask(Masker):
    min_content: int = 1
    max_content: int | None = None  # None: every track

    def __post_init__(self):
        if self.min_content < 1 or (self.max_content is not None and self.max_content < self.min_content):
            raise ValueError(f"TrackMask needs 1 <= min_content <= max_content, got {self.min_content}, "
                             f"{self.max_content}")

    def draw_content(self, tracks: int, batch_size: int, generator) -> torch.Tensor:
        """Bool[B, S]: each row's content tracks, k uniform on [min_content, max_content]."""
        hi = tracks if self.max_content is None else self.max_content
        if hi > tracks:
            raise ValueError(f"TrackMask max_content={hi} exceeds the segment's {tracks} tracks")
        k = self.min_content + (uniform(batch_size, generator) * (hi - self.min_content + 1)).long()
        return hide_top(uniform((batch_size, tracks), generator), k)

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, content=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            if segment.kind != "streams":
                raise ValueError(f"TrackMask needs a streams segment, {segment.name!r} is {segment.kind}")
            tracks, steps = segment.shape
            if content is None:
                picked = self.draw_content(tracks, batch_size, generator)
            else:
                picked = torch.as_tensor(content, dtype=torch.bool)
                if picked.shape not in ((tracks,), (batch_size, tracks)):
                    raise ValueError(f"content must be Bool[{tracks}] or [{batch_size}, {tracks}], got "
                                     f"{tuple(picked.shape)}")
                picked = picked.expand(batch_size, tracks)
            allowed = picked.cpu().repeat_interleave(steps, dim=1)  # [B, S * T], track-major like the layout
            counts = torch.round(ratios[:, i] * allowed.sum(1)).long()
            scores = uniform((batch_size, segment.length), generator).masked_fill(~allowed, -1.0)
            mask[:, where] = hide_top(scores, counts)
        return mask
