"""TokenUnify (Chen et al. 2024, "TokenUnify: Scalable Autoregressive Visual Pre-training with Mixture
Token Prediction", arXiv:2405.16847): one network trained on a mixture of random-token prediction
(masked modeling), next-token prediction (causal) and next-all-token prediction, so the
autoregressive terms learn the sequence's order while the masked term keeps the whole-image context
that limits the cumulative errors of visual autoregression.

The three terms, on the same replace-mode network (`nn.MaskedTokenModel`: tokens, mask id V):
- random (`random_weight`): hide exactly round(ratio * N) tokens per row (`masking.RandomMask`), read
  all N with bidirectional attention, cross-entropy at the hidden places only;
- next (`next_weight`): input = a start token (the mask id, never in data) then tokens 0..N-2, a causal
  attention mask (position i sees inputs 0..i), target at i = token i; every one of the N tokens is
  scored, each from the tokens before it;
- next-all (`next_all_weight`): per row a cut k ~ U{1, ..., N-1}; the input keeps tokens 0..k-1 and
  holds the mask id at k..N-1; cross-entropy at every place >= k: all the following tokens are
  predicted at once from the prefix (the authors' code, ydchen0806/TokenUnify
  `preserve_patches_and_fill_rest`: keep a random number of leading patches, blank the rest and
  reconstruct the whole image). No place sees any token at or after the cut.
Each term is the mean cross-entropy over its scored places in the batch; the loss is
random_weight * L_random + next_weight * L_next + next_all_weight * L_next_all, every term on every
row (the authors' joint mode sums the terms with weight 1). A weight of 0 skips that term's forward
pass, so each term alone is this same code with the others' weights at 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from .base import ObjectiveOutput


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Bool[n, n], True = may attend: query i sees keys 0..i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def next_token_inputs(tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Long[B, N] -> Long[B, N]: the start token, then tokens shifted right by one (input i holds
    token i - 1, so the logits at i predict token i)."""
    return torch.cat([torch.full_like(tokens[:, :1], bos_id), tokens[:, :-1]], dim=1)


def next_all_cuts(batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Long[B]: each row's cut k, uniform on 1..n-1 (at least one token given, at least one to predict)."""
    if n < 2:
        raise ValueError(f"next-all prediction needs at least 2 tokens, got {n}")
    return torch.randint(1, n, (batch,), generator=generator)


def next_all_targets(cuts: torch.Tensor, n: int) -> torch.Tensor:
    """Bool[B, n]: True at the places at or after each row's cut (the tokens to predict)."""
    return torch.arange(n)[None, :] >= cuts[:, None]


class TokenUnify(nn.Module):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput. `model`: a `MaskedTokenModel` (embed, encoder,
    head, mask_id, config.layout)."""

    def __init__(self, model: nn.Module, *, random_weight: float = 1.0, next_weight: float = 1.0,
                 next_all_weight: float = 1.0, ratio: float = 0.5, masker: Masker | None = None):
        super().__init__()
        weights = {"random_weight": random_weight, "next_weight": next_weight, "next_all_weight": next_all_weight}
        bad = {k: w for k, w in weights.items() if not (isinstance(w, (int, float)) and w >= 0)}
        if bad or not any(w > 0 for w in weights.values()):
            raise ValueError(f"weights must be numbers >= 0, not all 0; got {weights}")
        if not 0 < ratio <= 1:
            raise ValueError(f"random-token ratio must lie in (0, 1], got {ratio}")
        self.model = model
        self.mask_id = model.mask_id
        self.layout = model.config.layout
        self.random_weight, self.next_weight, self.next_all_weight = map(float, weights.values())
        self.ratio = ratio
        self.masker = masker or RandomMask()

    def logits(self, inputs: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """inputs: Long[B, N] (mask id allowed) -> Float[B, N, V]."""
        return self.model.head(self.model.encoder(self.model.inputs(inputs), attn_mask))

    def features(self, tokens: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Clean tokens Long[B, N] -> Float[B, N, D] for probes; `causal` reads them with the causal mask."""
        mask = causal_mask(tokens.shape[1], tokens.device) if causal else None
        return self.model.encoder(self.model.inputs(tokens), mask)

    def random_loss(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        hidden = self.masker(self.layout, tokens.shape[0], ratio=self.ratio, generator=generator)
        hidden = hidden.to(tokens.device, non_blocking=True)  # [B, N]
        logits = self.logits(tokens.masked_fill(hidden, self.mask_id))
        return F.cross_entropy(logits[hidden].float(), tokens[hidden])

    def next_loss(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.logits(next_token_inputs(tokens, self.mask_id), causal_mask(tokens.shape[1], tokens.device))
        return F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())

    def next_all_loss(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        cuts = next_all_cuts(tokens.shape[0], tokens.shape[1], generator)
        after = next_all_targets(cuts, tokens.shape[1]).to(tokens.device, non_blocking=True)  # [B, N]
        logits = self.logits(tokens.masked_fill(after, self.mask_id))
        return F.cross_entropy(logits[after].float(), tokens[after])

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        terms: dict[str, torch.Tensor] = {}
        loss = tokens.new_zeros((), dtype=torch.float32)
        if self.random_weight > 0:
            terms["random_ce"] = self.random_loss(tokens, generator)
            loss = loss + self.random_weight * terms["random_ce"]
        if self.next_weight > 0:
            terms["next_ce"] = self.next_loss(tokens)
            loss = loss + self.next_weight * terms["next_ce"]
        if self.next_all_weight > 0:
            terms["next_all_ce"] = self.next_all_loss(tokens, generator)
            loss = loss + self.next_all_weight * terms["next_all_ce"]
        metrics = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        return ObjectiveOutput(loss, metrics)
