"""The one decoding loop: ask the denoiser, let the sampler commit (and maybe re-hide) tokens, repeat
until nothing is hidden.

A sampler is a frozen dataclass of settings with two methods:
- `start(hidden: Bool[B, N]) -> state`: a fresh per-run state (a dataclass of plain values, so it
  can be saved as JSON with `dataclasses.asdict`);
- `step(logits: Float[B, N, V], tokens: Long[B, N], state, generator) -> (tokens, state)`: hidden
  places hold the mask id V; the sampler returns the next tokens and state.
The loop owns what every sampler shares: the denoiser calls and their count (NFE), reusing the last
logits when a step changed nothing (MDLM's cache; valid for denoisers not conditioned on time), and
the guarantee that canvas positions not equal to the mask id never change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch


class GenerationOutput(NamedTuple):
    tokens: torch.Tensor  # Long[B, N], no mask id left
    nfe: int  # denoiser calls
    state: Any  # the sampler's final state
    steps: int  # sampler steps taken (>= nfe when calls were reused)


@torch.no_grad()
def generate(
    denoiser: Callable[..., torch.Tensor],
    canvas: torch.Tensor,
    sampler,
    *,
    mask_id: int,
    generator: torch.Generator | None = None,
    state=None,
    time_conditioned: bool = False,
    max_steps: int = 100_000,
    **condition,
) -> GenerationOutput:
    """Fill every `mask_id` position of `canvas` (Long[B, N]).

    denoiser(tokens: Long[B, N], **condition) -> logits Float[B, N, V] with V == mask_id.
    `state` resumes a saved run (pass the partly filled tokens as canvas). With `time_conditioned`,
    the denoiser is called at every step (its output may change with time alone).
    """
    if canvas.dtype != torch.long or canvas.ndim != 2:
        raise ValueError(f"canvas must be Long[B, N], got {canvas.dtype} {tuple(canvas.shape)}")
    if ((canvas < 0) | (canvas > mask_id)).any():
        raise ValueError(f"canvas ids must lie in 0..{mask_id} (the mask id)")
    tokens = canvas.clone()
    fixed = canvas != mask_id
    if state is None:
        state = sampler.start(~fixed)
    nfe = steps = 0
    logits = None
    while (tokens == mask_id).any():
        if steps >= max_steps:
            raise RuntimeError(f"{type(sampler).__name__} left tokens hidden after {steps} steps")
        if logits is None or time_conditioned:
            logits = denoiser(tokens, **condition)
            nfe += 1
            if logits.shape[:2] != tokens.shape or logits.shape[-1] != mask_id:
                raise ValueError(
                    f"denoiser returned {tuple(logits.shape)}; expected [B, N, V] = "
                    f"[{tokens.shape[0]}, {tokens.shape[1]}, {mask_id}]"
                )
        new, state = sampler.step(logits, tokens, state, generator)
        steps += 1
        if not torch.equal(new[fixed], canvas[fixed]):
            raise RuntimeError(f"{type(sampler).__name__} changed a fixed canvas position")
        if not torch.equal(new, tokens):
            logits = None  # the input changed: the next step needs a fresh call
        tokens = new
    return GenerationOutput(tokens, nfe, state, steps)
