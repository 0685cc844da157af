"""Polyline Path Masked Attention (P67): the fast mask against a walk along every path, its stated
properties, and the attention that uses it."""

from __future__ import annotations

import math

import pytest
import torch

from unmask.nn.polyline_mask import (
    PolylineAttention,
    PolylineDecay,
    polyline_log_mask,
    polyline_mask,
    polyline_transformer,
    segment_log_decay,
)


def walked_mask(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Brute force, one path at a time. a, b: [R, C] horizontal and vertical decays. From key j walk
    column c_j to row r_i, then row r_i to c_i, one unit step at a time; a step between two
    neighbours multiplies the decay of the one further down (vertical) or further right (horizontal)."""
    rows, cols = a.shape
    n = rows * cols
    out = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        ri, ci = divmod(i, cols)
        for j in range(n):
            r, c = divmod(j, cols)
            m = 1.0
            while r != ri:  # vertical leg, along column c_j
                nxt = r + (1 if ri > r else -1)
                m *= float(b[max(r, nxt), c])
                r = nxt
            while c != ci:  # horizontal leg, along row r_i
                nxt = c + (1 if ci > c else -1)
                m *= float(a[r, max(c, nxt)])
                c = nxt
            out[i, j] = m
    return out


def random_decays(rows, cols, batch=2, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, heads, rows, cols, generator=g, dtype=torch.float64) * 0.8 + 0.15
    b = torch.rand(batch, heads, rows, cols, generator=g, dtype=torch.float64) * 0.8 + 0.15
    return a, b


@pytest.mark.parametrize("grid", [(3, 5), (4, 2), (1, 6), (5, 1)])
def test_fast_mask_equals_walking_every_path(grid):
    a, b = random_decays(*grid)
    fast = polyline_mask(a.log(), b.log())  # [B, h, N, N]
    for bi in range(a.shape[0]):
        for h in range(a.shape[1]):
            ref = walked_mask(a[bi, h], b[bi, h])
            torch.testing.assert_close(fast[bi, h], ref, rtol=1e-10, atol=1e-12)


def test_h2v_path_is_the_transpose():
    """The other L-shaped path (along row r_j first, then column c_i) walked directly equals M^T."""
    a, b = random_decays(3, 4, batch=1, heads=1, seed=1)
    rows, cols = 3, 4
    m = polyline_mask(a.log(), b.log())[0, 0]
    for i in range(rows * cols):
        ri, ci = divmod(i, cols)
        for j in range(rows * cols):
            r, c = divmod(j, cols)
            walk = 1.0
            while c != ci:
                nxt = c + (1 if ci > c else -1)
                walk *= float(a[0, 0, r, max(c, nxt)])
                c = nxt
            while r != ri:
                nxt = r + (1 if ri > r else -1)
                walk *= float(b[0, 0, max(r, nxt), c])
                r = nxt
            assert math.isclose(m[j, i].item(), walk, rel_tol=1e-10)


def test_diagonal_is_one_and_values_in_unit_interval():
    a, b = random_decays(4, 3)
    m = polyline_mask(a.log(), b.log())
    torch.testing.assert_close(m.diagonal(dim1=-2, dim2=-1), torch.ones(2, 3, 12, dtype=torch.float64))
    assert (m > 0).all() and (m <= 1).all()
    assert not torch.allclose(m, m.transpose(-1, -2))  # V2H alone is not symmetric in general


def test_constant_decay_gives_manhattan_decay():
    """With one decay g everywhere, M[i, j] = g^(|dr| + |dc|) (RMT's Manhattan mask), both paths."""
    rows, cols, g = 3, 5, 0.7
    log = torch.full((1, 1, rows, cols), math.log(g), dtype=torch.float64)
    m = polyline_mask(log, log)[0, 0]
    r, c = torch.arange(rows * cols) // cols, torch.arange(rows * cols) % cols
    dist = (r[:, None] - r[None, :]).abs() + (c[:, None] - c[None, :]).abs()
    torch.testing.assert_close(m, g ** dist.double())


def test_same_row_is_mamba2_one_d_mask():
    """Tokens of one row: the entry is a_{j+1} ... a_i of that row for j < i (and symmetric)."""
    a, b = random_decays(2, 5, batch=1, heads=1, seed=3)
    m = polyline_mask(a.log(), b.log())[0, 0]
    row = a[0, 0, 1]
    for ci in range(5):
        for cj in range(5):
            lo, hi = min(ci, cj), max(ci, cj)
            expected = torch.prod(row[lo + 1 : hi + 1]).item()
            assert math.isclose(m[5 + ci, 5 + cj].item(), expected, rel_tol=1e-12)


def test_segment_log_decay_is_symmetric_segment_sum():
    x = -torch.rand(2, 6, dtype=torch.float64)
    s = segment_log_decay(x)
    for p in range(6):
        for q in range(6):
            lo, hi = min(p, q), max(p, q)
            torch.testing.assert_close(s[:, p, q], x[:, lo + 1 : hi + 1].sum(-1))


def test_decay_is_input_dependent_per_head_and_in_range():
    torch.manual_seed(0)
    dec = PolylineDecay(dim=8, heads=2)
    x = torch.randn(3, 6, 8)
    log_h, log_v = dec(x, (2, 3))
    assert log_h.shape == log_v.shape == (3, 2, 2, 3)
    assert (log_h <= 0).all() and (log_v <= 0).all()
    assert not torch.allclose(log_h, log_v)  # two directions, two decays
    assert not torch.allclose(log_h[0], log_h[1])  # depends on the input
    with pytest.raises(ValueError, match="grid"):
        dec(x, (2, 2))


def test_attention_matches_reference_and_mask_gets_gradients():
    torch.manual_seed(0)
    att = PolylineAttention(dim=8, heads=2, grid=(2, 3))
    with torch.no_grad():  # decays far from 1, so the mask matters
        att.decay.a_log.fill_(math.log(5.0))
    x = torch.randn(2, 6, 8)
    y = att(x)
    # reference written out: 0.5 softmax(S + log M) + 0.5 softmax(S + log M^T)
    q, k, v = att.qkv(x).view(2, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) / 2.0
    log_m = polyline_log_mask(*att.decay(x, (2, 3)))
    p = 0.5 * torch.softmax(s + log_m, -1) + 0.5 * torch.softmax(s + log_m.transpose(-1, -2), -1)
    ref = att.proj((p @ v).transpose(1, 2).reshape(2, 6, 8))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    plain = super(PolylineAttention, att).forward(x)  # the same weights without the mask
    assert not torch.allclose(y, plain, atol=1e-4)
    y.square().sum().backward()
    assert att.decay.proj.weight.grad.abs().sum() > 0 and att.decay.a_log.grad.abs().sum() > 0


def test_mask_of_ones_is_plain_attention():
    """Decays of exactly 1 (A -> 0) leave the mask all ones: the layer is then plain attention."""
    torch.manual_seed(0)
    att = PolylineAttention(dim=8, heads=2, grid=(3, 2))
    with torch.no_grad():
        att.decay.a_log.fill_(-80.0)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(att(x), super(PolylineAttention, att).forward(x), rtol=1e-5, atol=1e-6)


def test_bool_attn_mask_blocks_keys_on_both_paths():
    """A blocked key gets zero weight on both paths: the output equals the written-out reference with
    -inf at that key, and changing that key's value leaves every output unchanged."""
    torch.manual_seed(0)
    att = PolylineAttention(dim=8, heads=2, grid=(2, 2))
    with torch.no_grad():
        att.decay.a_log.fill_(math.log(3.0))
    x = torch.randn(1, 4, 8)
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[:, 3] = False
    y = att(x, allowed)
    q, k, v = att.qkv(x).view(1, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    s = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~allowed, float("-inf"))
    log_m = polyline_log_mask(*att.decay(x, (2, 2)))
    p = 0.5 * torch.softmax(s + log_m, -1) + 0.5 * torch.softmax(s + log_m.transpose(-1, -2), -1)
    assert (p[..., 3] == 0).all()
    torch.testing.assert_close(y, att.proj((p @ v).transpose(1, 2).reshape(1, 4, 8)), rtol=1e-5, atol=1e-6)


def test_transformer_plugs_in_and_rejects_cache_and_wrong_length():
    torch.manual_seed(0)
    net = polyline_transformer(dim=16, depth=2, heads=4, grid=(2, 4))
    x = torch.randn(3, 8, 16)
    assert net(x).shape == (3, 8, 16)
    with pytest.raises(ValueError, match="grid"):
        net(torch.randn(3, 9, 16))
    with pytest.raises(ValueError, match="whole grid"):
        net(x, only=slice(0, 2))
