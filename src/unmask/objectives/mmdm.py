"""Motion Masked Diffusion (MMDM; Chen 2024, "Text-driven Human Motion Generation with Motion Masked
Diffusion Model", arXiv:2409.19686): an MDM-style diffusion model over motion features (Tevet et al.
2023, arXiv:2209.14916: the network predicts the clean motion x0) whose training input has some
tokens of its embedding hidden, whole time frames or a body part over a span, so the network must
rebuild them from the rest.

Training (`forward`): features normalised per feature by the training mean and std (buffers, set by
`set_normalisation`); a step t uniform on 1..`steps`; x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e with the
cosine a_t (`objectives/umd.cosine_alpha_bar`); the masker hides tokens of the body parts x frames
layout at a share r ~ U(ratio[0], ratio[1]) per row (no masker: plain MDM); the loss is the mean
squared error of the predicted x0 over every feature of every frame (the decoder rebuilds the whole
motion).

Completion (`complete`): the features marked known are given, the rest drawn by DDIM (Song et al.
2021, arXiv:2010.02502, eta 0) over `sample_steps` evenly spaced steps, with the known features
replaced at each step by their own noised values at that step's level (MDM's editing by replacement);
with `mask_hidden`, the tokens whose features are all unknown also enter as the mask vector, as in
training. The known features of the result are the given ones exactly.

batch: {"x": Float[B, T, F]}.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.motion import BODY_PARTS, F
from ..masking import Masker
from ..nn.motion_denoiser import MotionDenoiser, part_features
from .base import ObjectiveOutput, as_metric
from .umd import cosine_alpha_bar


class MotionMaskedDiffusion(nn.Module):
    def __init__(self, denoiser: MotionDenoiser, masker: Masker | None = None, *,
                 ratio: tuple[float, float] = (0.5, 0.5), steps: int = 100):
        super().__init__()
        if not 0.0 <= ratio[0] <= ratio[1] <= 1.0 or steps < 1:
            raise ValueError(f"MMDM needs 0 <= ratio[0] <= ratio[1] <= 1 and steps >= 1, got {ratio}, {steps}")
        self.denoiser, self.masker, self.ratio, self.steps = denoiser, masker, ratio, steps
        self.layout = denoiser.config.layout()
        self.register_buffer("mean", torch.zeros(F))
        self.register_buffer("std", torch.ones(F))

    def set_normalisation(self, x: torch.Tensor) -> None:
        """x: Float[M, T, F] training windows; a feature that never changes keeps std 1e-3 (finite)."""
        flat = x.reshape(-1, x.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp(min=1e-3))

    def alpha(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Long[B] -> Float[B, 1, 1] a_t on `like`'s device and dtype."""
        return cosine_alpha_bar(t, self.steps).to(like.device, like.dtype).view(-1, 1, 1)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        x0 = (batch["x"] - self.mean) / self.std
        b = x0.shape[0]
        t = torch.randint(1, self.steps + 1, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        a = self.alpha(t, x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        hidden = None
        if self.masker is not None:
            lo, hi = self.ratio
            r = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)  # [B]: per row
            hidden = self.masker(self.layout, b, ratio=r, generator=generator)
        pred = self.denoiser(xt, t.to(x0.device), hidden)
        loss = (pred.float() - x0.float()).pow(2).mean()
        metrics = {"mse": as_metric(loss, loss)}
        if hidden is not None:
            where = part_features(hidden.to(x0.device), x0.shape[1])
            metrics["mse_hidden"] = as_metric((pred - x0).pow(2)[where].mean(), loss)
        return ObjectiveOutput(loss, metrics)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, known: torch.Tensor, *, sample_steps: int = 20, mask_hidden: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x: Float[B, T, F] (values where `known`, Bool[B, T, F], is False are ignored) -> Float[B, T, F]
        with the known features unchanged."""
        x0_known = (x - self.mean) / self.std
        hidden = None
        if mask_hidden:
            tokens = torch.stack([~known[..., list(cols)].any(-1) for cols in BODY_PARTS.values()], 1)  # [B, P, T]
            hidden = tokens.reshape(x.shape[0], -1)
        times = torch.linspace(self.steps, 0, sample_steps + 1).round().long()  # steps .. 0
        xt = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        x0 = x0_known
        for t, prev in zip(times[:-1], times[1:], strict=True):
            tb = t.expand(x.shape[0])
            a, a_prev = self.alpha(tb, x), self.alpha(prev.expand(x.shape[0]), x)
            fresh = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            xt = torch.where(known, a.sqrt() * x0_known + (1 - a).sqrt() * fresh, xt)
            x0 = self.denoiser(xt, tb.to(x.device), hidden)
            eps = (xt - a.sqrt() * x0) / (1 - a).sqrt().clamp(min=1e-6)
            xt = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return torch.where(known, x, x0 * self.std + self.mean)

