"""Lexinvariant language models (Huang, Zelikman, Chen, Wu, Valiant and Liang, "Lexinvariant Language
Models", NeurIPS 2023, arXiv:2305.16349; P38): no fixed token embeddings. Each sequence draws a fresh
random Gaussian matrix [V, D], one vector per vocabulary id, so an id has the same vector everywhere in
its sequence and an unrelated one in the next: what a token means must be read from the context alone
(its repetitions and co-occurrences), and the model can decipher a substitution cipher in context.

The output side has no fixed embedding either: the last features go through a learned D x D map and
are scored against the same per-sequence vectors, logit(v) = <W h, E[v]>, so relabelling the data ids
of an input (and the rows of E with them) relabels the logits and changes nothing else.

    >>> model = LexinvariantLM(ModelConfig(vocab_size=28, layout=Layout.seq(64)))        # doctest: +SKIP
    >>> table = model.draw(tokens.shape[0], generator=g)   # [B, V, D], one draw per sequence
    >>> logits = model(tokens, table=table)                # [B, N, V]

Only the V data ids are lexinvariant; the mask / start id V keeps a learned vector (it is no symbol of
the text), and positions stay learned. `random_share` < 1 is a lexinvariance regulariser for a standard
LM: per sequence, exactly round(random_share * V) ids (chosen by noise) take random vectors and the
others the model's learned, tied table; random_share = 0 is a standard LM with tied embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .embedding import Embedding
from .masked_model import ModelConfig
from .transformer import Transformer, init_weights


def random_table(batch: int, vocab_size: int, dim: int, *, std: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Float[B, V, D], entries i.i.d. N(0, std^2), drawn on the generator's device (the CPU without one)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(batch, vocab_size, dim, generator=generator, device=device) * std


class LexinvariantLM(nn.Module):
    """A causal (default) or bidirectional Transformer whose data tokens enter, and are scored, through
    a per-sequence random table. `model(tokens, table=...)`: tokens Long[B, N] in 0..V (V = mask / start)
    -> logits Float[B, N, V] (or [M, V] at `where`). Without `table` one is drawn from `generator`."""

    def __init__(self, config: ModelConfig, *, causal: bool = True, std: float | None = None,
                 random_share: float = 1.0):
        super().__init__()
        if config.segment_vocab or config.attention != "full" or config.shuffle != 1 or config.ratio_input:
            raise ValueError("LexinvariantLM takes a plain ModelConfig: no segment_vocab, attention, shuffle or "
                             "ratio_input")
        if len(config.layout.segments) != 1:
            raise ValueError(f"LexinvariantLM reads one segment, got {len(config.layout.segments)}")
        if not 0 <= random_share <= 1:
            raise ValueError(f"random_share must lie in [0, 1], got {random_share}")
        if std is not None and not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.config = config
        self.mask_id = config.vocab_size
        self.causal = causal
        # unit expected norm per vector, the scale of the learned rows the features are normed to
        self.std = 1 / math.sqrt(config.dim) if std is None else std
        self.random_share = random_share
        # learned: positions, the mask / start id V, and the tied table used where random_share < 1
        self.embed = Embedding(config.vocab_size, config.dim, config.layout, config.positions)
        self.encoder = Transformer(config.dim, config.depth, config.heads, config.mlp_ratio)
        self.out = nn.Linear(config.dim, config.dim, bias=False)
        init_weights(self)

    def draw(self, batch: int, *, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
        """The per-sequence table Float[B, V, D] on `device` (default: the model's). With random_share
        < 1, the rows not drawn are the learned table's (and carry its gradient)."""
        v, d = self.config.vocab_size, self.config.dim
        weight = self.embed.tokens.weight  # [V + 1, D]
        device = weight.device if device is None else device
        table = random_table(batch, v, d, std=self.std, generator=generator).to(device, non_blocking=True)
        if self.random_share == 1:
            return table.to(weight.dtype)
        count = round(self.random_share * v)
        noise = torch.rand(batch, v, generator=generator, device=generator.device if generator else "cpu")
        ranks = noise.argsort(1).argsort(1).to(device, non_blocking=True)  # [B, V], a random order of the ids
        drawn = (ranks < count)[..., None]  # [B, V, 1], exactly `count` per row
        return torch.where(drawn, table.to(weight.dtype), weight[:v])

    def token_vectors(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N], table: Float[B, V, D] -> Float[B, N, D]: each data id's row of its
        sequence's table; the learned vector at id V."""
        self.embed.check(tokens)
        data = tokens < self.mask_id  # [B, N]
        index = tokens.clamp(max=self.mask_id - 1)[..., None].expand(-1, -1, table.shape[-1])
        return torch.where(data[..., None], table.gather(1, index), self.embed.tokens(tokens))

    def inputs(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Float[B, N, D]: the token vectors plus positions."""
        return self.token_vectors(tokens, table) + self.embed.pos[:, : tokens.shape[1]]

    def features(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Float[B, N, D] after the final LayerNorm; causal: position i sees positions <= i only."""
        n = tokens.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril() if self.causal else None
        return self.encoder(self.inputs(tokens, table), attn_mask=mask)

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None, *,
                table: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if table is None:
            table = self.draw(tokens.shape[0], generator=generator, device=tokens.device)
        if table.shape != (tokens.shape[0], self.config.vocab_size, self.config.dim):
            raise ValueError(f"table must be [B, V, D] = {[tokens.shape[0], self.config.vocab_size, self.config.dim]}, "
                             f"got {list(table.shape)}")
        query = self.out(self.features(tokens, table))  # [B, N, D]
        logits = torch.einsum("bnd,bvd->bnv", query, table.to(query.dtype))  # [B, N, V]
        return logits if where is None else logits[where.to(tokens.device, non_blocking=True)]
