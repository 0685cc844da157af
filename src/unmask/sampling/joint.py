"""Approximate joint sampling (Bansal & Sanghavi 2025, "Enabling approximate joint sampling in diffusion
LMs", arXiv:2509.22738, P18): K tokens per full forward pass, one at a time, each read by a light
sampler layer that has seen the ones committed before it, instead of K independent draws from one read.

Every step of `JointSampler` draws a proposal at each hidden place (the float64 categorical at
`temperature`), scores it by `confidence` (`confidence.py`; "probability": the proposal's own
probability) and commits the most confident one per row, ties in random order (`select.commit_top`).
In mode "joint" the step after every `tokens_per_call`-th asks for a full read and the others for
light reads of the hidden places (`light_queries`); `generate` adds the places changed since the full
read, and a `JointDenoiser` (`nn/joint_layer.py`) answers them with its layer. A denoiser without
light reads is read fully at every step: exact sequential decoding by the same rule, which is also what
tokens_per_call=1 gives with any denoiser. Mode "independent" is the baseline the paper compares with:
each step commits the `tokens_per_call` most confident proposals of one full read, drawn independently.
Either way a row with n hidden places costs ceil(n / tokens_per_call) full reads; a resumed run starts
with a full read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .categorical import categorical_logp
from .confidence import KINDS, confidence, log_probs
from .select import commit_top

MODES = ("joint", "independent")


def commit_most_confident(logits: torch.Tensor, tokens: torch.Tensor, count: int, temperature: float = 1.0,
                          kind: str = "probability", generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a proposal at every hidden place and commit the `count` most confident of each row.

    logits: Float[B, N, V]; tokens: Long[B, N] (mask id V at hidden places). Returns Long[B, N]: tokens
    with at most `count` hidden places per row filled (all of them when fewer are hidden).
    """
    mask_id = logits.shape[-1]
    hidden = tokens == mask_id
    drawn, logp = categorical_logp(logits, temperature, generator, where=hidden)  # Long[M], Float64[M]
    if kind == "probability":  # the draw's own log-probability: no float64 copy of the [M, V] logits
        sure = logp.exp()
    else:
        sure = confidence(log_probs(logits[hidden], temperature), drawn, kind)  # Float64[M]
    scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
    scores[hidden] = sure
    counts = torch.full((tokens.shape[0],), count, dtype=torch.long, device=tokens.device)
    commit = commit_top(scores, counts, generator)
    proposals = tokens.clone()
    proposals[hidden] = drawn
    return torch.where(commit, proposals, tokens)


@dataclass
class JointState:
    step: int  # steps taken; in mode "joint" a full read precedes each step that is a multiple of K


@dataclass(frozen=True)
class JointSampler:
    tokens_per_call: int = 4
    temperature: float = 1.0
    confidence: str = "probability"
    mode: str = "joint"

    def __post_init__(self):
        checks.integer(self, "tokens_per_call")
        checks.real(self, "temperature")
        checks.one_of(self, "confidence", KINDS)
        checks.one_of(self, "mode", MODES)

    def start(self, hidden: torch.Tensor) -> JointState:
        return JointState(step=0)

    def light_queries(self, state: JointState, hidden: torch.Tensor) -> torch.Tensor | None:
        """The hidden places between full reads (the loop adds those changed since), None for a full read."""
        if self.mode == "independent" or state.step % self.tokens_per_call == 0:
            return None
        return hidden

    def step(self, logits, tokens, state: JointState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        count = self.tokens_per_call if self.mode == "independent" else 1
        new = commit_most_confident(logits, tokens, count, self.temperature, self.confidence, generator)
        return new, JointState(state.step + 1)
