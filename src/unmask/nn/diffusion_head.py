"""The per-token diffusion head of MAR (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization", arXiv:2406.11838): a small MLP models p(x | z) for one continuous token x given the
condition vector z that the transformer computed for its place, trained with a denoising loss, so
tokens need no codebook.

- Noise schedule: improved DDPM's cosine schedule (Nichol & Dhariwal 2021) over T = 1000 steps,
  beta_t = min(1 - f((t + 1) / T) / f(t / T), 0.999) with f(s) = cos((s + 0.008) / 1.008 * pi / 2)^2,
  so alpha-bar_t = f((t + 1) / T) / f(0) for every t but the last (where the clip acts).
- Loss: epsilon prediction, ||eps - net(sqrt(a_t) x + sqrt(1 - a_t) eps, t, z)||^2 averaged over the
  token's channels, t uniform in {0, ..., T - 1}.
- Network (`AdaLNMLP`, MAR's `SimpleMLPAdaLN`): input projection, residual blocks of LayerNorm ->
  shift/scale -> MLP -> gate, where shift, scale and gate are a linear map of (embedding of t +
  projection of z) ("adaLN", as DiT); a final adaLN layer; modulations and the output start at zero.
- Sampling: DDPM ancestral steps on `steps` timesteps spaced evenly over the T (improved DDPM's
  respacing), the noise of each step scaled by `temperature` (MAR's temperature); optionally the x0
  estimate clamped to [-clip, clip] (improved DDPM's `clip_denoised`, off in MAR).

Differences from MAR's `diffloss.py`: the variance is fixed to the posterior one (DDPM's "fixed
small"), where MAR learns it with an extra variational-bound term; one network width for all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

COSINE_OFFSET = 0.008  # improved DDPM's s, keeps beta_0 from being vanishingly small
MAX_BETA = 0.999  # improved DDPM clips beta so the last step is not a division by zero


def cosine_alpha_bar(steps: int = 1000) -> torch.Tensor:
    """Float64[T]: alpha-bar_t = prod_{i <= t} (1 - beta_i) of improved DDPM's cosine schedule."""
    if steps < 2:
        raise ValueError(f"a noise schedule needs >= 2 steps, got {steps}")
    s = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((s + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    return torch.cumprod(1 - betas, dim=0)


def spaced_timesteps(total: int, steps: int) -> torch.Tensor:
    """Long[S]: `steps` of the `total` training timesteps, evenly spaced from 0 to total - 1 and rounded
    (improved DDPM's `space_timesteps` with one section)."""
    if not 1 <= steps <= total:
        raise ValueError(f"sampling steps must lie in [1, {total}], got {steps}")
    if steps == 1:
        return torch.tensor([total - 1])
    stride = (total - 1) / (steps - 1)
    return torch.tensor([round(i * stride) for i in range(steps)], dtype=torch.long)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Long or Float[R] -> Float[R, dim]: cosines then sines of t at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)), with (shift, scale, gate) = Linear(SiLU(y))."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class AdaLNMLP(nn.Module):
    """eps = net(x_t: Float[R, C], t: Long[R], z: Float[R, Dz]) -> Float[R, C]."""

    def __init__(self, channels: int, cond_dim: int, width: int = 128, depth: int = 3, freq_dim: int = 256):
        super().__init__()
        if min(channels, cond_dim, width, depth, freq_dim) < 1:
            raise ValueError(f"channels, cond_dim, width, depth and freq_dim must be >= 1, got "
                             f"{channels}, {cond_dim}, {width}, {depth}, {freq_dim}")
        self.freq_dim = freq_dim
        self.time = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.inp = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, channels)
        self._init()

    def _init(self) -> None:
        """MAR's: xavier linears, N(0, 0.02) time MLP, zero modulations and output (each block starts
        as the identity and the first prediction is eps = 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.time[0], self.time[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in [b.modulation[-1] for b in self.blocks] + [self.final_modulation[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = self.time(timestep_embedding(t, self.freq_dim).to(x.dtype)) + self.cond(z)  # [R, W]
        h = self.inp(x)  # [R, W]
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_modulation(y).chunk(2, dim=-1)
        return self.out(modulate(self.final_norm(h), shift, scale))


def _noise(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal draws from `generator` (host generators draw on the host, then move)."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device, dtype)


@torch.no_grad()
def ddpm_sample(eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape, alpha_bar: torch.Tensor,
                steps: int, *, temperature: float = 1.0, clip: float | None = None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Ancestral DDPM sampling on `steps` evenly spaced timesteps of `alpha_bar` (Float64[T]).

    eps(x_t: Float[R, C], t: Long[R]) -> Float[R, C] (the timesteps passed are the original ones,
    0..T-1). Each step: x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t); x_{t'} = posterior mean of (x0,
    x_t) + temperature * sqrt(posterior variance) * noise, no noise at the last step. `clip` clamps each
    x0 estimate to [-clip, clip] (improved DDPM's `clip_denoised`; MAR leaves it off): at the first step
    sqrt(a_t) is about 5e-5, so an eps error of 0.01 puts x0 at 200, which a net trained briefly
    then cannot bring back. Returns Float[R, C] (`shape`)."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be None or > 0, got {clip}")
    ts = spaced_timesteps(len(alpha_bar), steps)
    a = alpha_bar.cpu()[ts]  # [S] alpha-bar at the kept timesteps
    prev = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
    beta = 1 - a / prev  # the respaced betas
    var = beta * (1 - prev) / (1 - a)  # posterior variance, 0 at the first kept step
    coef_x0 = beta * prev.sqrt() / (1 - a)
    coef_xt = (1 - prev) * (1 - beta).sqrt() / (1 - a)
    x = _noise(shape, generator, device, dtype)
    for i in reversed(range(len(ts))):
        t = torch.full(shape[:1], int(ts[i]), dtype=torch.long, device=x.device)
        e = eps(x, t)
        x0 = (x - math.sqrt(1 - a[i]) * e) / math.sqrt(a[i])
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        x = float(coef_x0[i]) * x0 + float(coef_xt[i]) * x
        if i > 0 and temperature > 0:
            x = x + temperature * math.sqrt(var[i]) * _noise(shape, generator, x.device, dtype)
    return x


class DiffusionHead(nn.Module):
    """MAR's diffusion loss: `loss(x, z)` trains p(x | z), `sample(z)` draws from it.

    x: Float[R, C] continuous tokens; z: Float[R, Dz] their conditions."""

    def __init__(self, channels: int, cond_dim: int, width: int = 128, depth: int = 3, timesteps: int = 1000,
                 sampling_steps: int = 50):
        super().__init__()
        self.channels = channels
        self.net = AdaLNMLP(channels, cond_dim, width, depth)
        self.register_buffer("alpha_bar", cosine_alpha_bar(timesteps), persistent=False)
        spaced_timesteps(timesteps, sampling_steps)  # checks the range now, not at the first sample
        self.sampling_steps = sampling_steps

    @property
    def timesteps(self) -> int:
        return len(self.alpha_bar)

    def noised(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x + sqrt(1 - a_t) noise. x, noise: Float[R, C]; t: Long[R]."""
        a = self.alpha_bar[t].unsqueeze(-1)  # [R, 1] float64
        return (a.sqrt() * x.double() + (1 - a).sqrt() * noise.double()).to(x.dtype)

    def loss(self, x: torch.Tensor, z: torch.Tensor, *, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Float[R]: each token's epsilon-prediction error, mean over its C channels. t (Long[R]) and
        noise (Float[R, C]) are drawn from `generator` unless given."""
        if x.ndim != 2 or x.shape[-1] != self.channels or z.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"x must be [R, {self.channels}] and z [R, Dz], got {tuple(x.shape)}, {tuple(z.shape)}")
        if t is None:
            where = generator.device if generator is not None else x.device
            t = torch.randint(self.timesteps, x.shape[:1], generator=generator, device=where).to(x.device)
        if noise is None:
            noise = _noise(x.shape, generator, x.device, x.dtype)
        pred = self.net(self.noised(x, t, noise), t, z)
        return (pred.float() - noise.float()).pow(2).mean(-1)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None,
               steps: int | None = None, clip: float | None = None) -> torch.Tensor:
        """z: Float[R, Dz] -> Float[R, C], one draw of each token (`ddpm_sample`)."""
        return ddpm_sample(lambda x, t: self.net(x, t, z), (z.shape[0], self.channels), self.alpha_bar,
                           steps or self.sampling_steps, temperature=temperature, clip=clip, generator=generator,
                           device=z.device, dtype=z.dtype)
