"""Training the sampler layer of approximate joint sampling (Bansal & Sanghavi 2025, "Enabling
approximate joint sampling in diffusion LMs", arXiv:2509.22738, P18): the layer learns, by
KL(teacher || layer), the conditionals the frozen model itself gives after it has unmasked a few more
tokens one at a time, from the features it computed before those reveals.

Per row: r ~ U(0, 1) and round(r * L) of the row's L answer places hidden (exact count, ties by
noise); that is the state s_0. The frozen model (no gradient) decodes up to K - 1 tokens from it
sequentially by the sampler's own rule (`sampling/joint.commit_most_confident`: one proposal per hidden
place, the most confident committed), one full read per token: s_1, ..., s_{K-1}, and its logits
T_j = model(s_j) are the targets. The layer reads h(s_0), the model's features of the state before
the reveals, and the tokens of s_j at the places revealed since; the loss is the mean over every
(j, place hidden in s_j) of KL(softmax T_j || softmax layer_j). Only the layer trains: the model's
parameters are frozen when the objective is built.

Metrics: `loss`, and `kl_independent`, the same mean KL for the model's logits at s_0 (what
independent parallel decoding uses at those places): the layer's loss starts there and should fall below it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masking.base import hide_top, uniform
from ..nn.joint_layer import JointLayer, frozen_read
from ..nn.masked_model import MaskedTokenModel
from ..sampling import checks
from ..sampling.confidence import KINDS
from ..sampling.joint import commit_most_confident
from .base import ObjectiveOutput


def teacher_kl(teacher: torch.Tensor, student: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """KL(softmax teacher || softmax student) in float32 at the places `where`.

    teacher, student: Float[B, N, V] logits (-inf where a token is not allowed); where: Bool[B, N].
    Returns Float[M] (row-major order)."""
    t = teacher[where].float().log_softmax(-1)
    s = student[where].float().log_softmax(-1)
    p = t.exp()
    return (p * torch.where(p > 0, t - s, 0.0)).sum(-1)  # 0 log 0 = 0 where the teacher gives no mass


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """The trainer's host generator on the CPU, or a generator on `device` seeded from it (the sampler's
    draws run where the logits are)."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = torch.randint(2**62, (), generator=generator)  # a read of host memory: no wait for the device
    return torch.Generator(device).manual_seed(int(seed))


class JointDistillation(nn.Module):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N] (optional, True = given)} -> ObjectiveOutput."""

    def __init__(self, model: MaskedTokenModel, layer: JointLayer, k: int, *, temperature: float = 1.0,
                 confidence: str = "probability"):
        super().__init__()
        if not (checks.is_integer(k) and k >= 2):
            raise ValueError(f"k must be an integer >= 2 (tokens per full read), got {k!r}")
        if not (checks.is_real(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if confidence not in KINDS:
            raise ValueError(f"confidence must be one of {KINDS}, got {confidence!r}")
        if layer.dim != model.config.dim or layer.vocab_size != model.config.vocab_size:
            raise ValueError(f"the layer was built for width {layer.dim} and {layer.vocab_size} tokens; the model has "
                             f"width {model.config.dim} and {model.config.vocab_size} tokens")
        self.model, self.layer = model.requires_grad_(False), layer
        self.k, self.temperature, self.confidence = k, temperature, confidence
        self.mask_id = model.mask_id

    def start_state(self, batch: dict, generator=None) -> torch.Tensor:
        """s_0: Long[B, N], round(r * L) answer places of each row hidden, r ~ U(0, 1) per row."""
        tokens = batch["tokens"]
        b, n = tokens.shape
        answer = ~batch["prompt"] if batch.get("prompt") is not None else torch.ones_like(tokens, dtype=torch.bool)
        u = uniform((b, n), generator).to(tokens.device, non_blocking=True)
        r = uniform((b,), generator).to(tokens.device, non_blocking=True)
        counts = torch.round(r * answer.sum(1)).long()
        hide = hide_top(u.masked_fill(~answer, -1.0), counts)  # given places score below every answer place
        return tokens.masked_fill(hide, self.mask_id)

    @torch.no_grad()
    def trajectory(self, state: torch.Tensor, generator=None):
        """The teacher's sequential reveals from s_0 = state (Long[B, N]).

        Returns (logits at s_0 Float[B, N, V], h(s_0) Float[B, N, D], the states s_1..s_{K-1} stacked
        Long[(K - 1) B, N], the teacher's logits at them Float[(K - 1) B, N, V])."""
        g = device_generator(generator, state.device)
        first, features = frozen_read(self.model, state)
        logits, current, seen, targets = first, state, [], []
        for _ in range(self.k - 1):
            current = commit_most_confident(logits, current, 1, self.temperature, self.confidence, g)
            logits = self.model(current)
            seen.append(current)
            targets.append(logits)
        return first, features, torch.cat(seen), torch.cat(targets)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        state = self.start_state(batch, generator)
        first, features, seen, targets = self.trajectory(state, generator)
        reps = self.k - 1
        base = state.repeat(reps, 1)
        pred = self.layer(features.repeat(reps, 1, 1), seen, seen != base)  # [(K - 1) B, N, V]
        hidden = seen == self.mask_id
        places = hidden.sum().clamp(min=1)
        loss = teacher_kl(targets, pred, hidden).sum() / places
        with torch.no_grad():
            independent = teacher_kl(targets, first.repeat(reps, 1, 1), hidden).sum() / places
        return ObjectiveOutput(loss, {"loss": loss.detach(), "kl_independent": independent})
