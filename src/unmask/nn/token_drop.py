"""Progressive dropping of redundant tokens between Transformer blocks, as in Hybrid Distillation
(Shi et al. 2023, "Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners",
arXiv:2306.15876): before some blocks, the tokens that receive the least attention are dropped, so
that later blocks compute on fewer tokens.

- `keep_counts`: the exact number of tokens entering each block, `round(ratio * n)`, non-increasing;
- `attention_logits`: the scores a block's attention softmaxes, `q k^T / sqrt(d_head)` (SDPA does not
  return them);
- `received_attention`: how much attention each token receives, averaged over heads and queries;
- `keep_most_attended`: the `keep` best-scored positions of each row, in their own order (ties go to
  the earlier position);
- `block_flops`, `encoder_flops`: the multiply-adds x 2 of a pre-norm block, counted, not timed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .transformer import Attention


def keep_counts(tokens: int, ratios: Sequence[float]) -> tuple[int, ...]:
    """The tokens entering each block: `round(r * tokens)` for each ratio r in (0, 1], non-increasing,
    at least 1."""
    if tokens < 1:
        raise ValueError(f"need at least one token, got {tokens}")
    counts = []
    for i, r in enumerate(ratios):
        if not 0.0 < r <= 1.0:
            raise ValueError(f"keep ratio {i} must lie in (0, 1], got {r}")
        counts.append(max(1, round(r * tokens)))
    if any(b > a for a, b in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"keep ratios must not grow from block to block (a dropped token does not come back), "
                         f"got {tuple(ratios)} -> counts {tuple(counts)}")
    return tuple(counts)


def attention_logits(attn: Attention, h: torch.Tensor) -> torch.Tensor:
    """h: Float[B, N, D], the block's normed input -> Float[B, H, N, N], the pre-softmax scores of
    `attn` (its softmax over the last axis is the attention map)."""
    b, n, d = h.shape
    heads = attn.heads
    q, k = attn.qkv(h)[..., : 2 * d].view(b, n, 2, heads, d // heads).permute(2, 0, 3, 1, 4)  # 2 x [B, H, N, D/H]
    return (q.float() @ k.float().transpose(-1, -2)) * (d // heads) ** -0.5


def received_attention(probs: torch.Tensor) -> torch.Tensor:
    """probs: Float[B, H, N, N] attention maps (rows are queries) -> Float[B, N]: the attention each
    token receives, averaged over heads and queries."""
    return probs.mean(dim=(1, 2))


def keep_most_attended(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """scores: Float[B, N] -> Long[B, keep]: the positions of the `keep` highest scores of each row,
    ascending; among equal scores the earlier position is kept."""
    n = scores.shape[1]
    if not 1 <= keep <= n:
        raise ValueError(f"keep must lie in [1, {n}], got {keep}")
    order = scores.argsort(dim=1, descending=True, stable=True)  # [B, N]
    return order[:, :keep].sort(dim=1).values


def block_flops(tokens: int, dim: int, mlp_ratio: float = 4.0) -> int:
    """Floating-point operations (2 per multiply-add) of one pre-norm block on `tokens` tokens: the
    qkv, output and MLP matrices (2 n D^2 (4 + 2 mlp_ratio)) and the two attention products (4 n^2 D);
    norms, softmax and biases left out."""
    hidden = int(dim * mlp_ratio)
    return 2 * tokens * dim * (4 * dim + 2 * hidden) + 4 * tokens * tokens * dim


def encoder_flops(counts: Sequence[int], dim: int, mlp_ratio: float = 4.0) -> int:
    """The blocks' FLOPs when block i reads counts[i] tokens."""
    return sum(block_flops(n, dim, mlp_ratio) for n in counts)
