"""Quantizers that turn a continuous vector into one discrete code, for tokenizers of any modality.

- `VectorQuantizer`: VQ-VAE (van den Oord, Vinyals, Kavukcuoglu 2017, "Neural Discrete
  Representation Learning", arXiv:1711.00937): each vector z is replaced by its nearest codebook
  entry e_k (squared L2), gradients pass straight through from e_k to z, and the codebook learns from
  ||sg[z] - e||^2 while the encoder is held to its codes by beta ||z - sg[e]||^2. Codes that go
  unused for `restart_after` training passes are re-drawn from the current batch's encoder outputs
  (random restarts, as in Jukebox: Dhariwal et al. 2020, arXiv:2005.00341), so the codebook does not
  collapse to a few entries.
- `FSQ`: finite scalar quantization (Mentzer, Minnen, Agustsson, Tschannen 2023, "Finite Scalar
  Quantization: VQ-VAE Made Simple", arXiv:2309.15505): bound each of d channels so that rounding
  leaves exactly levels[i] integer values, round with a straight-through gradient; the code is the
  mixed-radix number of the d digits. The codebook is implicit (prod(levels) codes), nothing is
  learned and there is no loss term, so no code can die.

Both map z: Float[..., D] (channels last) to a `Quantized` (codes Long[...]) and back
(`indices_to_codes` / `embed`). The straight-through estimator is written q + (z - sg[z]) rather
than z + sg[q - z]: the gradient is the same (identity), and the value is q exactly, bit for bit, so
decoding a token gives the same tensor as the forward pass that produced it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Quantized(NamedTuple):
    quantized: torch.Tensor  # Float[..., D]: the code vectors, straight-through to z
    indices: torch.Tensor  # Long[...]: the codes
    loss: torch.Tensor  # scalar: VQ's codebook + commitment loss; 0 for FSQ
    perplexity: torch.Tensor  # 0-dim: exp(entropy of the batch's code histogram), in [1, codes]
    used_share: torch.Tensor  # 0-dim: share of the codebook used at least once in the batch


def straight_through(value: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """`value` forward, identity gradient to `z` backward (z + sg[value - z], with value exact)."""
    return value.detach() + (z - z.detach())


def usage(indices: torch.Tensor, codes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """indices: Long[...] -> (counts Float[codes], perplexity, used share), on the device. Counts by
    index_add (bincount on CUDA reads the largest index back to the host to size its output)."""
    flat = indices.reshape(-1)
    counts = torch.zeros(codes, device=flat.device).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float))
    return (counts, *usage_stats(counts))


def usage_stats(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """counts: Float[K] -> (perplexity exp(-sum p log p), share of the K codes with a count > 0)."""
    p = counts / counts.sum().clamp(min=1.0)
    perplexity = torch.exp(-torch.special.xlogy(p, p).sum())  # xlogy: 0 log 0 = 0
    return perplexity, (counts > 0).float().mean()


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VectorQuantizer(nn.Module):
    """VQ-VAE's codebook of `codes` vectors of size `dim`.

    forward(z: Float[..., dim], generator=None) -> Quantized(quantized Float[..., dim], indices Long[...],
    loss, perplexity, used_share). `loss` = mean ||sg[z] - e||^2 + beta mean ||z - sg[e]||^2 (means
    over every value, as F.mse_loss), to be added to the reconstruction loss.

    Dead-code restarts (training mode only; `restart_after=0` turns them off): the buffer `idle` counts,
    for each code, the training forward passes since it was last chosen (a step of M micro-batches
    counts M). A code idle for `restart_after` passes or more is replaced, before the batch is
    quantized, by an encoder output of the batch drawn at random (without replacement when the batch
    has enough), and its count starts again. A code never used counts as idle from the start, so the
    first training pass draws the whole codebook from encoder outputs (a data-dependent start, like
    SoundStream's k-means one, Zeghidour et al. 2021, arXiv:2107.03312). Draws use `generator` (a CPU
    generator; the trainer passes one per step and micro-batch), else the quantizer's own, seeded by
    `seed` (its state is not saved: only the trainer's generators make a resumed run draw the same).
    Every step is decided on the device: nothing is read back to the host.

    Under torch.distributed (DDP) each pass all-reduces the batch's code counts, so every rank holds the
    same `idle`, and broadcasts rank 0's drawn replacements, so every rank's codebook stays the same.
    Every rank must therefore call forward the same number of times in training mode (the trainer's
    micro-batches do). Restarts rewrite the codebook in place, which needs whole, replicated weights:
    one process or DDP (an FSDP-sharded codebook would lose them).
    """

    def __init__(self, codes: int, dim: int, beta: float = 0.25, restart_after: int = 32, seed: int = 0):
        super().__init__()
        if codes < 2:
            raise ValueError(f"codes must be >= 2, got {codes}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 turns restarts off), got {restart_after}")
        self.codes, self.dim, self.beta, self.restart_after = codes, dim, beta, restart_after
        self.codebook = nn.Parameter(torch.empty(codes, dim).uniform_(-1.0 / codes, 1.0 / codes))
        self.register_buffer("idle", torch.full((codes,), restart_after, dtype=torch.long))
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def codebook_size(self) -> int:
        return self.codes

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat: Float[N, dim] -> Long[N], the nearest code by squared L2, ||z||^2 - 2 z.e + ||e||^2, as
        an [N, K] matrix (never [N, K, D]), in float32 even under autocast: bf16 would round close
        distances together. ||z||^2 is the same for every code of a row, so the argmin leaves it out
        (adding it would only round the differences that decide)."""
        with torch.autocast(flat.device.type, enabled=False):
            z, e = flat.float(), self.codebook.float()
            d2 = torch.addmm(e.pow(2).sum(1).unsqueeze(0), z, e.t(), alpha=-2.0)  # [N, K]: ||e||^2 - 2 z.e
        return d2.argmin(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Long[...] -> Float[..., dim]: the codebook vectors."""
        return F.embedding(indices, self.codebook)

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, generator: torch.Generator | None) -> None:
        """Replace every code idle for `restart_after` passes by a random row of flat: Float[N, dim]."""
        n = flat.shape[0]
        g = generator if generator is not None else self.generator
        pick = torch.randperm(n, generator=g)[: self.codes] if n >= self.codes \
            else torch.randint(n, (self.codes,), generator=g)
        fresh = flat[pick.to(flat.device, non_blocking=True)].to(self.codebook.dtype)  # [K, dim]
        if distributed():
            dist.broadcast(fresh, src=0)
        dead = self.idle >= self.restart_after  # [K], decided on the device, the same on every rank
        self.codebook.copy_(torch.where(dead.unsqueeze(1), fresh, self.codebook))
        self.idle.masked_fill_(dead, 0)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must be Float[..., {self.dim}], got shape {tuple(z.shape)}")
        flat = z.reshape(-1, self.dim)  # [N, D]
        restarting = self.training and self.restart_after > 0
        if restarting:
            self.restart_dead(flat.detach(), generator)
        indices = self.nearest(flat.detach())  # [N]
        e = self.indices_to_codes(indices).to(z.dtype)  # [N, D]
        loss = F.mse_loss(e, flat.detach()) + self.beta * F.mse_loss(flat, e.detach())
        counts, perplexity, used = usage(indices, self.codes)
        if restarting:
            with torch.no_grad():
                if distributed():
                    dist.all_reduce(counts)
                self.idle.copy_(torch.where(counts > 0, 0, self.idle + 1))
        quantized = straight_through(e, flat).view(z.shape)
        return Quantized(quantized, indices.view(z.shape[:-1]), loss, perplexity.detach(), used.detach())


class FSQ(nn.Module):
    """Finite scalar quantization over d = len(levels) channels.

    Channel i is bounded by f(z) = tanh(z + s) * h - o, with h = (L - 1)(1 - eps) / 2, o = 1/2 for even
    L (0 for odd) and s = tan(o / h), so that round(f(z)) takes exactly the L integers
    -floor(L/2) .. ceil(L/2) - 1: the paper's `bound` (its Appendix A code, eps = 1e-3). The shift s
    moves f(0) near 0 for even L (atanh(o / h) would put it at 0 exactly, but is undefined for L = 2,
    where o > h). The rounded value is divided by floor(L/2), so codes lie in [-1, 1]. Rounding passes
    gradients straight through.

    forward(z: Float[..., d]) -> Quantized(quantized Float[..., d], indices Long[...] in
    [0, prod(levels)), loss 0, perplexity, used_share). The index is the mixed-radix number of the
    digits round(f(z)) + floor(L/2) in [0, L), channel 0 the least significant.
    """

    EPS = 1e-3  # the paper's: keeps f strictly inside (-h - o, h - o), so round never reaches an L+1-th value

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        levels = tuple(levels)
        if not levels or any(not isinstance(n, int) or n < 2 for n in levels):
            raise ValueError(f"levels must be a non-empty tuple of integers >= 2, got {levels}")
        self.levels = levels
        self.dim = len(levels)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        self.register_buffer("_half", torch.tensor([n // 2 for n in levels], dtype=torch.float), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Float[..., d] -> Float[..., d]: channel i in (-floor(L/2) - 1/2, ceil(L/2) - 1/2)."""
        levels = self._levels.float()
        half_l = (levels - 1) * (1 - self.EPS) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.tan(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Float[..., d] (values k / floor(L/2)) -> Long[...] in [0, prod(levels))."""
        digits = torch.round(codes.float() * self._half + self._half).long()  # round: k/3*3 may miss k
        return (digits * self._basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Long[...] -> Float[..., d]: the exact inverse of `codes_to_indices` on quantized values."""
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels
        return (digits.float() - self._half) / self._half

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        """`generator` is unused (FSQ draws nothing); it is accepted so quantizers are interchangeable."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must be Float[..., {self.dim}] (one channel per level), got shape {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            bounded = self.bound(z.float())
            rounded = straight_through(torch.round(bounded), bounded)
            codes = rounded / self._half
        indices = self.codes_to_indices(codes.detach())
        _, perplexity, used = usage(indices, self.codebook_size)
        return Quantized(codes, indices, codes.new_zeros(()), perplexity, used)


class ResidualVQ(nn.Module):
    """Residual vector quantization (SoundStream: Zeghidour, Luebs, Omran, Skoglund, Tagliasacchi 2021,
    "SoundStream: An End-to-End Neural Audio Codec", arXiv:2107.03312): stage k quantizes, with its own
    `VectorQuantizer`, the residual that stages 0..k-1 left, so each added stage refines the code.

    Stage k sees r_k = z - p_k, where p_k = ((e_0 + e_1) + ...) + e_{k-1} is the running sum of the
    chosen code vectors (p_0 = 0), and picks e_k = its nearest code to r_k. `embed` adds the codes in
    the same order, so `embed(indices[..., :k])` is p_k bit for bit and z - embed(indices[..., :k]) is
    exactly what stage k quantized. Earlier codes enter later residuals detached: stage k's commitment
    term pulls the encoder towards p_k + e_k, not earlier codebooks towards later residuals.

    forward(z: Float[..., dim], generator=None) -> Quantized(quantized Float[..., dim] = p_stages,
    straight through to z; indices Long[..., stages]; loss = the sum of the stages' VQ losses;
    perplexity and used_share = their means over the stages). Dead-code restarts are each stage's own
    (`VectorQuantizer`), drawn from that stage's residuals, one after another from `generator`.
    """

    def __init__(self, stages: int, codes: int, dim: int, beta: float = 0.25, restart_after: int = 32,
                 seed: int = 0):
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        self.stages, self.codes, self.dim = stages, codes, dim
        self.quantizers = nn.ModuleList(VectorQuantizer(codes, dim, beta, restart_after, seed + k)
                                        for k in range(stages))

    @property
    def codebook_size(self) -> int:
        """Codes per stage."""
        return self.codes

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Long[..., s] (the first s <= stages stages) -> Float[..., dim]: the sum of their code vectors."""
        if not 1 <= indices.shape[-1] <= self.stages:
            raise ValueError(f"indices must be Long[..., s] with 1 <= s <= {self.stages}, got shape "
                             f"{tuple(indices.shape)}")
        total = self.quantizers[0].indices_to_codes(indices[..., 0])
        for k in range(1, indices.shape[-1]):
            total = total + self.quantizers[k].indices_to_codes(indices[..., k])
        return total

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must be Float[..., {self.dim}], got shape {tuple(z.shape)}")
        partial = None  # p_k, detached
        indices, losses, perplexities, used = [], [], [], []
        for vq in self.quantizers:
            residual = z if partial is None else z - partial
            out = vq(residual, generator=generator)
            code = out.quantized.detach()  # = e_k exactly: straight_through's value is the code
            partial = code if partial is None else partial + code
            indices.append(out.indices)
            losses.append(out.loss)
            perplexities.append(out.perplexity)
            used.append(out.used_share)
        return Quantized(straight_through(partial, z), torch.stack(indices, dim=-1), torch.stack(losses).sum(),
                         torch.stack(perplexities).mean(), torch.stack(used).mean())
