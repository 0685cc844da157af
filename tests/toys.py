"""Exact toy denoisers for sampler tests: T1 a factorised model, T2 an exact joint, T5 a recorder of
calls (numbered as in the samplers' test plan).

Every toy takes tokens Long[B, N] with hidden places equal to V (the mask id) and returns logits
Float[B, N, V], so each can stand in for a trained network."""

from __future__ import annotations

import itertools

import torch


class ExactJoint:
    """T2: an explicit, strongly correlated joint p(x) over all V^N sequences; the logits at a hidden
    place are the exact conditional log p(x_i | visible), computed by marginalising."""

    def __init__(self, vocab: int = 3, length: int = 4, seed: int = 0):
        self.vocab, self.length = vocab, length
        self.seqs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))  # [S, N]
        g = torch.Generator().manual_seed(seed)
        base = torch.rand(len(self.seqs), generator=g, dtype=torch.float64) * 0.2
        equal = (self.seqs == self.seqs[:, :1]).all(1).double()  # "all tokens equal" carries the mass
        self.p = (base + 8.0 * equal) / (base + 8.0 * equal).sum()
        self.onehot = torch.nn.functional.one_hot(self.seqs, vocab).double()  # [S, N, V]
        self.calls = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        hidden = tokens == self.vocab
        agree = (self.seqs[None] == tokens[:, None]) | hidden[:, None]  # [B, S, N]
        weight = self.p[None] * agree.all(-1)  # [B, S]
        cond = torch.einsum("bs,snv->bnv", weight, self.onehot)
        return cond.clamp_min(1e-300).log().float()

    def index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Long[B, N] complete sequences -> their row in `seqs`."""
        powers = self.vocab ** torch.arange(self.length - 1, -1, -1)
        return (tokens * powers).sum(1)

    def marginal_product(self) -> torch.Tensor:
        """The law of drawing every token at once from its marginal (one-shot parallel decoding)."""
        marg = torch.einsum("s,snv->nv", self.p, self.onehot)  # [N, V]
        return torch.stack([marg[range(self.length), s].prod() for s in self.seqs])


def empirical(tokens: torch.Tensor, joint: ExactJoint) -> torch.Tensor:
    counts = torch.bincount(joint.index(tokens), minlength=len(joint.seqs)).double()
    return counts / counts.sum()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


class Factorised:
    """T1: position i always predicts the fixed table q_i, whatever the context."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits  # [N, V]
        self.calls = 0

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits.expand(tokens.shape[0], tokens.shape[1], -1).clone()


class Recorder:
    """T5: wraps a denoiser, counts calls and keeps every input."""

    def __init__(self, inner):
        self.inner = inner
        self.inputs: list[torch.Tensor] = []

    @property
    def calls(self) -> int:
        return len(self.inputs)

    def __call__(self, tokens, **condition):
        self.inputs.append(tokens.clone())
        return self.inner(tokens, **condition)


def uniform_denoiser(vocab: int):
    return Factorised(torch.zeros(1, vocab))
