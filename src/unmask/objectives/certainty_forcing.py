"""Certainty-forcing distillation (dParallel, Chen et al. 2025, "dParallel: learnable parallel decoding
for dLLMs", arXiv:2509.26488, P8): fine-tune a masked diffusion LM on its own answers, masked the way
block decoding meets them, and push the tokens it already predicts right towards certainty, so that
threshold decoding commits many of them per step.

Per row, with the prompt given and the answer cut into blocks of `block_length` from its first
position (the last block may be shorter): one block b is drawn uniformly; earlier blocks are given,
later blocks hidden whole (as when block decoding reaches b), and block b is split by an exact count:
`round(ratio * len_b)` of its tokens hidden by the first mask (ties by noise), the others by the
complementary second mask, so every token of b is predicted once per pair (two network calls). The
loss, each term a mean over the batch's places of that kind:

    CE(first) + CE(second) + w * (H(first, correct) + H(second, correct))

where CE is the cross-entropy of the hidden tokens of block b (the later blocks are hidden in the
input but carry no loss), and H the entropy of softmax(logits / temperature) at the hidden places of
block b whose argmax is already the target. Defaults are the paper's: ratio 0.5, temperature 0.5,
w = 2, blocks of 32. The answers to train on are the model's own (`batch["tokens"]` from its
decoding of the training prompts); the recipe makes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput


class CertaintyForcing(nn.Module):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N] (True = given; a prefix of each row)}."""

    def __init__(self, model: nn.Module, *, block_length: int = 32, ratio: float = 0.5,
                 temperature: float = 0.5, entropy_weight: float = 2.0):
        super().__init__()
        if not (isinstance(block_length, int) and block_length >= 1):
            raise ValueError(f"block_length must be an integer >= 1, got {block_length!r}")
        if not 0 < ratio < 1:
            raise ValueError(f"ratio must lie in (0, 1), got {ratio}")
        if not temperature > 0 or not entropy_weight >= 0:
            raise ValueError(f"temperature must be > 0 and entropy_weight >= 0, got {temperature}, {entropy_weight}")
        self.model, self.mask_id = model, model.mask_id
        self.block_length, self.ratio = block_length, ratio
        self.temperature, self.entropy_weight = temperature, entropy_weight

    def masks(self, prompt: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first, second, later), each Bool[B, N]: the two complementary halves of each row's block
        b, and the blocks after it. prompt: Bool[B, N]. Drawn on the host from `generator`."""
        prompt = prompt.cpu()
        b, n = prompt.shape
        start = (~prompt).float().argmax(1)  # first answer position (rows have a prompt prefix)
        answer = n - start
        blocks = (answer + self.block_length - 1) // self.block_length  # >= 1 where there is an answer
        chosen = (torch.rand(b, generator=generator, dtype=torch.float64) * blocks).floor().long()
        rel = torch.arange(n) - start.unsqueeze(1)
        ids = torch.div(rel, self.block_length, rounding_mode="floor").masked_fill(rel < 0, -1)
        in_block = (ids == chosen.unsqueeze(1)) & ~prompt
        size = in_block.sum(1)
        count = torch.round(self.ratio * size.double()).long()
        noise = torch.rand(b, n, generator=generator, dtype=torch.float64).masked_fill(~in_block, 2.0)
        rank = noise.argsort(1).argsort(1)  # a uniformly random order of the block's places
        first = in_block & (rank < count.unsqueeze(1))
        return first, in_block & ~first, (ids > chosen.unsqueeze(1)) & ~prompt

    def half(self, tokens: torch.Tensor, hidden: torch.Tensor, later: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Sums over the hidden places of one half (host masks): CE, entropy at the correct ones, counts."""
        hide = hidden.to(tokens.device, non_blocking=True)
        inputs = tokens.masked_fill(hide | later.to(tokens.device, non_blocking=True), self.mask_id)
        logits = self.model(inputs, where=hidden).float()  # [M, V]
        targets = tokens[hide]
        ce = F.cross_entropy(logits, targets, reduction="sum")
        logp = F.log_softmax(logits / self.temperature, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)  # [M]
        correct = logits.argmax(-1) == targets
        return ce, (entropy * correct).sum(), correct.sum(), hide.sum()

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        first, second, later = self.masks(batch["prompt"], generator)
        ce1, h1, c1, n1 = self.half(tokens, first, later)
        ce2, h2, c2, n2 = self.half(tokens, second, later)
        ce = ce1 / n1.clamp(min=1) + ce2 / n2.clamp(min=1)
        certainty = h1 / c1.clamp(min=1) + h2 / c2.clamp(min=1)
        loss = ce + self.entropy_weight * certainty
        metrics = {"loss": loss.detach(), "ce": ce.detach() / 2, "entropy_correct": certainty.detach() / 2,
                   "hidden_acc": (c1 + c2) / (n1 + n2).clamp(min=1)}
        return ObjectiveOutput(loss, metrics)
