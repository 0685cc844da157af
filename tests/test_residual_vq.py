"""Residual VQ (SoundStream): each stage codes what the earlier ones left, exactly, with its nearest code."""

from __future__ import annotations

import pytest
import torch

from unmask.nn import ResidualVQ


def clustered(n: int = 512, dim: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, dim, generator=g) * 3
    return centres[torch.randint(8, (n,), generator=g)] + torch.randn(n, dim, generator=g) * 0.5


def fitted(stages: int = 3, codes: int = 16, dim: int = 4, steps: int = 150) -> tuple[ResidualVQ, torch.Tensor]:
    z = clustered(dim=dim)
    rvq = ResidualVQ(stages, codes, dim, restart_after=8)
    opt = torch.optim.Adam(rvq.parameters(), lr=0.05)
    for step in range(steps):
        loss = rvq(z, generator=torch.Generator().manual_seed(step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rvq.eval(), z


def test_each_stage_codes_the_exact_residual_with_its_nearest_code():
    rvq, z = fitted()
    z = z.view(16, 32, 4)  # any leading shape
    out = rvq(z)
    assert out.indices.shape == (16, 32, 3) and out.indices.dtype == torch.long
    for k in range(3):
        partial = torch.zeros_like(z) if k == 0 else rvq.embed(out.indices[..., :k])
        residual = (z - partial).double()
        codebook = rvq.quantizers[k].codebook.double()
        d2 = ((residual[..., None, :] - codebook) ** 2).sum(-1)  # [16, 32, K]
        chosen = d2.gather(-1, out.indices[..., k:k + 1]).squeeze(-1)
        assert torch.all(chosen <= d2.min(-1).values + 1e-9)  # nearest (ties aside)
    # the output is the sum of the codes bit for bit, and a prefix of stages is its running sum
    assert torch.equal(out.quantized, rvq.embed(out.indices))
    e = [rvq.quantizers[k].codebook[out.indices[..., k]] for k in range(3)]
    assert torch.equal(rvq.embed(out.indices[..., :2]), e[0] + e[1])
    assert torch.equal(rvq.embed(out.indices), (e[0] + e[1]) + e[2])


def test_error_falls_with_stages_on_the_data_it_was_fit_to():
    rvq, z = fitted()
    idx = rvq(z).indices
    with torch.no_grad():
        errors = [float((z - rvq.embed(idx[:, :k])).pow(2).mean()) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0]


def test_loss_is_the_sum_of_stage_losses_and_gradients_pass_straight_through():
    rvq, z = fitted(steps=5)
    # eval mode: no dead-code restart rewrites a codebook between the forward pass and the check
    z = z[:64].clone().requires_grad_(True)
    out = rvq(z)
    expected, partial = 0.0, torch.zeros_like(z)
    for k in range(3):
        code = rvq.quantizers[k].codebook[out.indices[:, k]]
        residual = z - partial
        expected = expected + (1 + rvq.quantizers[k].beta) * (code - residual).pow(2).mean()
        partial = partial + code
    assert torch.allclose(out.loss, expected)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    assert 1 <= float(out.perplexity) <= 16 and 0 < float(out.used_share) <= 1


def test_shapes_are_checked():
    rvq = ResidualVQ(2, 8, 4)
    with pytest.raises(ValueError, match=r"Float\[\.\.\., 4\]"):
        rvq(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="indices"):
        rvq.embed(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="stages"):
        ResidualVQ(0, 8, 4)
