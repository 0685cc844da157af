"""DeBERTa's enhanced mask decoder (He et al. 2021, P10): absolute positions enter again just before
the token prediction, as the queries of extra decoding passes over the encoder's states.

The encoder runs all but its last block, giving H ([B, N, D]). The decoder starts from the queries
I = H + P (P: the absolute position embeddings) and applies the last block `emd_layers` times
(DeBERTa: 2), sharing its weights: each pass attends from I to H (keys and values are always H) and
its output is the next pass's I. Only the positions the loss reads need queries, so with `where`
the decoder runs on the M hidden positions alone. DeBERTa's encoder uses relative positions only;
ours also adds P at the input (`Embedding`), so here the decoder re-injects positions rather than
supplying them for the first time. With P = 0 and one pass it is exactly the plain model's last block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masked_model import MaskedTokenModel, ModelConfig
from .query_attention import query_attention
from .visible import gather_tokens, padded_rows


@dataclass(frozen=True)
class EMDConfig(ModelConfig):
    emd_layers: int = 2

    def __post_init__(self):
        if self.emd_layers < 1 or self.depth < 1:
            raise ValueError(f"EMD needs emd_layers >= 1 and depth >= 1, got {self.emd_layers}, {self.depth}")

    @staticmethod
    def from_dict(d: dict) -> EMDConfig:
        base = ModelConfig.from_dict({k: v for k, v in d.items() if k != "emd_layers"})
        return EMDConfig(**{**base.__dict__, "emd_layers": d.get("emd_layers", 2)})


class EMDMaskedTokenModel(MaskedTokenModel):
    """Same parameters as `MaskedTokenModel`; only the decoding of the last block changes."""

    def __init__(self, config: EMDConfig):
        super().__init__(config)

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: Long[B, N] -> logits [B, N, V], or [M, V] at `where` (Bool[B, N])."""
        x = self.embed(tokens)
        blocks = self.encoder.blocks
        for block in blocks[:-1]:
            x = block(x)
        last = blocks[-1]
        b, n = x.shape[:2]
        queries = x + self.embed.pos[:, :n]  # [B, N, D]
        banned = self.disallowed.expand(b, -1, -1)
        if where is not None:
            # rows with fewer hidden places are padded, and dropped below; the masker's host mask is
            # read on the host, without waiting for the device
            idx, valid = (t.to(x.device, non_blocking=True) for t in padded_rows(where))  # [B, M] each
            queries = gather_tokens(queries, idx)
            banned = banned[where.to(x.device, non_blocking=True)]
        context = last.norm1(x)
        for _ in range(self.config.emd_layers):
            queries = queries + query_attention(last.attn, last.norm1(queries), context)
            queries = queries + last.mlp(last.norm2(queries))
        h = self.encoder.norm(queries)
        if where is not None:
            h = h[valid]  # [M, D], in the row-major order of tokens[where]
        return self.head(h).masked_fill(banned, float("-inf"))

