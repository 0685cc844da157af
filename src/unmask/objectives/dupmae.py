"""DupMAE: "RetroMAE v2: Duplex Masked Auto-Encoder For Pre-Training Retrieval-Oriented Language
Models" (Xiao & Liu 2022, arXiv:2211.08769; ACL 2023 as "RetroMAE-2", Liu, Xiao et al.,
arXiv:2305.02564), on RetroMAE (Xiao et al. 2022, arXiv:2205.12035).

The idea: train both kinds of contextual embedding for retrieval at once, the [CLS] one by
rebuilding the whole text from it through a one-layer decoder that sees the text heavily masked,
and the ordinary tokens' ones by a bag-of-words loss on their vocabulary projections, max-pooled.

Rows are `[CLS] t1 .. tn [PAD] ..` (`data/docstrings.py`); ids below `first_ordinary` are special,
the others ordinary. Per row with n ordinary tokens:
- encoder: exactly round(encoder_ratio * n) ordinary tokens hidden (80/10/10, `BertCorruption`),
  padding hidden from attention; MLM cross-entropy at the hidden places (`hidden_ce_mean`);
- [CLS] decoding (RetroMAE's enhanced decoding): one pre-norm block whose query at position i is
  the sentence embedding h_CLS plus position i's embedding, and whose keys and values are h_CLS at
  position 0 and the token embeddings of the *original* text elsewhere (`decoder_attention`: row i
  may attend to position 0, never to position i, and to the ordinary tokens but for exactly
  round(decoder_ratio * n) others drawn afresh for each row); it predicts every ordinary token with
  the encoder's head, cross-entropy averaged over them;
- BoW (`bow_loss`): the encoder's logits at the ordinary places (of the masked input), max-pooled
  over positions, against the set of ordinary ids of the text, each weighted 1/n.
Loss = MLM + decoder + bow_weight * BoW. `plain_mlm=True` keeps the MLM term alone: the same encoder
and masking without the two decoding tasks, the baseline the paper's claim is measured against.

Differences from the reference code (staoxiao/RetroMAE `src/pretrain`): token-level, not
whole-word, masks; exact counts instead of whole-word Bernoulli draws; row i's decoder mask hides
position i plus exactly round(decoder_ratio * n) other tokens, where the reference draws one of at
most 256 shared masks per row and then adds i (so its count is that or one less); a pre-norm block
(the library's `Block`) where BERT's layer is post-norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.base import hide_top, uniform
from ..masking.corruption import BertCorruption
from ..nn.masked_model import MaskedTokenModel
from ..nn.transformer import Block, init_weights
from .base import ObjectiveOutput
from .masked_token import hidden_ce_mean


def ordinary_mask(ordinary: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide exactly round(ratio * n_b) of row b's n_b ordinary tokens, uniformly at random.
    ordinary: Bool[B, N] (host) -> Bool[B, N], True = hidden, never outside `ordinary`."""
    counts = torch.round(ratio * ordinary.sum(1).double()).long()  # [B]
    scores = uniform(ordinary.shape, generator).masked_fill(~ordinary, -1.0)  # specials rank last
    return hide_top(scores, counts)


