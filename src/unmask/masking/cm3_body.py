"""CM3 with function bodies as spans (Aghajanyan et al. 2022, "CM3: A Causal Masked Multimodal Model of
the Internet", arXiv:2201.07520, P17; InCoder, Fried et al. 2022, arXiv:2204.05999, trains code the
same way): a batch mixes plain chunks, which get CM3's random spans (`CausalMasking`), with rows
already rewritten so that a whole function body is the one span moved to the end
(`eval.code_bodies.cm3_body_rows`), which pass unchanged, so the causal model sees the span it is asked to
write at test time.

A row is taken as already rewritten when it holds a sentinel `<mask:i>`: data never does (the
sentinels are special tokens that source text does not produce; the benchmark checks its corpus).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cm3 import CausalMasking


@dataclass(frozen=True)
class BodyCausalMasking(CausalMasking):
    """tokens Long[B, L] -> Long[B, L]: rows holding a sentinel unchanged, every other row as
    `CausalMasking` transforms it (its own Poisson span count, spans and truncation to L)."""

    def __call__(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        done = torch.isin(tokens, torch.tensor(self.sentinels, device=tokens.device)).any(1)  # [B]
        if done.all():
            return tokens.clone()
        out = tokens.clone()
        out[~done] = super().__call__(tokens[~done], generator)
        return out
