"""Selective masks (SelectiveMAE, Wang et al. 2024, P64): keep visible, and reconstruct, mostly the
semantically rich patches, so a fraction of the tokens carries the pretraining.

Data-driven: each token's richness comes from the context as `energy: Float[B, L]` (SelectiveMAE:
a HOG energy per patch), turned into sampling weights p = softmax(energy / temperature). Of the
K = L - round(ratio * L) visible tokens, `int(K * seed_share)` are drawn from p without replacement
(Gumbel top-k in float64), the rest uniformly from the others; the hidden count is exact.
`select_targets` then draws the reconstruction targets among the hidden tokens from the same p.

SelectiveMAE's token expansion (growing the visible set by feature similarity over a staged
schedule) is not modelled: the visible set beyond the seeds is uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, hide_top, uniform


def gumbel_keys(energy: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    """Float64[B, L]: log p + Gumbel noise; the top-k of these is a draw of k without replacement from p."""
    logp = torch.log_softmax(energy.double() / temperature, dim=-1)
    u = uniform(energy.shape, generator).clamp_min(1e-300)
    return logp - torch.log(-torch.log(u))


@dataclass(frozen=True)
class SelectiveMask(Masker):
    seed_share: float = 0.5  # SelectiveMAE seeds half of the visible budget from p
    temperature: float = 1.0
    context_key: str = "energy"

    def __post_init__(self):
        if not 0.0 <= self.seed_share <= 1.0 or self.temperature <= 0:
            raise ValueError(f"SelectiveMask needs seed_share in [0, 1] and temperature > 0, got "
                             f"{self.seed_share}, {self.temperature}")

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"SelectiveMask needs `{self.context_key}` (Float[B, L]) in the context")
        energy = torch.as_tensor(context[self.context_key]).detach().cpu()
        b, n = counts.shape[0], segment.length
        if energy.shape != (b, n):
            raise ValueError(f"{self.context_key} must be [{b}, {n}] for segment {segment.name!r}, "
                             f"got {tuple(energy.shape)}")
        seeds = hide_top(gumbel_keys(energy, self.temperature, generator),
                         torch.floor((n - counts).double() * self.seed_share).long())
        return uniform((b, n), generator) - 2.0 * seeds.double()  # seeds are hidden last: never


def select_targets(mask: torch.Tensor, energy: torch.Tensor, count: int, *, temperature: float = 1.0,
                   generator=None) -> torch.Tensor:
    """Long[B, count]: `count` hidden places per row, drawn from softmax(energy / T) without
    replacement among the hidden ones, ascending. mask: Bool[B, L]; energy: Float[B, L]."""
    hidden = mask.sum(1)
    if (hidden < count).any():
        raise ValueError(f"cannot draw {count} targets from rows with only {int(hidden.min())} hidden tokens")
    keys = gumbel_keys(energy.detach().cpu(), temperature, generator).masked_fill(~mask.cpu(), float("-inf"))
    return keys.topk(count, dim=1).indices.sort(dim=1).values.to(mask.device)