def decoder_attention(ordinary: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """RetroMAE's position-specific decoder mask. ordinary: Bool[B, N] (host; position 0 is [CLS]).

    Returns Bool[B, N - 1, N], True = may attend: row i - 1 is the query of position i (1..N-1). It
    may attend to position 0 (the sentence embedding) always, to position i never, and to the other
    ordinary positions but for exactly min(round(ratio * n_b), n_b - 1) of them, drawn for each row."""
    b, n = ordinary.shape
    pos = torch.arange(1, n)
    others = ordinary[:, None, :].expand(b, n - 1, n).clone()  # [B, N-1, N]
    others[:, pos - 1, pos] = False  # a position never sees itself
    k = torch.round(ratio * ordinary.sum(1).double()).long()  # [B]
    counts = torch.minimum(k[:, None], others.sum(-1))  # [B, N-1]
    scores = uniform((b, n - 1, n), generator).masked_fill(~others, -1.0)
    hidden = hide_top(scores.view(-1, n), counts.view(-1)).view(b, n - 1, n)
    allowed = others & ~hidden
    allowed[:, :, 0] = True
    return allowed


def bow_target(tokens: torch.Tensor, ordinary: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Float[B, V]: 1 / n_b at each id that occurs among row b's ordinary tokens (once, however
    often it occurs), 0 elsewhere. tokens: Long[B, N], ordinary: Bool[B, N]."""
    counts = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)
    counts.scatter_add_(1, tokens, ordinary.float())
    n = ordinary.sum(1, keepdim=True).clamp(min=1)
    return (counts > 0).float() / n


def bow_loss(logits: torch.Tensor, tokens: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
    """DupMAE's bag-of-words loss. logits: Float[B, N, V] at every place; the max over the ordinary
    places gives Float[B, V]; the loss is mean_b -sum_t w_bt log softmax(max_b)_t, w = `bow_target`."""
    low = torch.finfo(logits.dtype).min  # a row without ordinary tokens pools to a constant, not -inf
    pooled = logits.masked_fill(~ordinary[..., None], low).amax(1)  # [B, V]
    weights = bow_target(tokens, ordinary, logits.shape[-1])
    return -(weights * F.log_softmax(pooled, dim=-1)).sum(1).mean()


class DupMAE(nn.Module):
    """batch: {"tokens": Long[B, N]} ([CLS] first, padding `pad_id`) -> ObjectiveOutput.
    `model` is the encoder (its embeddings and head are shared with the decoder)."""

    def __init__(self, model: MaskedTokenModel, *, pad_id: int, first_ordinary: int, encoder_ratio: float = 0.3,
                 decoder_ratio: float = 0.5, bow_weight: float = 1.0, plain_mlm: bool = False,
                 corruption: BertCorruption | None = None):
        super().__init__()
        for name, r in (("encoder_ratio", encoder_ratio), ("decoder_ratio", decoder_ratio)):
            if not 0 < r < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {r}")
        if bow_weight < 0:
            raise ValueError(f"bow_weight must be >= 0, got {bow_weight}")
        v = model.config.vocab_size
        if not 0 < first_ordinary < v or not 0 <= pad_id < first_ordinary:
            raise ValueError(f"need 0 <= pad_id < first_ordinary < vocab_size {v}, got pad_id={pad_id}, "
                             f"first_ordinary={first_ordinary}")
        self.model = model
        self.pad_id, self.first_ordinary = pad_id, first_ordinary
        self.encoder_ratio, self.decoder_ratio, self.bow_weight = encoder_ratio, decoder_ratio, bow_weight
        self.plain_mlm = plain_mlm
        self.corruption = corruption or BertCorruption(random_range=(first_ordinary, v))
        if not plain_mlm:
            cfg = model.config
            self.decoder = Block(cfg.dim, cfg.heads, cfg.mlp_ratio)
            self.decoder_norm = nn.LayerNorm(cfg.dim)
            init_weights(self.decoder)
            init_weights(self.decoder_norm)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] (mask id at hidden places) -> Float[B, N, D]; padding is never attended."""
        keys = (tokens != self.pad_id)[:, None, None, :]  # [B, 1, 1, N]
        return self.model.encoder(self.model.inputs(tokens), keys)

    def decode(self, cls: torch.Tensor, tokens: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """cls: Float[B, D] sentence embeddings; tokens: Long[B, N] original; allowed: Bool[B, N-1, N]
        -> Float[B, N-1, D] at positions 1..N-1."""
        embed = self.model.embed
        query = cls[:, None] + embed.pos[:, 1 : tokens.shape[1]]  # [B, N-1, D]
        context = torch.cat([cls[:, None], embed(tokens)[:, 1:]], 1)  # [B, N, D]
        block = self.decoder
        y = query + block.attn.attend(block.norm1(query), block.norm1(context), allowed[:, None])
        return self.decoder_norm(y + block.mlp(block.norm2(y)))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        ordinary_host = tokens.cpu() >= self.first_ordinary  # masks are drawn on the host
        hidden_host = ordinary_mask(ordinary_host, self.encoder_ratio, generator)
        hidden = hidden_host.to(tokens.device, non_blocking=True)
        inputs = self.corruption(tokens, hidden, self.model.mask_id, generator)
        h = self.encode(inputs)  # [B, N, D]
        bow_on = not self.plain_mlm and self.bow_weight > 0
        if bow_on:
            all_logits = self.model.head(h).float()  # [B, N, V]: BoW reads every ordinary place
            logits = all_logits[hidden]
        else:
            logits = self.model.head(h, hidden).float()  # [M, V]
        targets = tokens[hidden]
        mlm = hidden_ce_mean(F.cross_entropy(logits, targets, reduction="none"), hidden)
        with torch.no_grad():
            hit = logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(-1)
        metrics = {"mlm_loss": mlm.detach(), "hidden_acc": hit.float().mean()}
        loss = mlm
        if not self.plain_mlm:
            ordinary = ordinary_host.to(tokens.device, non_blocking=True)
            allowed = decoder_attention(ordinary_host, self.decoder_ratio, generator).to(tokens.device)
            y = self.decode(h[:, 0], tokens, allowed)  # [B, N-1, D]
            scored = ordinary[:, 1:]
            dec_logits = self.model.head(y, scored).float()  # [K, V]
            dec = F.cross_entropy(dec_logits, tokens[:, 1:][scored])
            loss = mlm + dec
            metrics["decoder_loss"] = dec.detach()
            if bow_on:  # with bow_weight 0 (RetroMAE) the full logits are not computed at all
                bow = bow_loss(all_logits, tokens, ordinary)
                loss = loss + self.bow_weight * bow
                metrics["bow_loss"] = bow.detach()
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss, metrics)
