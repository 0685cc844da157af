"""The voice-leading rule of four-part chorales as a decoding constraint: no note may form a parallel
fifth or octave with another voice. It turns GETMusic's harmoniser (Lv et al. 2023, "GETMusic:
Generating Any Music Tracks with a Unified Representation and Diffusion Framework", arXiv:2305.10841,
P16; `recipes/chorales.py`) into a constrained one, drawn by adaptive weighted rejection sampling
(Lipkin et al. 2025, arXiv:2504.05410, P24; `sampling/constrained.py`): the rule is hard where the
model has only learnt it softly.

A parallel is exactly `eval.music.parallels` (imported, not restated): two successive events of a
voice pair, both sounding, moving the same way, a fifth or octave (unison) at both. The candidate
token x for voice v at step t is tested against each other voice u on the window with every hidden
token read as a rest:

    new parallels(x) = parallels([v, u] with x at t) - parallels([v, u] with a rest at t)

A rest silences a voice until its next note and makes its step an event, so a parallel counted
here depends on known tokens only (a hidden token inside it would break it), and the second count
holds every parallel of the pair that x cannot touch: the difference counts those x makes (never
negative). x is refused when any u gets one. A rest is always allowed, so a row always has a valid
token. Every parallel of a finished window has a last-committed token among the tokens it depends
on (the two voices' steps from their notes' starts to its second event), and that token's test saw
all of them: with every token drawn under the constraint, a window has none. What a piece can still
hold: a parallel whose first event lies before the window that draws its second (windowed filling
sees half a window of the past, read from the window's first step with held notes struck again).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import music
from .music import parallels


@dataclass(frozen=True)
class NoParallels:
    """constraint(tokens: Long[4 * steps] one voice-major window with `mask_id` where hidden, position,
    token) -> bool: False when `token` at `position` would make a parallel fifth or octave with a
    voice known at both of its events. `steps`: the window's length (the layout's time axis)."""

    steps: int
    mask_id: int = music.MASK_ID

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 2):
            raise ValueError(f"steps must be an integer >= 2 (a window's length), got {self.steps!r}")

    def __call__(self, tokens: torch.Tensor, position: int, token: int) -> bool:
        if token == music.REST:  # silences v: no parallel can pass through it
            return True
        grid = np.asarray(tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64)
        if grid.size != len(music.VOICES) * self.steps:
            raise ValueError(f"tokens hold {grid.size} ids, not {len(music.VOICES)} voices x {self.steps} steps")
        if not 0 <= position < grid.size:
            raise ValueError(f"position {position} lies outside the window's {grid.size} tokens")
        grid = grid.reshape(len(music.VOICES), self.steps)
        v, t = divmod(position, self.steps)
        return not any(self.new_parallels(grid, v, u, t, token) for u in range(len(grid)) if u != v)

    def new_parallels(self, grid: np.ndarray, v: int, u: int, t: int, token: int) -> int:
        """Parallel fifths + octaves between voices v and u that `token` at step t makes, counted on the
        window with every hidden token read as a rest. grid: int [4, steps]."""
        if grid[u, t] == self.mask_id:
            return 0  # u unknown at t: tested when u's token there is committed
        pair = np.where(grid[[v, u]] == self.mask_id, music.REST, grid[[v, u]])  # [2, steps]
        pair[0, t] = token
        with_token = sum(parallels(pair, voices=(0,)))
        pair[0, t] = music.REST
        return with_token - sum(parallels(pair, voices=(0,)))
