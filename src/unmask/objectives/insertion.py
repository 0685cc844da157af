"""Insertion language models (ILM; Patel et al. 2025, "Insertion Language Models: Sequence Generation
with Arbitrary-Position Insertions", arXiv:2505.05755): delete a random subset of a row's tokens, and
train a network that reads the kept tokens to say, jointly over (gap, token), which tokens were
deleted where, and whether anything is missing at all.

Training, per row of n real tokens (`padding` removed) of which d are deletable (not `prompt`):
- the drop ratio t ~ U(0, 1) and exactly k = round(t * d) deletable tokens deleted, chosen uniformly
  (argsort of float64 noise, `hide_top`); the kept tokens stay in order, left-aligned;
- the network reads [BOS, kept tokens] (S = n + 1 slots; padding is masked out of attention) and
  gives logits for "insert token v right after slot g", Float[B, S, V] (slot 0 is BOS, so gap 0
  is before the first token), and one stop logit per row;
- the target of gap g is the count-normalised multiset of the tokens deleted there:
  q[g, v] = #{deleted tokens v between kept slots g and g+1} / k. One softmax runs over all open
  gaps x V (flattened) and the joint term is the cross-entropy -sum_{g,v} q[g, v] log p(g, v),
  i.e. the mean over deleted tokens of -log p(their gap, their token); rows with k = 0 add 0;
- stop: binary cross-entropy of the stop logit against "nothing was deleted" (k = 0);
- loss = mean over rows of the joint term + `stop_weight` * mean over rows of the stop term.
t ~ U(0, 1) leaves a row of d deletable tokens whole with probability 1 / (2d) only, so the stop head
sees few positive rows; `clean_share` leaves that share of rows whole besides (t = 0; default 0).
A gap is open (may receive insertions) when something was deleted there or when one of its two
neighbours is a non-prompt token (BOS and the end count as prompt): gaps inside a run of given
tokens stay closed, as the sampler (`sampling/insertion.py`) keeps them closed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from ..masking.base import hide_top, uniform
from ..nn import ModelConfig
from ..nn.embedding import Embedding
from ..nn.heads import LogitsHead
from ..nn.transformer import Transformer, init_weights
from .base import ObjectiveOutput

# closed gaps in the loss: the lowest float, not -inf, so a row with no open gap (nothing to insert)
# keeps a finite log-sum-exp and a zero gradient instead of NaN
_CLOSED = torch.finfo(torch.float32).min


class InsertionLogits(NamedTuple):
    gaps: torch.Tensor  # Float[B, L + 1, V]: insert token v right after slot g (slot 0 = BOS)
    stop: torch.Tensor  # Float[B]: logit of "nothing is missing"


class InsertionModel(nn.Module):
    """The ILM network: a Transformer over [BOS, tokens], a token head at every slot (what to insert
    after it) and a stop head on the BOS slot. Built from a `ModelConfig` (vocabulary V, the most
    tokens a row holds `layout.n`, width, depth, heads); BOS is the embedding of id V.

    model(tokens: Long[B, L], valid: Bool[B, L]) -> InsertionLogits, L <= layout.n; tokens are
    left-aligned and `valid` marks the real ones (places past a row's length are not attended to)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_length = config.layout.n
        self.embed = Embedding(config.vocab_size, config.dim, Layout.seq(config.layout.n + 1), config.positions)
        self.encoder = Transformer(config.dim, config.depth, config.heads, config.mlp_ratio)
        self.head = LogitsHead(config.dim, config.vocab_size)
        self.stop_head = nn.Linear(config.dim, 1)
        init_weights(self)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> InsertionLogits:
        b, n = tokens.shape
        if n > self.max_length:
            raise ValueError(f"rows of {n} tokens exceed the model's {self.max_length}")
        bos = torch.full((b, 1), self.vocab_size, dtype=torch.long, device=tokens.device)
        x = torch.cat([bos, tokens.masked_fill(~valid, self.vocab_size)], 1)  # [B, S]
        keys = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)  # [B, S], BOS always attended
        h = self.encoder(self.embed(x), attn_mask=keys[:, None, None, :])  # [B, S, D]
        return InsertionLogits(self.head(h), self.stop_head(h[:, 0]).squeeze(-1))


