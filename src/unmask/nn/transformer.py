"""A pre-norm Transformer on `scaled_dot_product_attention` (Vaswani et al. 2017; pre-norm as in
GPT-2 / ViT). Model code for one device: parallelism is applied from outside (`train/`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`scaled_dot_product_attention`, in float32 on a CPU when the inputs are half precision or
    CPU autocast is on; the output keeps the inputs' dtype. PyTorch's CPU flash-attention backward
    in bf16 is 5-6x slower than in float32 at the lengths of our models (17 and 65 tokens: 8.1 vs
    1.6 ms and 23.5 vs 6.7 ms forward + backward, batch 64, 2 threads), so bf16 training on a CPU
    runs its matrix products in bf16 and attention, a small share of the FLOPs, in float32. On a
    GPU nothing changes."""
    if q.device.type == "cpu" and (q.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None, kv_out: list | None = None,
                past_at: torch.Tensor | None = None, past_rows: torch.Tensor | None = None) -> torch.Tensor:
        """past: (k, v), each [B, H, M, D/H], keys and values placed before x's own (attn_mask then
        covers M + N keys), or, with `past_at` (Long[B, N]: the place of each of x's positions in
        past), written into past there (in place; only in the rows where `past_rows`, Bool[B], is
        True) and attended to alone. kv_out: a list that receives this layer's own (k, v) [B, H, N, D/H]."""
        b, n, d = x.shape
        # [B, N, 3D] -> 3 x [B, H, N, D/H]
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if kv_out is not None:
            kv_out.append((k, v))
        if past is not None and past_at is not None:
            at = past_at[:, None, :, None].expand(-1, self.heads, -1, d // self.heads)
            keep = None if past_rows is None else past_rows[:, None, None, None]
            for cached, fresh in zip(past, (k, v), strict=True):
                cached.scatter_(2, at, fresh if keep is None else torch.where(keep, fresh, cached.gather(2, at)))
            k, v = past
        elif past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = attention(q, k, v, attn_mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def attend(self, queries: torch.Tensor, context: torch.Tensor,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Queries from one stream, keys and values from another, with this layer's weights.
        queries: [B, M, D], context: [B, N, D] -> [B, M, D]; `attend(x, x)` equals `forward(x)`."""
        b, m, d = queries.shape
        n, h = context.shape[1], self.heads
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(queries, w[:d], bias[:d]).view(b, m, h, d // h).transpose(1, 2)  # [B, H, M, D/H]
        kv = F.linear(context, w[d:], bias[d:]).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x [B, H, N, D/H]
        y = attention(q, kv[0], kv[1], attn_mask)
        return self.proj(y.transpose(1, 2).reshape(b, m, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None, kv_out: list | None = None,
                past_at: torch.Tensor | None = None, past_rows: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask, past, kv_out, past_at, past_rows)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """`depth` pre-norm blocks and a final LayerNorm. x: [B, N, D] -> [B, N, D].

    attn_mask: optional Bool (True = may attend) or additive float mask, broadcastable to
    [B, heads, N, N].

    Cached keys and values (for decoders that re-read only some positions, ReCAP P22, ENAT P20):
    `keep_kv` (Long[B, M]) also returns, per layer, the (k, v) [B, heads, M, D/heads] of those
    positions of x; `past` (one (k, v) [B, heads, M', D/heads] per layer) adds keys and values that
    x attends to besides its own, placed first, so attn_mask then covers [B, heads, N, M' + N].
    Reading all N positions with `keep_kv` and then some of them with `past` = the kept K/V of the
    others gives the same output at those positions as the full forward, while nothing changed.
    With `past_at` (Long[B, M]: where x's positions lie among past's), x's fresh keys and values are
    written into `past` at those places, in place, at every layer, and x attends to past alone: the
    same result without a second copy of the keys, and the cache is left updated (`past_rows`,
    Bool[B], limits the writes to some rows).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, *,
                past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                keep_kv: torch.Tensor | None = None, only: torch.Tensor | slice | None = None,
                past_at: torch.Tensor | None = None, past_rows: torch.Tensor | None = None):
        """`only` (Long[B, M], or a `slice` of positions): return [B, M, D], the outputs at those
        positions alone; the last block then computes its queries, MLP and norms there only (keys and
        values still come from every position), which is the same result for less work when a loss
        reads a few positions. A slice (e.g. the last M positions) costs no gather at all."""
        if past is not None and len(past) != len(self.blocks):
            raise ValueError(f"past holds K/V for {len(past)} layers; this Transformer has {len(self.blocks)}")
        if only is not None:
            if past is not None or keep_kv is not None:
                raise ValueError("`only` does not combine with past or keep_kv")
            if not self.blocks:
                return self.norm(_rows(x, only))
            *first, last = self.blocks
            for block in first:
                x = block(x, attn_mask)
            h = last.norm1(x)
            y = _rows(x, only) + last.attn.attend(_rows(h, only), h, _mask_rows(attn_mask, only))
            return self.norm(y + last.mlp(last.norm2(y)))
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, block in enumerate(self.blocks):
            fresh: list | None = [] if keep_kv is not None else None
            x = block(x, attn_mask, None if past is None else past[i], fresh, past_at, past_rows)
            if fresh:
                kept.append(tuple(t.gather(2, _head_index(keep_kv, t)) for t in fresh[0]))
        x = self.norm(x)
        return x if keep_kv is None else (x, kept)


def _rows(x: torch.Tensor, ids: torch.Tensor | slice) -> torch.Tensor:
    """x: [B, N, D], ids: Long[B, M] or a slice -> [B, M, D]."""
    if isinstance(ids, slice):
        return x[:, ids]
    return x.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _mask_rows(attn_mask: torch.Tensor | None, ids: torch.Tensor | slice) -> torch.Tensor | None:
    """The query rows `ids` of an attention mask broadcastable to [B, H, N, N]."""
    if attn_mask is None:
        return None
    if attn_mask.ndim < 2 or attn_mask.shape[-2] == 1:
        return attn_mask  # the same for every query
    if isinstance(ids, slice):
        return attn_mask[..., ids, :]
    m = attn_mask if attn_mask.ndim == 4 else attn_mask.reshape(1, 1, *attn_mask.shape[-2:]) if attn_mask.ndim == 2 \
        else attn_mask.unsqueeze(1)
    m = m.expand(ids.shape[0], m.shape[1], *m.shape[2:])
    index = ids.view(ids.shape[0], 1, -1, 1).expand(-1, m.shape[1], -1, m.shape[-1])
    return m.gather(2, index)


def _head_index(index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Long[B, M] positions -> an index that gathers them from [B, H, N, Dh] along N."""
    b, h, _, dh = t.shape
    return index.view(b, 1, -1, 1).expand(b, h, index.shape[1], dh)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linears and embeddings, zero biases, unit LayerNorms (BERT, MAE)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
