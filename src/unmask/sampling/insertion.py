"""Decoding an insertion language model (ILM; Patel et al. 2025, "Insertion Language Models: Sequence
Generation with Arbitrary-Position Insertions", arXiv:2505.05755): each step inserts exactly one token
at one gap, the pair (gap, token) drawn jointly from one distribution over all open gaps x V, until
the model's stop probability reaches a threshold.

This is a loop of its own, not a step policy for `generate`: `generate` fills the mask places of a
canvas of fixed width N, so the number of generated tokens is fixed before decoding starts and every
token keeps its place. Here the length is what the model decides: each step makes a row one token
longer, shifts every token after the gap one place right, and ends a row on the stop head's say, not
when no mask is left.

Gaps: gap g of a row of m tokens lies after its g-th token (gap 0 before the first, gap m after the
last). `open_gaps` says which gaps of the prompt may receive tokens (infilling: only the gap between a
left and a right context); a gap split by an insertion gives two open gaps, so tokens only ever land
inside the open region, and the prompt's tokens are never changed or reordered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .categorical import categorical
from .checks import is_integer, is_real


class InsertionOutput(NamedTuple):
    tokens: torch.Tensor  # Long[B, max_length]: each row left-aligned, -1 past its length
    lengths: torch.Tensor  # Long[B]
    inserted: torch.Tensor  # Bool[B, max_length]: tokens placed by the sampler (the rest is the prompt)
    nfe: int  # model calls
    stopped: torch.Tensor  # Bool[B]: rows ended by the stop head (the rest reached max_length)

    def rows(self) -> list[list[int]]:
        """Each row's tokens as a list."""
        return [row[:n] for row, n in zip(self.tokens.tolist(), self.lengths.tolist(), strict=True)]


@torch.no_grad()
def insert_generate(
    model: Callable,
    prompt: torch.Tensor,
    *,
    max_length: int,
    lengths: torch.Tensor | None = None,
    open_gaps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stop_threshold: float = 0.5,
    temperature: float = 1.0,
) -> InsertionOutput:
    """Grow each row of `prompt` (Long[B, P], left-aligned, `lengths` Long[B] real tokens, default P)
    by one token per step until P(stop) >= `stop_threshold` or the row holds `max_length` tokens.

    model(tokens: Long[B, max_length], valid: Bool[B, max_length]) -> (gaps Float[B, max_length + 1, V],
    stop Float[B]) with attributes `vocab_size` (V) and, if it has one, `max_length` (the most tokens it
    reads). open_gaps: Bool[B, P + 1], default every gap up to each row's length. The model always reads
    `max_length` places, so a row's tokens do not depend on the other rows of the batch (at temperature
    0, where no random number is shared). The (gap, token) pair is drawn from the float64 categorical
    over the flattened gaps x V of the row (`categorical`); temperature 0 takes the most likely pair.
    """
    b, p, v = _check(model, prompt, max_length, lengths, stop_threshold, temperature)
    device = prompt.device
    length = torch.full((b,), p, dtype=torch.long, device=device) if lengths is None else lengths.to(device).clone()
    places = torch.arange(max_length, device=device)
    gaps = torch.arange(max_length + 1, device=device)
    open_ = _open(open_gaps, length, b, p, max_length, device)
    tokens = torch.zeros(b, max_length, dtype=torch.long, device=device)
    tokens[:, :p] = prompt
    tokens.masked_fill_(places >= length[:, None], 0)
    inserted = torch.zeros(b, max_length, dtype=torch.bool, device=device)
    stopped = torch.zeros(b, dtype=torch.bool, device=device)
    nfe = 0
    active = length < max_length
    more = bool(active.any())
    while more:
        out = model(tokens, places < length[:, None])
        nfe += 1
        logits, stop = _check_output(out, b, max_length, v)
        stopped |= active & (torch.sigmoid(stop.double()) >= stop_threshold)
        active &= ~stopped
        flat = logits.masked_fill(~open_[..., None], float("-inf")).reshape(b, -1)  # [B, (max_length + 1) * V]
        top = flat.amax(-1)  # NaN if any entry is; -inf if no open gap has a finite logit
        unusable = torch.isnan(top) | torch.isinf(top)
        broken = torch.isnan(stop) | (active & unusable)
        pick = categorical(flat.masked_fill(unusable[:, None], 0.0), temperature, generator)  # [B]
        gap, token = pick // v, pick % v
        # the new token goes to place `gap`; places after it move one right; gap `gap` splits in two
        source = torch.where(places < gap[:, None], places, places - 1).clamp(min=0)
        here = places == gap[:, None]
        keep = active[:, None]
        tokens = torch.where(keep, torch.where(here, token[:, None], tokens.gather(1, source)), tokens)
        inserted = torch.where(keep, here | inserted.gather(1, source), inserted)
        open_ = torch.where(keep, open_.gather(1, torch.where(gaps <= gap[:, None], gaps, gaps - 1)), open_)
        length = length + active.long()
        active &= length < max_length
        more, bad = torch.stack([active.any(), broken.any()]).tolist()  # the loop's one host read per step
        if bad:
            row = int(broken.nonzero()[0])
            raise ValueError(f"the model returned non-finite logits for row {row} at call {nfe}: NaN, +inf, "
                             "or -inf at every open gap")
    tokens = tokens.masked_fill(places >= length[:, None], -1)
    return InsertionOutput(tokens, length, inserted & (places < length[:, None]), nfe, stopped)


