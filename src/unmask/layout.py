"""Layouts: how the N tokens of one example are arranged.

A layout is a tuple of named segments laid end to end. Each segment has a kind (`seq`, `grid`,
`video`, `streams`) and a shape; its tokens are flattened row-major (for a video `t x h x w`, the
last axis moves fastest; for streams `s x t`, time moves fastest within each stream). Maskers read
the shape of a segment to hide spatial blocks, tubes or spans, and a segment can be left untouched.

    >>> digits = Layout.seq(1, name="label") + Layout.grid(8, 8, name="pixels")
    >>> digits.n, digits.slice("pixels")
    (65, slice(1, 65, None))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = {"seq": 1, "grid": 2, "video": 3, "streams": 2}


@dataclass(frozen=True)
class Segment:
    """A named run of tokens with a shape: seq (n,), grid (h, w), video (t, h, w), streams (s, t)."""

    name: str
    kind: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"segment kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if len(self.shape) != KINDS[self.kind]:
            raise ValueError(f"a {self.kind} segment needs {KINDS[self.kind]} dims, got {self.shape}")
        if any(int(s) < 1 for s in self.shape):
            raise ValueError(f"segment {self.name!r} has an empty dimension: {self.shape}")

    @property
    def length(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Segments laid end to end; `n` tokens in all."""

    segments: tuple[Segment, ...]

    def __post_init__(self):
        names = [s.name for s in self.segments]
        if not names:
            raise ValueError("a layout needs at least one segment")
        if len(set(names)) != len(names):
            raise ValueError(f"segment names must be unique, got {names}")

    # constructors -----------------------------------------------------------------------------
    @staticmethod
    def seq(n: int, name: str = "tokens") -> Layout:
        return Layout((Segment(name, "seq", (n,)),))

    @staticmethod
    def grid(h: int, w: int, name: str = "grid") -> Layout:
        return Layout((Segment(name, "grid", (h, w)),))

    @staticmethod
    def video(t: int, h: int, w: int, name: str = "video") -> Layout:
        return Layout((Segment(name, "video", (t, h, w)),))

    @staticmethod
    def streams(s: int, t: int, name: str = "streams") -> Layout:
        return Layout((Segment(name, "streams", (s, t)),))

    def __add__(self, other: Layout) -> Layout:
        return Layout(self.segments + other.segments)

    # queries ----------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return sum(s.length for s in self.segments)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.segments)

    def segment(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(f"no segment {name!r}; this layout has {list(self.names)}")

    def slice(self, name: str) -> slice:
        start = 0
        for s in self.segments:
            if s.name == name:
                return slice(start, start + s.length)
            start += s.length
        raise KeyError(f"no segment {name!r}; this layout has {list(self.names)}")

    def to_dict(self) -> dict:
        return {"segments": [[s.name, s.kind, list(s.shape)] for s in self.segments]}

    @staticmethod
    def from_dict(d: dict) -> Layout:
        return Layout(tuple(Segment(n, k, tuple(shape)) for n, k, shape in d["segments"]))
