"""Approximate joint sampling (Bansal & Sanghavi 2025, "Enabling approximate joint sampling in diffusion
LMs", arXiv:2509.22738, P18): one light Transformer block on top of a frozen masked model's features
predicts the hidden tokens again given the tokens revealed since those features were computed, so
several tokens can be unmasked per full forward pass, each conditioned on the ones before it.

`JointLayer` reads the frozen model's last block output h (its residual stream before the final
LayerNorm), adds a learned embedding of the current token at every place changed since h was
computed, runs one block (`Transformer` of depth 1, whose final norm starts as a copy of the model's)
and a head that starts as a copy of the model's head (frozen unless `train_head`). The block's two
residual branches start at zero, so an untrained layer returns the frozen model's logits at every
unchanged place: it starts as independent parallel sampling and is trained (`objectives/joint_distill.py`)
towards the model's own sequential conditionals.

`JointDenoiser(model, layer)` offers the decoding loop's full and light reads: `full` runs the frozen
model and keeps h with the tokens it was computed on; `light` runs the layer alone (one block, about
1 / depth of a full read).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .heads import LogitsHead
from .masked_model import MaskedTokenModel
from .transformer import Transformer, init_weights


def frozen_read(model: MaskedTokenModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's full read and the features a `JointLayer` reads.

    tokens: Long[B, N] (mask id V at hidden places) -> (logits Float[B, N, V], equal to `model(tokens)`;
    h Float[B, N, D], the last block's output before the final LayerNorm)."""
    h = model.inputs(tokens)  # embeddings, plus the mask ratio's where the model reads it
    for block in model.encoder.blocks:
        h = block(h)
    logits = model.head(model.encoder.norm(h)).masked_fill(model.disallowed, float("-inf"))
    return logits, h


class JointLayer(nn.Module):
    """features Float[B, N, D], tokens Long[B, N] (ids 0..V), changed Bool[B, N] -> logits Float[B, N, V],
    or Float[M, V] at the M places where `where` (Bool[B, N]) is True."""

    def __init__(self, model: MaskedTokenModel, *, heads: int | None = None, mlp_ratio: float | None = None,
                 train_head: bool = False):
        super().__init__()
        cfg = model.config
        self.dim, self.vocab_size = cfg.dim, cfg.vocab_size
        self.reveal = nn.Embedding(cfg.vocab_size + 1, cfg.dim)  # id V too: a place hidden again
        self.block = Transformer(cfg.dim, 1, heads or cfg.heads, cfg.mlp_ratio if mlp_ratio is None else mlp_ratio)
        self.head = LogitsHead(cfg.dim, cfg.vocab_size)
        init_weights(self)
        with torch.no_grad():
            self.reveal.weight.copy_(model.embed.tokens.weight)
            self.block.norm.load_state_dict(model.encoder.norm.state_dict())
            self.head.load_state_dict(model.head.state_dict())
            first = self.block.blocks[0]
            # zero residual branches: the untrained layer passes h through to the model's own norm and head
            first.attn.proj.weight.zero_()
            first.mlp[-1].weight.zero_()
        self.head.requires_grad_(train_head)
        self.register_buffer("disallowed", model.disallowed.clone(), persistent=False)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor, changed: torch.Tensor,
                where: torch.Tensor | None = None) -> torch.Tensor:
        if features.ndim != 3 or features.shape[-1] != self.dim or features.shape[:2] != tokens.shape:
            raise ValueError(f"features must be [B, N, {self.dim}] for tokens {tuple(tokens.shape)}, "
                             f"got {tuple(features.shape)}")
        if changed.shape != tokens.shape or changed.dtype != torch.bool:
            raise ValueError(f"changed must be Bool{list(tokens.shape)}, got {changed.dtype} {tuple(changed.shape)}")
        x = features + self.reveal(tokens) * changed.unsqueeze(-1).to(features.dtype)
        logits = self.head(self.block(x), where)
        disallowed = self.disallowed[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)
        return logits.masked_fill(disallowed if where is None else disallowed[where], float("-inf"))


@dataclass
class JointCache:
    """What a full read leaves for the light reads after it; lives in the loop, never in a sampler's state."""

    tokens: torch.Tensor  # Long[B, N], the tokens of the full read
    features: torch.Tensor  # Float[B, N, D], the frozen model's h on them


class JointDenoiser:
    """A frozen `MaskedTokenModel` and its `JointLayer` as a denoiser with full and light reads.

    `denoiser(tokens)` is the model's read; `full(tokens) -> (logits [B, N, V], JointCache)`;
    `light(tokens, queries, cache, width=None) -> (logits [M, V] at the M True places of queries, in
    row-major order, cache)`: the layer's prediction given the places changed since the full read.
    `width` (the loop's count of queries per row) is not needed: the layer reads every place.
    """

    def __init__(self, model: MaskedTokenModel, layer: JointLayer):
        if layer.dim != model.config.dim or layer.vocab_size != model.config.vocab_size:
            raise ValueError(f"the layer was built for width {layer.dim} and {layer.vocab_size} tokens; the model has "
                             f"width {model.config.dim} and {model.config.vocab_size} tokens")
        self.model, self.layer = model, layer

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, JointCache]:
        logits, features = frozen_read(self.model, tokens)
        return logits, JointCache(tokens.clone(), features)

    def light(self, tokens: torch.Tensor, queries: torch.Tensor, cache: JointCache,
              width: int | None = None) -> tuple[torch.Tensor, JointCache]:
        return self.layer(cache.features, tokens, tokens != cache.tokens, where=queries), cache
