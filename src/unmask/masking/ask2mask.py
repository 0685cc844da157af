"""Ask2Mask (Baskar, Rosenberg, Ramabhadran, Zhang, Moreno 2022, "Ask2Mask: Guided Data Selection for
Masked Speech Modeling", arXiv:2202.12719): an external scorer (a speech recogniser) rates every frame,
masked speech modeling hides the frames the scorer is most confident about, and each utterance's loss
is weighted by its confidence, so pretraining spends itself on speech that looks like the target
domain and not on frames that would teach it wrong things.

Data-driven: the frame confidences come from the context as `scores: Float[B, L]` (values >= 0, e.g.
the scorer's max posterior per frame), never from a model. Of each row's valid frames (`lengths`, as
in `wav2vec_span.py`), exactly round(ratio * valid) are hidden:

- `temperature > 0`: drawn without replacement with probability proportional to confidence^(1 /
  temperature) (Gumbel top-k in float64, `selective.gumbel_keys`); temperature 1 is proportional to
  the confidence. The paper hides the high-confidence frames and keeps span masking's randomness; we
  read it as sampling by confidence (the paper's exact sampler was not available to us to check).
- `temperature = 0`: the most confident frames, ties broken at random.

`utterance_weights` gives the second half of the method: a row's weight is its mean confidence over
its valid frames, normalised so the weights of a batch average to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, hide_top, ratio_per_segment, uniform
from .selective import gumbel_keys
from .wav2vec_span import valid_counts, valid_lengths, valid_tokens


def utterance_weights(confidence: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Float[B]: w_b = c_b / mean_b' c_b', where c_b is the mean of confidence[b] (Float[B, T]) over its
    first lengths[b] frames (all T when lengths is None). A batch whose confidences are all 0 gets
    weights 1. Runs on confidence's device and reads nothing back (it is used inside a training step)."""
    c = confidence.float()
    if lengths is None:
        per_row = c.mean(1)
    else:
        valid = torch.arange(c.shape[1], device=c.device).unsqueeze(0) < lengths.to(c.device).unsqueeze(1)
        per_row = (c * valid).sum(1) / valid.sum(1).clamp_min(1)
    mean = per_row.mean()
    return torch.where(mean > 0, per_row / mean.clamp_min(1e-12), torch.ones_like(per_row))


@dataclass(frozen=True)
class Ask2Mask(Masker):
    temperature: float = 1.0  # 0: the top confidences; t > 0: drawn with probability ~ confidence^(1/t)
    context_key: str = "scores"

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"Ask2Mask temperature must be >= 0, got {self.temperature}")

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, lengths=None, **context):
        if self.context_key not in context:
            raise ValueError(f"Ask2Mask needs `{self.context_key}` (frame confidences, Float[B, L]) in the context")
        confidence = torch.as_tensor(context[self.context_key]).detach().cpu().double()
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            if confidence.shape != (batch_size, segment.length):
                raise ValueError(f"{self.context_key} must be [{batch_size}, {segment.length}] for segment "
                                 f"{segment.name!r}, got {tuple(confidence.shape)}")
            if (confidence < 0).any():
                raise ValueError(f"{self.context_key} must be >= 0 (confidences)")
            line = segment.shape[-1]
            valid = valid_lengths(lengths, batch_size, line)
            inside = valid_tokens(valid, segment.length, line)
            counts = valid_counts(ratios[:, i], valid * (segment.length // line))
            mask[:, where] = hide_top(self.priority(confidence, inside, generator), counts)
        return mask

    def priority(self, confidence: torch.Tensor, inside: torch.Tensor, generator) -> torch.Tensor:
        """Float64[B, L]: higher is hidden first; -inf outside the valid frames."""
        if self.temperature > 0:
            keys = gumbel_keys(confidence.clamp_min(1e-300).log(), self.temperature, generator)
        else:
            # rank by confidence, and among equal confidences by a uniform draw: the rank of each
            # token in a random order stands in for the tie-break, scaled below any confidence gap
            order = uniform(confidence.shape, generator).argsort(dim=1)
            tie = torch.empty_like(confidence).scatter_(1, order, torch.arange(confidence.shape[1],
                                                                                dtype=torch.float64).expand_as(order))
            keys = torch.stack([confidence, tie], -1)
            keys = _lexicographic(keys)
        return keys.masked_fill(~inside, float("-inf"))


def _lexicographic(keys: torch.Tensor) -> torch.Tensor:
    """Float64[B, L, 2] -> Float64[B, L]: each token's rank (0 = lowest) when sorted by key 0, then key 1."""
    second = keys[..., 1].argsort(dim=1, stable=True)
    first = keys[..., 0].gather(1, second).argsort(dim=1, stable=True)
    order = second.gather(1, first)  # token indices, ascending by (key 0, key 1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return ranks.double()
