"""Next-scale prediction decoded by masked steps (HMAR, Kumbong et al. 2025, "HMAR: efficient
hierarchical masked autoregressive image generation", arXiv:2506.04421), on VAR's sequence of scales
(Tian et al. 2024, "Visual autoregressive modeling: scalable image generation via next-scale
prediction", arXiv:2404.02905).

The sequence holds token maps of growing scales laid end to end (`scale_layout`: 1x1, 2x2, 4x4,
...), read by a model whose attention is block-causal across scales (`ModelConfig(attention=
"scale_causal")`, `nn.scale_attention.scale_causal_mask`). Scales are decoded coarse to fine; inside
a scale, a MaskGIT-like policy commits the scale's tokens over `steps_per_scale` denoiser calls
instead of VAR's one. With one step per scale it is VAR's decoding: every token of a scale drawn
at once from one call that sees all coarser scales.

The stage machinery is shared with Hi-MAR's pivots (`pivot.py`): the sequence is cut into stages
decoded in order, each by its own sampler reading its own stage's logits and tokens; a stage starts
when every earlier one is filled in every row (a batch-wide decision, so each row's tokens still
depend on its own inputs alone). A stage with nothing hidden is skipped. A step names the next stage
with one read of the device.

Multi-scale training targets, when no multi-scale tokenizer exists: `scale_tokens` tokenizes the
image area-resized to each scale (the tokenizer sees a real low-resolution image, so a coarse map
decodes to a preview of the image); `mode_pool` takes the most frequent child token instead, for
data that exists only as tokens. VAR's own targets come from a residual multi-scale quantizer.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..layout import Layout
from . import checks
from .maskgit import MaskGITSampler

# --- layout and training targets ----------------------------------------------------------------


def _side(s) -> tuple[int, int]:
    h, w = (s, s) if isinstance(s, int) else tuple(s)
    return int(h), int(w)


def scale_layout(sides, prefix: Layout | None = None) -> Layout:
    """Grid segments "scale0", "scale1", ... of the given sides (ints for squares, or (h, w)), coarse
    to fine, after an optional prefix (a class label): `scale_layout([1, 2, 4, 8])` holds 85 tokens."""
    grids = [Layout.grid(*_side(s), name=f"scale{k}") for k, s in enumerate(sides)]
    if not grids:
        raise ValueError("a scale layout needs at least one scale")
    out = prefix
    for g in grids:
        out = g if out is None else out + g
    return out


def scale_tokens(images: torch.Tensor, tokenize: Callable[[torch.Tensor], torch.Tensor], sides,
                 stride: int) -> list[torch.Tensor]:
    """Token maps of `images` (Float[B, C, H, W]) at every scale: the image area-resized to
    (h * stride, w * stride) pixels, then `tokenize`d (Float[B, C, h', w'] -> Long[B, h', w'], a
    tokenizer of that pixel stride). Returns one Long[B, h, w] per side; flatten and concatenate them
    for the layout of `scale_layout(sides)`."""
    out = []
    for s in sides:
        h, w = _side(s)
        small = F.interpolate(images, size=(h * stride, w * stride), mode="area")
        tokens = tokenize(small)
        if tokens.shape != (images.shape[0], h, w):
            raise ValueError(f"tokenize returned {tuple(tokens.shape)} for a {h * stride} x {w * stride} image; "
                             f"expected Long[B, {h}, {w}] with stride {stride}")
        out.append(tokens.long())
    return out


def mode_pool(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """Long[B, h, w] -> Long[B, h / factor, w / factor]: each factor x factor window's most frequent
    token, the smallest id among ties. Codebook ids have no order, so the mode is the pooling that
    stays in the vocabulary; it is a stand-in for a tokenizer applied to the smaller image."""
    b, h, w = tokens.shape
    if not (checks.is_integer(factor) and factor >= 1) or h % factor or w % factor:
        raise ValueError(f"mode_pool factor must be an integer >= 1 dividing {h} x {w}, got {factor!r}")
    f = factor
    win = tokens.reshape(b, h // f, f, w // f, f).permute(0, 1, 3, 2, 4).reshape(b, h // f, w // f, f * f)
    counts = (win.unsqueeze(-1) == win.unsqueeze(-2)).sum(-1)  # [..., f^2]: how often each child's token occurs
    best = counts == counts.amax(-1, keepdim=True)
    return win.masked_fill(~best, torch.iinfo(win.dtype).max).amin(-1)


# --- stages decoded in order (shared with pivot.py) -----------------------------------------------


def stage_slices(lengths, n: int) -> list[slice]:
    """The places of each stage; ValueError unless the lengths cover the N places exactly."""
    if sum(lengths) != n:
        raise ValueError(f"stage lengths {list(lengths)} add up to {sum(lengths)}, but the canvas has {n} places")
    ends = list(itertools.accumulate(lengths))
    return [slice(e - length, e) for e, length in zip(ends, lengths, strict=True)]


def next_stage(hidden: torch.Tensor, where: list[slice], stage: int) -> int:
    """The first stage from `stage` on with a hidden place in some row (len(where) when none): one read."""
    if stage >= len(where):
        return stage
    left = torch.stack([hidden[:, w].any() for w in where[stage:]]).tolist()
    return next((stage + i for i, x in enumerate(left) if x), len(where))


def start_stages(samplers: list, where: list[slice], hidden: torch.Tensor) -> tuple[int, list]:
    """Every stage's own state, started now: a stage's places do not change before its turn."""
    return next_stage(hidden, where, 0), [s.start(hidden[:, w]) for s, w in zip(samplers, where, strict=True)]


def step_stage(samplers: list, where: list[slice], logits, tokens, stage: int, inner: list,
               generator) -> tuple[torch.Tensor, int, list]:
    """One step of the current stage's sampler on its own places; returns (tokens, stage, inner)."""
    if stage >= len(where):
        return tokens, stage, inner
    w, sampler = where[stage], samplers[stage]
    part, own = sampler.step(logits[:, w], tokens[:, w], _restore(sampler, inner[stage]), generator)
    new = tokens.clone()
    new[:, w] = part
    inner = [*inner[:stage], own, *inner[stage + 1:]]
    return new, next_stage(new == logits.shape[-1], where, stage), inner


