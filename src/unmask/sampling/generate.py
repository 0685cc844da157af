"""The one decoding loop: ask the denoiser, let the sampler commit (and maybe re-hide) tokens, repeat
until nothing is hidden.

A sampler is a frozen dataclass of settings with two methods:
- `start(hidden: Bool[B, N]) -> state`: a fresh per-run state (a dataclass of plain values, so it
  can be saved as JSON with `dataclasses.asdict`);
- `step(logits: Float[B, N, V], tokens: Long[B, N], state, generator) -> (tokens, state)`: hidden
  places hold the mask id V; the sampler returns the next tokens and state.
and two optional ones:
- `progress(state) -> float | list[float]`: the share of decoding done before the next step, read
  by denoisers that change with it (guidance schedules); without it the loop uses the share of the
  row's hidden places already filled;
- `light_queries(state, hidden) -> Bool[B, N] | None`: positions the next read may be limited to,
  against cached keys and values (ReCAP, ENAT-style reuse); None asks for a full read;
- `revisable(state) -> Bool[B, N]`: places the sampler committed and may hide again (RCR), so a
  resumed run does not take them for given canvas positions.
The loop owns what every sampler shares: the denoiser calls and their count (NFE), reusing the last
logits when a step changed nothing (MDLM's cache; valid for denoisers not conditioned on time), the
K/V cache of denoisers that offer light reads (`kv_cache.py`), and the guarantee that canvas
positions not equal to the mask id never change (a step that changes one is a ValueError naming the
sampler and the place).

The loop also refuses bad inputs, each with one line: a canvas that is not Long[B, N] with B, N >= 1;
a denoiser that returns anything but a float tensor [B, N, V]; and a denoiser whose logits hold NaN or
+inf anywhere, or -inf for every token at a hidden place. Those stop the run at the step that read
them (steps count from 0, as the samplers' states do), before a sampler turns them into tokens (an
argmax of NaN is token 0) or into nothing (a draw that never lands on a token leaves the place hidden
and the loop spinning). The finiteness flag is computed on the device and read with the loop's one
read per step, so checking costs no extra host sync.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .checks import is_integer
from .select import copy_rows


class GenerationOutput(NamedTuple):
    tokens: torch.Tensor  # Long[B, N], no mask id left
    nfe: int  # full denoiser calls
    state: Any  # the sampler's final state
    steps: int  # sampler steps taken (>= nfe + light when calls were reused)
    light: int = 0  # light reads against cached keys and values


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
    on_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    **condition,
) -> GenerationOutput:
    """Fill every `mask_id` position of `canvas` (Long[B, N]).

    denoiser(tokens: Long[B, N], **condition) -> logits Float[B, N, V] with V == mask_id.
    `state` resumes a saved run (pass the partly filled tokens as canvas). With `time_conditioned`,
    the denoiser is called at every step (its output may change with time alone); so is a denoiser
    whose `uses_progress` is true, and it also receives `progress=Float64[B]`. `on_step(tokens, new,
    logits)`, if given, sees every step: its input tokens, the tokens it returned and the logits it read
    (a trajectory for policy-gradient training, `objectives/mdpo.py`); light reads update the logits
    in place, so keep a copy of what you need from them. Without `on_step` the loop, the denoiser's calls
    included, runs in `torch.inference_mode` (no autograd bookkeeping on any operation) and the tokens
    come back as a plain tensor; a denoiser that keeps tensors it makes for autograd later must clone them.
    """
    _check_canvas(canvas)
    if not (is_integer(mask_id) and mask_id >= 1):
        raise ValueError(f"mask_id must be an integer >= 1 (the vocabulary size V), got {mask_id!r}")
    if not (is_integer(max_steps) and max_steps >= 1):
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if ((canvas < 0) | (canvas > mask_id)).any():
        raise ValueError(f"canvas ids must lie in 0..{mask_id} (the mask id)")
    tokens = canvas.clone()
    fixed = canvas != mask_id
    if state is None:
        state = sampler.start(~fixed)
    elif hasattr(sampler, "revisable"):
        fixed = fixed & ~sampler.revisable(state).to(fixed.device)
    wants_progress = bool(getattr(denoiser, "uses_progress", False))
    every_step = time_conditioned or wants_progress
    light_queries = getattr(sampler, "light_queries", None)
    cached = light_queries is not None and hasattr(denoiser, "light") and hasattr(denoiser, "full")
    if getattr(sampler, "requires_cache", False) and not cached:
        raise ValueError(f"{type(sampler).__name__} reads against cached keys and values: it needs a denoiser with "
                         f"full and light reads (kv_cache.CachedDenoiser), got {_kind(denoiser)}")
    to_fill = (tokens == mask_id).sum(1)
    nfe = light = steps = 0
    logits = last = cache = top = None  # top: [B, N] max logit per place, kept beside the logits
    queries = width = None  # the next light read's places and the most in a row, decided after each step
    hidden = tokens == mask_id
    finite = torch.zeros((), dtype=torch.float64, device=canvas.device)  # NaN when the current logits are not fine
    more = bool(hidden.any())
    # without `on_step` no tensor made here leaves the loop but the tokens, copied out at the end: inference
    # mode skips autograd's bookkeeping on every operation (the denoiser's too)
    with torch.inference_mode(on_step is None):
        while more:
            if steps >= max_steps:
                raise RuntimeError(f"{type(sampler).__name__} left tokens hidden after {steps} steps")
            if logits is None or every_step:
                extra = {"progress": _progress(sampler, state, hidden, to_fill)} if wants_progress else {}
                if queries is not None:
                    part, cache = denoiser.light(tokens, queries, cache, width=width, **condition, **extra)
                    _check_logits(part, (None, mask_id), "light read")
                    logits = last  # updated in place: a copy of [B, N, V] per light read would cost more than the read
                    places = queries.reshape(-1).nonzero().squeeze(1)  # row-major, the order of the read's rows
                    if part.shape[0] != places.shape[0]:
                        raise ValueError(f"the denoiser's light read returned {part.shape[0]} rows of logits for "
                                         f"{places.shape[0]} queried places")
                    copy_rows(logits.view(-1, mask_id), places, part.to(logits.dtype))
                    top.view(-1).index_copy_(0, places, part.amax(-1).to(top.dtype))
                    light += 1
                else:
                    if cached:
                        logits, cache = denoiser.full(tokens, **condition, **extra)
                    else:
                        logits = denoiser(tokens, **condition, **extra)
                    nfe += 1
                    _check_logits(logits, (*tokens.shape, mask_id), "call")
                    if cached:
                        logits = logits.contiguous()  # light reads write into it by flat place
                    top = logits.amax(-1)  # [B, N]: one max over V finds NaN, +inf and all -inf
                last = logits
                finite = _finiteness(top, hidden)
            try:
                new, state = sampler.step(logits, tokens, state, generator)
            except Exception:
                if not torch.isfinite(finite):  # read only on the way out: the sampler failed on the bad numbers
                    raise ValueError(_not_finite_message(_not_finite(top, hidden), steps)) from None
                raise
            if on_step is not None:
                on_step(tokens, new, logits)
            changed = new != tokens
            moved = changed & fixed
            new_hidden = new == mask_id
            flags = [finite, *(f.sum(dtype=torch.float64) for f in (moved, changed, new_hidden))]  # counts
            queries = light_queries(state, new_hidden) if cached and cache is not None else None
            if queries is not None:
                queries = queries | (new != cache.tokens)  # a changed token's cached K/V is stale
                flags.append(queries.sum(1).amax().double())
            # the loop's decisions (and the next light read's width) in one host sync per step, not one each
            fine, any_moved, any_changed, more, *most = torch.stack(flags).tolist()
            width = int(most[0]) if most else None
            if not math.isfinite(fine):
                raise ValueError(_not_finite_message(_not_finite(top, hidden), steps))
            steps += 1
            if any_moved:
                raise ValueError(_moved_message(sampler, moved, tokens, new))
            if any_changed:
                logits = None  # the input changed: the next step needs a fresh call
                tokens, hidden = new, new_hidden
    return GenerationOutput(tokens.clone(), nfe, state, steps, light)  # a plain tensor, whatever made it


def _check_canvas(canvas) -> None:
    if not isinstance(canvas, torch.Tensor):
        raise ValueError(f"canvas must be a Long tensor [B, N], got {_kind(canvas)}")
    if canvas.dtype != torch.long or canvas.ndim != 2:
        raise ValueError(f"canvas must be Long[B, N], got {canvas.dtype} {tuple(canvas.shape)}")
    if canvas.shape[0] < 1 or canvas.shape[1] < 1:
        raise ValueError(f"canvas must hold at least one row and one position, got shape {tuple(canvas.shape)}")


def _kind(value) -> str:
    """What a value is, for a message: None, a list, a numpy.ndarray."""
    if value is None:
        return "None"
    module = type(value).__module__.split(".")[0]
    return f"a {type(value).__name__}" if module == "builtins" else f"a {module}.{type(value).__name__}"


def _check_logits(out, shape: tuple, what: str) -> None:
    """A denoiser's output must be a float tensor of `shape`: (B, N, V) for a call, (None, V) for a
    light read of M places (M is checked where the logits are placed, without a read of the count)."""
    want = f"[B, N, V] = [{', '.join(map(str, shape))}]" if len(shape) == 3 else f"[M, V] = [M, {shape[1]}]"
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the denoiser's {what} returned {_kind(out)}; expected a float tensor {want}")
    if not out.is_floating_point():
        raise ValueError(f"the denoiser's {what} returned {out.dtype} logits; expected a float tensor {want}")
    if out.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, out.shape, strict=False)):
        raise ValueError(f"the denoiser's {what} returned shape {tuple(out.shape)}; expected {want}")


def _finiteness(top: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Float64[]: 0 when every place's logits are usable, NaN when `_not_finite` has a True place, in
    four operations on [B, N] instead of seven: -inf is lifted to 0 where no token is drawn, and
    0 * x is NaN exactly where x is NaN or infinite, so the sum of the products cannot overflow."""
    return torch.where(hidden, top, top.clamp(min=0)).mul_(0).sum(dtype=torch.float64)