class Deletion(NamedTuple):
    """One deletion of a batch, everything on the tokens' device; n = the batch's row width."""
    tokens: torch.Tensor  # Long[B, n]: the original rows
    deleted: torch.Tensor  # Bool[B, n]: deleted places
    gap: torch.Tensor  # Long[B, n]: the gap (0..n) each original place falls in among the kept slots
    kept: torch.Tensor  # Long[B, n]: kept tokens, left-aligned, 0 past the m kept ones
    valid: torch.Tensor  # Bool[B, n]: the first m places of `kept`
    open: torch.Tensor  # Bool[B, n + 1]: gaps that may receive insertions (gap g follows slot g)
    count: torch.Tensor  # Long[B]: deleted tokens k
    stop: torch.Tensor  # Bool[B]: nothing deleted (k = 0)

    def targets(self, vocab_size: int) -> torch.Tensor:
        """Float[B, n + 1, V]: q[g, v], the share of the row's deleted tokens that are v in gap g."""
        b, n = self.tokens.shape
        weight = self.deleted.float() / self.count.clamp(min=1)[:, None].float()
        index = self.gap * vocab_size + self.tokens.clamp(0, vocab_size - 1)
        flat = torch.zeros(b, (n + 1) * vocab_size, device=self.tokens.device).scatter_add_(1, index, weight)
        return flat.view(b, n + 1, vocab_size)


def deletion(tokens: torch.Tensor, deleted: torch.Tensor, prompt: torch.Tensor | None = None,
             padding: torch.Tensor | None = None) -> Deletion:
    """The kept rows, the gap of every deleted token and the open gaps, for a given deletion.

    tokens: Long[B, n]; deleted, prompt (True = given), padding (True = not a token): Bool[B, n].
    `deleted` must avoid prompt and padding places (not checked here: reading it would wait for the
    device; `draw_deletion` makes such masks). No value is read on the host."""
    b, n = tokens.shape
    pad = torch.zeros_like(deleted) if padding is None else padding
    given = torch.zeros_like(deleted) if prompt is None else prompt & ~pad
    keep = ~deleted & ~pad
    order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)  # kept places first, in their order
    m = keep.sum(1)
    valid = torch.arange(n, device=tokens.device) < m[:, None]
    kept = tokens.gather(1, order).masked_fill(~valid, 0)
    gap = keep.long().cumsum(1) - keep.long()  # kept places before each place = its gap among the slots
    count = deleted.sum(1)
    per_gap = torch.zeros(b, n + 1, dtype=torch.long, device=tokens.device).scatter_add_(1, gap, deleted.long())
    free = valid & ~given.gather(1, order)  # kept non-prompt tokens, by slot 1..n
    edge = torch.zeros_like(free[:, :1])
    slots = torch.cat([edge, free, edge], 1)  # [B, n + 2]: BOS, the kept slots, the end
    open_ = (per_gap > 0) | slots[:, :-1] | slots[:, 1:]
    return Deletion(tokens, deleted, gap, kept, valid, open_, count, count == 0)


def draw_deletion(deletable: torch.Tensor, generator: torch.Generator | None = None,
                  clean_share: float = 0.0) -> torch.Tensor:
    """Bool[B, n], True = deleted: t ~ U(0, 1) per row, exactly round(t * d) of the row's d deletable
    places, chosen uniformly; with `clean_share` > 0, each row is left whole (t = 0) with that
    probability (one more uniform per row, drawn after the others). The float64 draws are made on
    the host (with `generator`) and moved to `deletable`'s device without waiting."""
    b, n = deletable.shape
    t = uniform((b,), generator)
    noise = uniform((b, n), generator).to(deletable.device, non_blocking=True)
    if clean_share > 0:
        t = torch.where(uniform((b,), generator) < clean_share, 0.0, t)
    counts = torch.round(t.to(deletable.device, non_blocking=True) * deletable.sum(1)).long()  # half to even
    return hide_top(noise.masked_fill(~deletable, -1.0), counts)  # noise < 1, so -1 ranks last


