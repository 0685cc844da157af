"""SMITH pre-training (Yang et al. 2020, "Beyond 512 Tokens: Siamese Multi-depth Transformer-based
Hierarchical Encoder for Long-Form Document Matching", arXiv:2004.12297): to masked-word prediction
inside each sentence block it adds masked sentence block prediction, where whole block embeddings
are hidden from the document encoder and each hidden place must pick its own block among every
block hidden in the batch (a contrastive cross-entropy).

The rules follow SMITH's reference code:
- words: `word_ratio` of each block's real tokens (an exact count, round(ratio * tokens)) become the
  mask id and are predicted by cross-entropy, averaged over every hidden word of the batch;
- blocks: each document hides `hidden_blocks` of its real blocks (the code's default is 2, so that
  candidates exist even with one document), replaced by one learned mask embedding. The document
  encoder's output at a hidden place goes through a dense GELU layer and a LayerNorm (`predict`),
  and is scored by dot product against the unhidden embeddings of all hidden blocks of the batch
  (the block encoder's, from the word-masked tokens, as in the code); the right one is the target;
- loss = word loss + block loss. `words=False` or `blocks=False` keeps one term; `blocks=False`
  is a hierarchical masked-word model, the baseline SMITH's block term is measured against.
Differences: the reference adds a learned bias per candidate slot to the block scores; it is left
out here (a slot's index carries no meaning). A document with fewer real blocks than
`hidden_blocks` hides all of them, and a padding slot is neither target nor candidate (the
reference samples slots among the padding too and gives them weight 0 as targets only).

Masks are drawn from host noise (the step's generator) and applied on the batch's device; nothing
is read back to the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.base import hide_top, uniform
from ..nn.hierarchical import HierarchicalEncoder
from .base import ObjectiveOutput
from .masked_token import hidden_ce_mean


def word_mask(token_valid: torch.Tensor, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """token_valid: Bool[B, K, L] -> Bool[B, K, L]: round(ratio * real tokens) hidden in each block,
    uniformly among its real tokens, never padding."""
    b, k, n = token_valid.shape
    noise = uniform((b * k, n), generator).to(token_valid.device, non_blocking=True)
    valid = token_valid.reshape(b * k, n)
    counts = torch.round(valid.sum(1) * ratio).long()  # [BK]
    return hide_top(noise.masked_fill(~valid, -1.0), counts).view(b, k, n)


def block_mask(block_valid: torch.Tensor, count: int, generator: torch.Generator | None):
    """block_valid: Bool[B, K] -> (hide Bool[B, K], slots Long[B, C], real Bool[B, C]) with
    C = min(count, K): each row hides min(count, its real blocks) real blocks chosen uniformly;
    `slots` are the chosen places (padding places fill the slots of short rows, `real` False)."""
    b, k = block_valid.shape
    c = min(count, k)
    noise = uniform((b, k), generator).to(block_valid.device, non_blocking=True)
    slots = noise.masked_fill(~block_valid, -1.0).topk(c, dim=1).indices  # [B, C], real blocks first
    real = block_valid.gather(1, slots)
    hide = torch.zeros_like(block_valid).scatter_(1, slots, real)
    return hide, slots, real


def block_prediction_loss(predicted: torch.Tensor, candidates: torch.Tensor,
                          real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """predicted, candidates: Float[M, D], row i of each from the same hidden block; real: Bool[M]
    or None (all). Scores S = predicted @ candidates^T [M, M]; the loss is the mean over real rows i
    of -log softmax(S_i)_i, the softmax over the real candidates. Returns (loss, accuracy), the
    accuracy the share of real rows whose own block scores highest; both 0 when no row is real."""
    m = predicted.shape[0]
    real = torch.ones(m, dtype=torch.bool, device=predicted.device) if real is None else real
    scores = (predicted.float() @ candidates.float().T).masked_fill(~real[None, :], float("-inf"))  # [M, M]
    target = torch.arange(m, device=predicted.device)
    # a padding row would be all -inf where its own column is masked: give it a finite row, weight 0
    ce = F.cross_entropy(scores.masked_fill(~real[:, None], 0.0), target, reduction="none")  # [M]
    w = real.float()
    total = w.sum().clamp(min=1.0)
    hit = (scores.argmax(1) == target).float()
    return (ce * w).sum() / total, (hit * w).sum() / total


class SMITH(nn.Module):
    """batch: {"tokens": Long[B, K, L], -1 padding} -> ObjectiveOutput."""

    def __init__(self, model: HierarchicalEncoder, *, word_ratio: float = 0.15, hidden_blocks: int = 2,
                 words: bool = True, blocks: bool = True):
        super().__init__()
        if not (words or blocks):
            raise ValueError("SMITH needs at least one term: words=True or blocks=True")
        if words and not 0 < word_ratio <= 1:
            raise ValueError(f"word_ratio must lie in (0, 1], got {word_ratio}")
        if blocks and not 1 <= hidden_blocks <= model.config.blocks:
            raise ValueError(f"hidden_blocks must lie in [1, {model.config.blocks}] (blocks per document), "
                             f"got {hidden_blocks}")
        self.model = model
        self.word_ratio, self.hidden_blocks = word_ratio, hidden_blocks
        self.words, self.blocks = words, blocks
        d = model.config.dim
        self.predict = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))  # SMITH's transform

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]  # [B, K, L]
        self.model.check(tokens)
        token_valid = tokens >= 0
        metrics: dict[str, torch.Tensor] = {}
        loss = tokens.new_zeros((), dtype=torch.float32)
        hidden_words = word_mask(token_valid, self.word_ratio, generator) if self.words else None
        inputs = tokens if hidden_words is None else tokens.masked_fill(hidden_words, self.model.mask_id)
        words, embeddings = self.model.encode_blocks(inputs)  # [B, K, L, D], [B, K, D]
        if hidden_words is not None:
            logits = self.model.head(words, hidden_words)  # [M, V]
            targets = tokens[hidden_words]
            b = tokens.shape[0]
            word_loss = hidden_ce_mean(F.cross_entropy(logits.float(), targets, reduction="none"),
                                       hidden_words.view(b, -1))
            loss = loss + word_loss
            metrics["word_loss"] = word_loss.detach()
            metrics["word_acc"] = (logits.argmax(-1) == targets).float().mean().detach()
        if self.blocks:
            block_valid = token_valid.any(-1)  # [B, K]
            hide, slots, real = block_mask(block_valid, self.hidden_blocks, generator)
            document = self.model.encode_document(embeddings, block_valid, hide)  # [B, K, D]
            d = document.shape[-1]
            at = slots[..., None].expand(-1, -1, d)
            predicted = self.predict(document.gather(1, at)).reshape(-1, d)  # [B*C, D]
            candidates = embeddings.gather(1, at).reshape(-1, d)  # [B*C, D], before hiding
            block_loss, block_acc = block_prediction_loss(predicted, candidates, real.reshape(-1))
            loss = loss + block_loss
            metrics["block_loss"] = block_loss.detach()
            metrics["block_acc"] = block_acc.detach()
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss, metrics)