def _check(model, prompt, max_length, lengths, stop_threshold, temperature) -> tuple[int, int, int]:
    if not torch.is_tensor(prompt) or prompt.dtype != torch.long or prompt.ndim != 2 or prompt.shape[0] < 1:
        raise ValueError(f"prompt must be Long[B, P] with B >= 1, got {_kind(prompt)}")
    b, p = prompt.shape
    v = getattr(model, "vocab_size", None)
    if not (is_integer(v) and v >= 1):
        raise ValueError(f"the model must say its vocabulary size as `vocab_size` (an integer >= 1), got {v!r}")
    if not (is_integer(max_length) and max_length >= 1):
        raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
    most = getattr(model, "max_length", None)
    if most is not None and max_length > most:
        raise ValueError(f"max_length {max_length} exceeds the {most} tokens the model reads")
    if lengths is None:
        lengths = torch.full((b,), p)
    elif not torch.is_tensor(lengths) or lengths.dtype != torch.long or lengths.shape != (b,):
        raise ValueError(f"lengths must be Long[{b}], got {_kind(lengths)}")
    if ((lengths < 0) | (lengths > p)).any():
        raise ValueError(f"lengths must lie in 0..{p} (the prompt's width)")
    if (lengths > max_length).any():
        raise ValueError(f"a prompt row holds more than max_length={max_length} tokens")
    real = torch.arange(p) < lengths.cpu()[:, None]
    if ((prompt.cpu() < 0) | (prompt.cpu() >= v))[real].any():
        raise ValueError(f"prompt ids must lie in 0..{v - 1}")
    if not (is_real(stop_threshold) and 0 < stop_threshold <= 1):
        raise ValueError(f"stop_threshold must lie in (0, 1], got {stop_threshold!r}")
    if not (is_real(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    return b, p, v


def _open(open_gaps, length: torch.Tensor, b: int, p: int, max_length: int, device) -> torch.Tensor:
    """Bool[B, max_length + 1]: the prompt's open gaps, checked (every row needs one, none past its end)."""
    within = torch.arange(max_length + 1, device=device) <= length[:, None]
    if open_gaps is None:
        return within
    if not torch.is_tensor(open_gaps) or open_gaps.dtype != torch.bool or open_gaps.shape != (b, p + 1):
        raise ValueError(f"open_gaps must be Bool[{b}, {p + 1}] (one per gap of the prompt), got {_kind(open_gaps)}")
    out = torch.zeros(b, max_length + 1, dtype=torch.bool, device=device)
    out[:, : p + 1] = open_gaps.to(device)
    if (out & ~within).any():
        row = int((out & ~within).any(1).nonzero()[0])
        raise ValueError(f"open_gaps opens a gap past the end of row {row} ({int(length[row])} tokens)")
    if not out.any(1).all():
        row = int((~out.any(1)).nonzero()[0])
        raise ValueError(f"row {row} has no open gap: nothing could be inserted")
    return out


def _check_output(out, b: int, n: int, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's (gaps, stop), or a one-line ValueError naming what was wrong."""
    try:
        logits, stop = out
    except (TypeError, ValueError):
        raise ValueError(f"the model must return (gaps, stop), got {_kind(out)}") from None
    want = f"gaps Float[{b}, {n + 1}, {v}] and stop Float[{b}]"
    ok = (torch.is_tensor(logits) and torch.is_tensor(stop) and logits.is_floating_point()
          and stop.is_floating_point() and tuple(logits.shape) == (b, n + 1, v) and tuple(stop.shape) == (b,))
    if not ok:
        raise ValueError(f"the model returned {_kind(logits)} and {_kind(stop)}; expected {want}")
    return logits, stop


def _kind(value) -> str:
    if torch.is_tensor(value):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return "None" if value is None else f"a {type(value).__name__}"