def insertion_loss(logits: InsertionLogits, d: Deletion) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the joint cross-entropy over open gaps x V against the normalised deleted counts
    (0 when nothing was deleted), Float[B], and the stop binary cross-entropy, Float[B]."""
    gaps = logits.gaps
    b, s, v = gaps.shape
    if s != d.open.shape[1]:
        raise ValueError(f"the network returned {s} gaps for rows of {d.open.shape[1] - 1} tokens")
    flat = gaps.float().masked_fill(~d.open[..., None], _CLOSED).reshape(b, s * v)
    lse = flat.logsumexp(1)  # [B]
    picked = flat.gather(1, d.gap * v + d.tokens.clamp(0, v - 1))  # [B, n]: logit of (its gap, its token)
    weight = d.deleted.float() / d.count.clamp(min=1)[:, None].float()
    joint = (weight * (lse[:, None] - picked)).sum(1)
    stop = F.binary_cross_entropy_with_logits(logits.stop.float(), d.stop.float(), reduction="none")
    return joint, stop


class InsertionLM(nn.Module):
    """batch: {"tokens": Long[B, n], "prompt": Bool[B, n] (optional, True = given, never deleted),
    "padding": Bool[B, n] (optional, True = not a token)} -> ObjectiveOutput.

    Metrics: `loss`; `insert_nats`, the joint term per row with deletions (nats per deleted token,
    averaged over those rows); `stop_bce`; `stop_accuracy` (stop logit > 0 when nothing was deleted);
    `deleted_share`, deleted over deletable tokens."""

    def __init__(self, model: nn.Module, *, stop_weight: float = 1.0, clean_share: float = 0.0):
        super().__init__()
        if not stop_weight >= 0:
            raise ValueError(f"stop_weight must be >= 0, got {stop_weight}")
        if not 0 <= clean_share < 1:
            raise ValueError(f"clean_share must lie in [0, 1), got {clean_share}")
        self.model = model
        self.stop_weight = stop_weight
        self.clean_share = clean_share

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch.get("tokens")
        if not torch.is_tensor(tokens) or tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"batch['tokens'] must be Long[B, n], got {_describe(tokens)}")
        masks = {k: batch.get(k) for k in ("prompt", "padding")}
        for key, value in masks.items():
            if value is not None and (not torch.is_tensor(value) or value.dtype != torch.bool
                                      or value.shape != tokens.shape):
                raise ValueError(f"batch[{key!r}] must be Bool{list(tokens.shape)}, got {_describe(value)}")
        prompt, padding = masks["prompt"], masks["padding"]
        deletable = torch.ones_like(tokens, dtype=torch.bool)
        for given in (prompt, padding):
            if given is not None:
                deletable = deletable & ~given
        d = deletion(tokens, draw_deletion(deletable, generator, self.clean_share), prompt, padding)
        logits = self.model(d.kept, d.valid)
        joint, stop = insertion_loss(logits, d)
        loss = joint.mean() + self.stop_weight * stop.mean()
        with torch.no_grad():
            said_stop = logits.stop > 0
            metrics = {"loss": loss.detach(), "insert_nats": joint.sum() / (~d.stop).sum().clamp(min=1),
                       "stop_bce": stop.mean(), "stop_accuracy": (said_stop == d.stop).float().mean(),
                       "deleted_share": d.count.sum() / deletable.sum().clamp(min=1)}
        return ObjectiveOutput(loss, metrics)


def _describe(value) -> str:
    if torch.is_tensor(value):
        return f"{str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    return "None" if value is None else type(value).__name__
