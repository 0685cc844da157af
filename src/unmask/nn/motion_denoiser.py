"""The motion denoiser of MMDM (Chen 2024, "Text-driven Human Motion Generation with Motion Masked
Diffusion Model", arXiv:2409.19686), an MDM-style Transformer (Tevet et al. 2023, "Human Motion
Diffusion Model", arXiv:2209.14916) that reads a noisy motion and predicts the clean one, with some
tokens of its embedding hidden behind a learned mask vector.

Tokens are body parts x frames (`Layout.streams(P, T)`, part-major): token (p, t) embeds the features
of part p (`data.motion.BODY_PARTS`) at frame t by the part's own linear map, plus a learned part
embedding, a sin-cos frame embedding and the diffusion step's embedding. Hidden tokens (`hidden`,
Bool[B, P T]) are replaced by one learned vector after embedding (MMDM masks in the embedding space),
so a time-frame mask hides every part of a frame and a body-part mask one part over some frames. Each
part's own linear head reads its tokens back to features; every feature of every frame is predicted.

    forward(x Float[B, T, F], step Long[B], hidden Bool[B, P T] | None) -> x0 Float[B, T, F]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..data.motion import BODY_PARTS, F
from ..layout import Layout
from .embedding import sincos_1d
from .transformer import Transformer, init_weights

PARTS = tuple(BODY_PARTS)


@dataclass(frozen=True)
class MotionDenoiserConfig:
    frames: int = 12
    dim: int = 64
    depth: int = 3
    heads: int = 4

    def layout(self) -> Layout:
        return Layout.streams(len(PARTS), self.frames, name="motion")

    def to_dict(self) -> dict:
        return asdict(self)


def part_features(hidden: torch.Tensor, frames: int) -> torch.Tensor:
    """Bool[B, P T] token mask (part-major) -> Bool[B, T, F]: each hidden token's part features."""
    b = hidden.shape[0]
    out = torch.zeros(b, frames, F, dtype=torch.bool, device=hidden.device)
    for p, name in enumerate(PARTS):
        cols = list(BODY_PARTS[name])
        out[:, :, cols] = hidden[:, p * frames:(p + 1) * frames, None].expand(b, frames, len(cols))
    return out


class MotionDenoiser(nn.Module):
    def __init__(self, config: MotionDenoiserConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.embed_parts = nn.ModuleList(nn.Linear(len(BODY_PARTS[p]), d) for p in PARTS)
        self.heads = nn.ModuleList(nn.Linear(d, len(BODY_PARTS[p])) for p in PARTS)
        self.part_embed = nn.Parameter(torch.zeros(len(PARTS), 1, d))
        self.register_buffer("frame_embed", sincos_1d(torch.arange(config.frames), d), persistent=False)
        self.step_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.mask_embed = nn.Parameter(torch.zeros(d))
        self.encoder = Transformer(d, config.depth, config.heads)
        init_weights(self)
        nn.init.normal_(self.part_embed, std=0.02)
        nn.init.normal_(self.mask_embed, std=0.02)

    def forward(self, x: torch.Tensor, step: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        tokens = torch.cat([emb(x[..., list(BODY_PARTS[p])]) + self.part_embed[i] + self.frame_embed[:t]
                            for i, (p, emb) in enumerate(zip(PARTS, self.embed_parts, strict=True))], 1)  # [B, P T, D]
        if hidden is not None:
            tokens = torch.where(hidden.to(x.device)[..., None], self.mask_embed.to(tokens.dtype), tokens)
        cond = self.step_embed(sincos_1d(step.float(), self.config.dim).to(x.device, x.dtype))  # [B, D]
        h = self.encoder(tokens + cond[:, None])
        out = torch.empty_like(x)
        for i, (p, head) in enumerate(zip(PARTS, self.heads, strict=True)):
            out[..., list(BODY_PARTS[p])] = head(h[:, i * t:(i + 1) * t])
        return out
