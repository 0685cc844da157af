"""Exact accuracy on verifiable reasoning: held-out prompts are answered by a model, each answer is
judged by the task's checker (`data/reasoning.py`), and the cost is counted in denoiser calls per
answer (NFE).

- a masked diffusion model fills the hidden answer of `prompt ‖ [MASK] x A` with any sampler of
  `unmask.sampling` (LLaDA's SFT set-up, Nie et al. 2025, arXiv:2502.09992); rows are decoded in
  batches, and a row's NFE counts the calls made while it still had hidden places (what decoding it
  alone would cost, up to the loop reusing a call when a step changed nothing in the whole batch);
- an autoregressive model writes the A answer tokens left to right by argmax (greedy decoding, as
  Masked Thought scores its models, Chen et al. 2024, arXiv:2403.02178): A calls per answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.reasoning import Examples, Task
from ..sampling import CachedDenoiser, generate


@dataclass(frozen=True)
class Answered:
    answers: list[str]  # padding stripped
    correct: list[bool]  # by the task's checker
    nfe: list[int]  # model calls per answer (full reads)
    light: list[int]  # light reads per answer, against cached keys and values (0 without a cache)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / max(len(self.correct), 1)

    @property
    def mean_nfe(self) -> float:
        return sum(self.nfe) / max(len(self.nfe), 1)

    @property
    def mean_light(self) -> float:
        return sum(self.light) / max(len(self.light), 1)


class RowCalls:
    """A denoiser that counts, per row, the calls made while the row still has a hidden place.
    tokens: Long[B, N] (mask id at hidden places) -> the model's logits Float[B, N, V]."""

    def __init__(self, model, mask_id: int):
        self.model, self.mask_id = model, mask_id
        self.calls: torch.Tensor | None = None  # Long[B], on the model's device

    def __call__(self, tokens: torch.Tensor, **condition) -> torch.Tensor:
        live = (tokens == self.mask_id).any(1).long()
        self.calls = live if self.calls is None else self.calls + live
        return self.model(tokens, **condition)


class CachedRowCalls(RowCalls):
    """RowCalls with full and light reads (`CachedDenoiser`), for samplers that read against cached
    keys and values (`BlockCached`): `calls` counts full reads per row, `light` light reads."""

    def __init__(self, model, mask_id: int):
        super().__init__(CachedDenoiser(model), mask_id)
        self.light_calls: torch.Tensor | None = None

    def full(self, tokens: torch.Tensor):
        live = (tokens == self.mask_id).any(1).long()
        self.calls = live if self.calls is None else self.calls + live
        return self.model.full(tokens)

    def light(self, tokens: torch.Tensor, queries: torch.Tensor, cache, width: int | None = None):
        live = (tokens == self.mask_id).any(1).long()
        self.light_calls = live if self.light_calls is None else self.light_calls + live
        return self.model.light(tokens, queries, cache, width)


def _checked(task: Task, examples: Examples, answers: list[str], nfe: list[int],
             light: list[int] | None = None) -> Answered:
    correct = [task.check(p, a) for p, a in zip(examples.prompts, answers, strict=True)]
    return Answered(answers, correct, nfe, light or [0] * len(answers))


@torch.no_grad()
def diffusion_answers(model, task: Task, examples: Examples, sampler, seed: int = 0, batch: int = 256) -> Answered:
    """Every prompt of `examples` answered by a masked diffusion `model` (tokens Long[B, N] -> logits
    Float[B, N, V], mask id V) with `sampler`, in batches of `batch` rows."""
    mask_id, p = model.mask_id, task.prompt_length
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    answers: list[str] = []
    nfe: list[int] = []
    light: list[int] = []
    cached = getattr(sampler, "requires_cache", False)
    for lo in range(0, len(examples), batch):
        canvas = examples.tokens[lo : lo + batch].clone().to(device)  # [b, N]
        canvas[:, p:] = mask_id
        counted = (CachedRowCalls if cached else RowCalls)(model, mask_id)
        out = generate(counted, canvas, sampler, mask_id=mask_id, generator=g)
        answers += [task.text(row) for row in out.tokens[:, p:].cpu()]
        nfe += counted.calls.tolist()
        reads = getattr(counted, "light_calls", None)
        light += reads.tolist() if reads is not None else [0] * len(canvas)
    return _checked(task, examples, answers, nfe, light)


@torch.no_grad()
def greedy_answers(model, task: Task, examples: Examples, bos_id: int, batch: int = 256) -> Answered:
    """Every prompt answered by a causal `model` (tokens Long[B, n] -> logits Float[B, n, V], position
    i predicting token i + 1 of the row after a start token `bos_id`) by argmax, A tokens each."""
    p, a = task.prompt_length, task.answer_length
    device = next(model.parameters()).device
    answers: list[str] = []
    for lo in range(0, len(examples), batch):
        prompts = examples.tokens[lo : lo + batch, :p].to(device)  # [b, P]
        seq = torch.cat([torch.full_like(prompts[:, :1], bos_id), prompts], dim=1)  # [b, 1 + P]
        for _ in range(a):
            nxt = model(seq)[:, -1].argmax(-1)  # [b]
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        answers += [task.text(row) for row in seq[:, 1 + p :].cpu()]
    return _checked(task, examples, answers, [a] * len(answers))
