"""The replace-mode masked token model (BERT, MaskGIT, masked diffusion): hidden tokens enter as the
learned mask embedding (id V), a bidirectional Transformer reads all N tokens, and a head predicts
the V data tokens. It is a denoiser: `model(tokens) -> logits [B, N, V]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..layout import Layout
from .embedding import Embedding
from .heads import LogitsHead
from .scale_attention import scale_causal_mask
from .text_condition import RatioEmbedding
from .token_shuffle import TokenShuffle
from .transformer import Transformer, init_weights
from .visible import same_count_rows


def disallowed_ids(layout: Layout, vocab_size: int, segment_vocab: dict[str, tuple[int, int]]) -> torch.Tensor:
    """Bool[N, V]: True where a place may not hold a data id, the ids outside its segment's [lo, hi)."""
    allowed = torch.ones(layout.n, vocab_size, dtype=torch.bool)
    for name, (lo, hi) in segment_vocab.items():
        where = layout.slice(name)
        allowed[where] = False
        allowed[where, lo:hi] = True
    return ~allowed


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    layout: Layout
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    positions: str = "learned"
    # data ids allowed per segment, [lo, hi): logits outside are -inf, so no sampler can emit them
    segment_vocab: dict[str, tuple[int, int]] = field(default_factory=dict)
    # "scale_causal": each segment attends to itself and earlier segments (next-scale prediction, nn/scale_attention.py)
    attention: str = "full"
    # Token-Shuffle window s: the blocks read one token per s x s window of each grid (nn/token_shuffle.py)
    shuffle: int = 1
    # a segment whose hidden share enters as the timestep, added to every token (Meissonic; nn/text_condition.py)
    ratio_input: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.ratio_input:
            del d["ratio_input"]  # runs written before the option read the same
        d["layout"] = self.layout.to_dict()
        d["segment_vocab"] = {k: list(v) for k, v in self.segment_vocab.items()}
        return d

    @staticmethod
    def from_dict(d: dict) -> ModelConfig:
        d = dict(d)
        d["layout"] = Layout.from_dict(d["layout"])
        d["segment_vocab"] = {k: tuple(v) for k, v in d.get("segment_vocab", {}).items()}
        return ModelConfig(**d)


class MaskedTokenModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.mask_id = config.vocab_size
        self.embed = Embedding(config.vocab_size, config.dim, config.layout, config.positions)
        self.encoder = Transformer(config.dim, config.depth, config.heads, config.mlp_ratio)
        self.head = LogitsHead(config.dim, config.vocab_size)
        self.register_buffer("disallowed", disallowed_ids(config.layout, config.vocab_size, config.segment_vocab),
                             persistent=False)
        if config.attention not in ("full", "scale_causal"):
            raise ValueError(f"attention must be 'full' or 'scale_causal', got {config.attention!r}")
        if config.attention != "full" and config.shuffle != 1:
            raise ValueError("attention='scale_causal' does not combine with shuffle: its mask is over the unshuffled "
                             "tokens")
        causal = scale_causal_mask([s.length for s in config.layout.segments]) if config.attention != "full" else None
        self.register_buffer("attn_mask", causal, persistent=False)
        self.shuffle = None if config.shuffle == 1 else TokenShuffle(config.dim, config.shuffle, config.layout)
        self.ratio = None
        if config.ratio_input:
            self.ratio_where = config.layout.slice(config.ratio_input)
            self.ratio = RatioEmbedding(config.dim)
        init_weights(self)

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] -> Float[B, N, D], the embeddings (plus the ratio's, with `ratio_input`)."""
        x = self.embed(tokens)
        if self.ratio is None:
            return x
        ratio = (tokens[:, self.ratio_where] == self.mask_id).float().mean(1)  # [B], read on the device
        return x + self.ratio(ratio)[:, None]

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] -> Float[B, N, D], after the final LayerNorm."""
        if self.shuffle is None:
            return self.encoder(self.inputs(tokens), self.attn_mask)
        return self.shuffle.unshuffle(self.encoder(self.shuffle(self.inputs(tokens))))

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: Long[B, N] (mask id V at hidden places). Returns logits Float[B, N, V], or
        Float[M, V] at the M positions where `where` (Bool[B, N], on any device) is True.

        When `where` is the masker's mask in host memory and hides the same count in every row
        (exact-count maskers at a fixed ratio), the last block runs at those places only; the count
        is read on the host (`same_count_rows`), never on the device."""
        if where is None:
            return self.head(self.features(tokens)).masked_fill(self.disallowed, float("-inf"))
        ids = same_count_rows(where) if self.shuffle is None else None  # [B, K] or None
        where = where.to(tokens.device, non_blocking=True)
        if ids is not None:
            ids = ids.to(tokens.device, non_blocking=True)
            logits = self.head(self.encoder(self.inputs(tokens), self.attn_mask, only=ids).reshape(-1, self.config.dim))
        else:
            logits = self.head(self.features(tokens), where)
        return logits.masked_fill(self.disallowed.expand(tokens.shape[0], -1, -1)[where], float("-inf"))