def _not_finite(top: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Bool[B, N]: places whose logits hold NaN or +inf, or are -inf for every token where a token
    must be drawn, from top = logits.amax(-1): the max of a row is NaN when any entry is."""
    return torch.isnan(top) | (top == float("inf")) | ((top == float("-inf")) & hidden)


def _not_finite_message(broken: torch.Tensor, step: int, shown: int = 4) -> str:
    rows, places = broken.nonzero(as_tuple=True)
    b = int(rows[0])
    mine = places[rows == b].tolist()
    listed = ", ".join(map(str, mine[:shown])) + (", ..." if len(mine) > shown else "")
    others = len(set(rows.tolist())) - 1
    more = f"; {others} more row{'s' if others > 1 else ''}" if others else ""
    return (f"the denoiser returned non-finite logits at step {step} (row {b}, "
            f"position{'s' if len(mine) > 1 else ''} {listed}{more}): NaN, +inf, or -inf for every token")


def _moved_message(sampler, moved: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> str:
    """Which fixed place (not the mask id in the canvas, nor revisable) a sampler's step changed."""
    rows, places = moved.nonzero(as_tuple=True)
    b, i = int(rows[0]), int(places[0])
    more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
    return (f"{type(sampler).__name__} changed fixed canvas position {i} of row {b} "
            f"({int(before[b, i])} -> {int(after[b, i])}){more}; a sampler may only fill hidden places "
            "and re-hide places it filled")


def _progress(sampler, state, hidden: torch.Tensor, to_fill: torch.Tensor) -> torch.Tensor:
    """Float64[B]: the sampler's own progress, or the share of each row's places already filled."""
    b = hidden.shape[0]
    if hasattr(sampler, "progress"):
        return torch.as_tensor(sampler.progress(state), dtype=torch.float64).expand(b).clone()
    left = hidden.sum(1).double()
    return (1 - left / to_fill.clamp(min=1).double()).cpu()