def _restore(sampler, state):
    """A stage's state as its sampler's own type; after a JSON round trip it is a plain dict."""
    if not isinstance(state, dict):
        return state
    kind = typing.get_type_hints(type(sampler).start).get("return")
    if kind is None:
        raise ValueError(f"{type(sampler).__name__}.start declares no state type: its state cannot be restored")
    return kind(**state)


def check_sampler(owner, name: str) -> None:
    value = getattr(owner, name)
    if not (hasattr(value, "start") and hasattr(value, "step")):
        raise ValueError(f"{type(owner).__name__}: {name} must be a sampler (with start and step), got {value!r}")


# --- the sampler ----------------------------------------------------------------------------------


@dataclass
class NextScaleState:
    scale: int  # the scale the next step decodes; len(lengths) when all are filled
    inner: list  # each scale's own sampler state (plain dicts after a JSON round trip)


@dataclass(frozen=True)
class NextScaleSampler:
    """steps_per_scale: calls per scale (one int for all, or one per scale); lengths: tokens per scale,
    coarse to fine, covering the whole canvas (a fixed class-label prefix is a scale of its own,
    skipped since nothing in it is hidden); inner: the per-scale policy, a sampler with a `steps`
    setting (MaskGIT by default), run with `steps` = that scale's steps. A scale of n tokens takes
    min(steps, n) calls, since MaskGIT commits at least one token per call."""

    steps_per_scale: int | tuple[int, ...]
    lengths: tuple[int, ...]
    inner: Any = field(default_factory=MaskGITSampler)

    def __post_init__(self):
        if not self.lengths or not all(checks.is_integer(n) and n >= 1 for n in self.lengths):
            raise ValueError(f"NextScaleSampler: lengths must be token counts >= 1, one per scale, "
                             f"got {self.lengths!r}")
        steps = self.steps_per_scale
        many = steps if isinstance(steps, tuple) else (steps,) * len(self.lengths)
        if len(many) != len(self.lengths) or not all(checks.is_integer(k) and k >= 1 for k in many):
            raise ValueError(f"NextScaleSampler: steps_per_scale must be an integer >= 1 or {len(self.lengths)} of "
                             f"them (one per scale), got {steps!r}")
        check_sampler(self, "inner")
        if "steps" not in {f.name for f in dataclasses.fields(self.inner)}:
            raise ValueError(f"NextScaleSampler: inner must have a `steps` setting; {type(self.inner).__name__} "
                             "has none")

    def samplers(self) -> list:
        """The policy of each scale: `inner` with that scale's steps."""
        steps = self.steps_per_scale
        many = steps if isinstance(steps, tuple) else (steps,) * len(self.lengths)
        return [dataclasses.replace(self.inner, steps=k) for k in many]

    def start(self, hidden: torch.Tensor) -> NextScaleState:
        if not hidden.any():  # nothing to decode: the canvas need not match the scales
            return NextScaleState(len(self.lengths), [])
        scale, inner = start_stages(self.samplers(), stage_slices(self.lengths, hidden.shape[1]), hidden)
        return NextScaleState(scale, inner)

    def step(self, logits, tokens, state: NextScaleState, generator=None):
        where = stage_slices(self.lengths, tokens.shape[1])
        new, scale, inner = step_stage(self.samplers(), where, logits, tokens, state.scale, state.inner, generator)
        return new, NextScaleState(scale, inner)
