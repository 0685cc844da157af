"""BAMM decoding (Pinyoanuntapong et al. 2024, "BAMM: Bidirectional Autoregressive Motion Model",
arXiv:2403.19435): a causal pass draws the hidden tokens left to right and ends a row when it draws
END, which sets the motion's length; refinement passes hide part of what was drawn and draw it again
left to right, now reading the kept tokens on both sides through the revealed columns.

`BAMMSampler` is the step policy for `generate`: each step draws the leftmost hidden token of every
row (float64 draw, `categorical.py`). With `end_id` and `stop=True`, a drawn END fills the row's later
hidden places with `pad_id` in the same step; with `stop=False`, END is never drawn (the length is
already set). Given places never change (the loop checks it). Without `end_id` it is plain
left-to-right decoding.

`bamm_cascade` is BAMM's inference, as exitudio/BAMM's `MaskTransformer.generate`: one causal pass
(revealed = the canvas's given tokens), then `refinements` passes; pass k hides the drawn motion
tokens whose index among the drawn ones is k mod `keep_every` (BAMM: every other token, once) and
reveals the rest, the given tokens and END (PAD is never revealed). The denoiser is the hybrid model
(`nn/bamm.py`), read as `model(tokens, revealed=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import checks
from .categorical import categorical_logp
from .generate import generate


@dataclass
class BAMMState:
    step: int


@dataclass(frozen=True)
class BAMMSampler:
    end_id: int | None = None
    pad_id: int | None = None
    stop: bool = True
    temperature: float = 1.0

    def __post_init__(self):
        checks.integer(self, "end_id", lo=0, none=True)
        checks.integer(self, "pad_id", lo=0, none=True)
        checks.boolean(self, "stop")
        checks.real(self, "temperature")
        if self.end_id is not None and self.stop and self.pad_id is None:
            raise ValueError("BAMMSampler with end_id and stop=True needs pad_id (the token after END)")

    def start(self, hidden: torch.Tensor) -> BAMMState:
        return BAMMState(step=0)

    def step(self, logits, tokens, state: BAMMState, generator=None):
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        first = hidden & (hidden.cumsum(1) == 1)  # [B, N]: each row's leftmost hidden place
        if self.end_id is not None and not self.stop:
            logits = logits.clone()
            logits[..., self.end_id] = float("-inf")
        drawn, _ = categorical_logp(logits, self.temperature, generator, where=first)  # [M]
        out = tokens.clone()
        out[first] = drawn
        if self.end_id is not None and self.stop:
            ended = torch.zeros_like(hidden)
            ended[first] = drawn == self.end_id
            out = out.masked_fill((ended.cumsum(1) > 0) & hidden & ~first, self.pad_id)
        return out, BAMMState(state.step + 1)


class CascadeOutput(NamedTuple):
    tokens: torch.Tensor  # Long[B, N]
    lengths: torch.Tensor  # Long[B]: places between the prefix and the first END
    nfe: int


def end_lengths(tokens: torch.Tensor, end_id: int, prefix: int = 0) -> torch.Tensor:
    """Long[B, N] -> Long[B]: the first END's place minus `prefix` (N - prefix where a row has none)."""
    end = tokens == end_id
    first = torch.where(end.any(1), end.long().argmax(1), torch.full_like(end[:, 0], tokens.shape[1], dtype=torch.long))
    return first - prefix


def bamm_cascade(model, canvas: torch.Tensor, *, end_id: int, pad_id: int, prefix: int = 0, refinements: int = 1,
                 keep_every: int = 2, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> CascadeOutput:
    """canvas: Long[B, N], the mask id where tokens are to be drawn -> the cascade's tokens and lengths."""
    if refinements < 0 or keep_every < 2:
        raise ValueError(f"bamm_cascade needs refinements >= 0 and keep_every >= 2, got {refinements}, {keep_every}")
    mask_id = model.mask_id
    given = canvas != mask_id
    out = generate(model, canvas, BAMMSampler(end_id, pad_id, True, temperature), mask_id=mask_id,
                   generator=generator, revealed=given)
    tokens, nfe = out.tokens, out.nfe
    drawn = ~given & (tokens != end_id) & (tokens != pad_id)
    index = drawn.long().cumsum(1) - 1  # each drawn token's place among its row's drawn ones
    for k in range(refinements):
        hide = drawn & (index % keep_every == k % keep_every)
        revealed = (given | drawn | (tokens == end_id)) & ~hide & (tokens != pad_id)
        out = generate(model, tokens.masked_fill(hide, mask_id), BAMMSampler(end_id, pad_id, False, temperature),
                       mask_id=mask_id, generator=generator, revealed=revealed)
        tokens, nfe = out.tokens, nfe + out.nfe
    return CascadeOutput(tokens, end_lengths(tokens, end_id, prefix), nfe)
