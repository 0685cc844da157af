"""Polyline Path Masked Attention (PPMA; Zhao et al. 2025, "Polyline Path Masked Attention for Vision
Transformer", arXiv:2506.15940): the attention between two grid tokens is weighted by the product of
per-token decays along an L-shaped path between them, Mamba2's structured (semiseparable) mask carried
from a 1-D scan to the 2-D grid, so attention carries an explicit, learned prior of spatial adjacency.

The rule, as in the authors' code (zhongchenzhao/PPMA, `PathEmbeding2D` and `MambaAttentionAllDouble`):
- Decays are input-dependent: each token t and head h gets a horizontal decay a_h(t) and a vertical
  one b_h(t) in (0, 1], log a = -softplus(w_a . x_h(t) + bias_h) * exp(A_log_h), the same for b with
  w_b; x_h(t) is head h's slice of the (normed) block input, (w_a, w_b) is one linear map shared by
  the heads, bias_h and A_log_h are learned per head (Mamba2's dt and A).
- A unit step between two row neighbours carries the horizontal decay of the one further right; a
  step between two column neighbours, the vertical decay of the one further down. On a line this is
  Mamba2's mask L[i, j] = a_{j+1} ... a_i, made symmetric: L[j, i] = L[i, j].
- The polyline path mask M[i, j] (query i = (r_i, c_i), key j = (r_j, c_j)) is the product of the
  steps of the path from j vertically along column c_j to row r_i, then horizontally along row r_i
  to c_i (V2H). The other L-shaped path (horizontal first, H2V) gives exactly M^T.
- Attention: 0.5 softmax(S + log M) + 0.5 softmax(S + log M^T), S = q k^T / sqrt(d): the masked
  scores exp(S) * M renormalised per row, averaged over the two paths. The paper writes the mask as a
  product with the attention map; the code (followed here) renormalises it inside the softmax.

Efficient computation: log M splits into a row term and a column term,
log M[(r_i, c_i), (r_j, c_j)] = R[r_i; c_i, c_j] + C[c_j; r_i, r_j], where R and C are the 1-D
symmetric segment sums of each row's and column's log decays (cumulative sums). The factors cost
O(H W^2 + W H^2) and the mask one broadcast sum, O(N^2), instead of O(N^2 (H + W)) for walking every
path. Both paths then run through `scaled_dot_product_attention` with an additive float mask.

    einops legend: b batch, h heads, r c grid row and column, i query, j key
    log M: b h (r_i c_i) (r_j c_j) = R[b h r_i c_i c_j] + C[b h c_j r_i r_j]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Attention, Transformer, attention


def segment_log_decay(log_decay: torch.Tensor) -> torch.Tensor:
    """The symmetric 1-D structured mask in log space: log_decay [..., L] -> [..., L, L] with
    out[p, q] = sum of log_decay[k] for min(p, q) < k <= max(p, q) (0 on the diagonal)."""
    c = log_decay.cumsum(-1)
    diff = c[..., :, None] - c[..., None, :]  # [..., L, L]: sum over (q, p] where p >= q
    below = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    return torch.where(below, diff, diff.transpose(-1, -2))


def polyline_log_mask(log_h: torch.Tensor, log_v: torch.Tensor) -> torch.Tensor:
    """log M of the V2H polyline path mask.

    log_h, log_v: Float[B, heads, R, C], each token's log horizontal and log vertical decay (<= 0).
    Returns Float[B, heads, N, N], N = R * C row-major: entry (i, j) is the sum of the step log
    decays from key j down/up column c_j to row r_i, then along row r_i to c_i."""
    if log_h.shape != log_v.shape or log_h.ndim != 4:
        raise ValueError(f"log_h and log_v must both be [B, heads, R, C], got {tuple(log_h.shape)} and "
                         f"{tuple(log_v.shape)}")
    b, h, rows, cols = log_h.shape
    row = segment_log_decay(log_h)  # [B, h, R, C_i, C_j]: along row r
    col = segment_log_decay(log_v.transpose(-1, -2))  # [B, h, C, R_i, R_j]: along column c
    col = col.permute(0, 1, 3, 4, 2)  # [B, h, R_i, R_j, C_j]
    out = row[:, :, :, :, None, :] + col[:, :, :, None, :, :]  # [B, h, R_i, C_i, R_j, C_j]
    return out.reshape(b, h, rows * cols, rows * cols)


def polyline_mask(log_h: torch.Tensor, log_v: torch.Tensor) -> torch.Tensor:
    """M = exp(log M) (V2H), Float[B, heads, N, N] in (0, 1], 1 on the diagonal; H2V is its transpose."""
    return polyline_log_mask(log_h, log_v).exp()


class PolylineDecay(nn.Module):
    """x: Float[B, R*C, D] -> (log_h, log_v), each Float[B, heads, R, C], <= 0.

    Initialised as the authors' code: dt = exp(U(log 1e-3, log 1e-1)) per head, bias = softplus^-1(dt),
    A = U(1, 1.1), so every decay starts near 1 (0.9 to 0.999 per step) and the mask near all ones."""

    def __init__(self, dim: int, heads: int, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 a_range: tuple[float, float] = (1.0, 1.1)):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if not 0 < a_range[0] <= a_range[1]:
            raise ValueError(f"need 0 < a_range[0] <= a_range[1], got {a_range}")
        self.heads = heads
        self.proj = nn.Linear(dim // heads, 2, bias=False)  # shared by the heads: (horizontal, vertical)
        dt = torch.exp(torch.rand(heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        self.a_log = nn.Parameter(torch.empty(heads).uniform_(*a_range).log())

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        rows, cols = grid
        if n != rows * cols:
            raise ValueError(f"{n} tokens do not fill a {rows}x{cols} grid")
        dt = self.proj(x.view(b, n, self.heads, d // self.heads))  # [B, N, h, 2]
        log = -F.softplus(dt + self.dt_bias[:, None]) * self.a_log.exp()[:, None]  # [B, N, h, 2]
        log = log.permute(0, 2, 3, 1).reshape(b, self.heads, 2, rows, cols)  # [B, h, 2, R, C]
        return log[:, :, 0], log[:, :, 1]


class PolylineAttention(Attention):
    """Multi-head self-attention over a row-major R x C grid of tokens with the polyline path mask.
    Same q/k/v and output weights as `Attention`, plus a `PolylineDecay`. x: [B, R*C, D] -> [B, R*C, D].

    `attn_mask` (Bool, True = may attend, or additive float, broadcastable to [B, heads, N, N]) is
    added to both paths' scores. The K/V cache options of `Attention` do not apply: the mask depends on
    the whole grid."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int]):
        super().__init__(dim, heads)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (rows, columns) >= 1, got {grid}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.decay = PolylineDecay(dim, heads)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, past=None, kv_out=None,
                past_at=None, past_rows=None) -> torch.Tensor:
        if past is not None or kv_out is not None or past_at is not None:
            raise ValueError("polyline attention has no K/V cache: its mask depends on the whole grid")
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, h, N, d/h]
        log_m = polyline_log_mask(*self.decay(x, self.grid)).to(q.dtype)  # [B, h, N, N]
        if attn_mask is not None:
            extra = attn_mask if attn_mask.is_floating_point() else \
                torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
            v2h, h2v = log_m + extra, log_m.transpose(-1, -2) + extra
        else:
            v2h, h2v = log_m, log_m.transpose(-1, -2)
        y = 0.5 * attention(q, k, v, v2h) + 0.5 * attention(q, k, v, h2v)  # [B, h, N, d/h]
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def attend(self, queries, context, attn_mask=None):
        raise ValueError("polyline attention reads the whole grid as queries; call the Transformer without `only`")


def polyline_transformer(dim: int, depth: int, heads: int, grid: tuple[int, int],
                         mlp_ratio: float = 4.0) -> Transformer:
    """The project's `Transformer` with every block's attention replaced by `PolylineAttention` on
    `grid` (rows, columns); inputs must be exactly the R*C grid tokens, row-major (no class token)."""
    net = Transformer(dim, depth, heads, mlp_ratio)
    for block in net.blocks:
        block.attn = PolylineAttention(dim, heads, grid)
    return net
