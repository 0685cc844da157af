"""ENAT's training (Ni et al. 2024, "ENAT: Rethinking Spatial-temporal Interactions in Token-based Image
Synthesis", arXiv:2411.06959, P20): masked token modeling on ENAT's network (`nn/enat.py`), where half
of the steps first simulate the previous decoding step, so the network learns to reuse its features.

The share to hide is drawn once per batch (`shared_ratio`, as ENAT's code), so rows hide equal counts.
With probability `reuse_prob` (ENAT's 0.5), a share u ~ U(0, 1) of each row's visible tokens that the
masker may hide is hidden as well, the network reads that earlier state without gradient, and the
step's read of the real mask then encodes only the tokens revealed since (the simulated step's
newly revealed tokens) beside the projected features of the others (ENAT's `train.py::LSimple`; ENAT
reads the earlier state with the EMA weights, here with the weights being trained). Otherwise the read
encodes every visible token. The loss is `MaskedTokenModeling`'s, on the hidden tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking.base import hide_top, uniform
from ..nn.enat import ENATModel, Previous
from .base import ObjectiveOutput
from .masked_token import MaskedTokenModeling


class ENATTokenModeling(MaskedTokenModeling):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput, for an `ENATModel`."""

    def __init__(self, model: ENATModel, masker=None, schedule=None, *, reuse_prob: float = 0.5,
                 shared_ratio: bool = True, **options):
        if not isinstance(model, ENATModel):
            raise ValueError(f"ENATTokenModeling trains an nn.enat.ENATModel, got {type(model).__name__}")
        if not 0 <= reuse_prob <= 1:
            raise ValueError(f"reuse_prob must lie in [0, 1], got {reuse_prob}")
        if options.get("corruption") is not None:
            raise ValueError("ENATTokenModeling hides tokens by dropping them from the encoder: it takes no corruption")
        super().__init__(model, masker, schedule, **options)
        self.reuse_prob = reuse_prob
        self.shared_ratio = shared_ratio
        maskable = torch.zeros(self.layout.n, dtype=torch.bool)
        for _, where in self.masker.eligible(self.layout):
            maskable[where] = True
        self.register_buffer("maskable", maskable, persistent=False)

    def draw_ratio(self, batch_size: int, generator) -> torch.Tensor:
        """Float64 [B] (or [B, S]): with `shared_ratio`, one draw for the whole batch, as ENAT's code
        (every row then hides the same count, so neither the encoder nor the decoder reads padding)."""
        if not self.shared_ratio:
            return super().draw_ratio(batch_size, generator)
        r = super().draw_ratio(1, generator)
        return r.expand(batch_size, *r.shape[1:])

    def earlier_mask(self, hidden: torch.Tensor, generator) -> torch.Tensor:
        """hidden: Bool[B, N] (host) -> Bool[B, N], a superset: the simulated previous step also hides
        round(u * k_b) of row b's k_b visible maskable tokens, u ~ U(0, 1) for the batch (as ENAT)."""
        candidates = ~hidden & self.maskable.cpu()
        u = uniform((), generator)
        counts = torch.round(u * candidates.sum(1)).long()
        scores = torch.where(candidates, uniform(hidden.shape, generator), -1.0)  # never a non-candidate
        return hidden | hide_top(scores, counts)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        b = tokens.shape[0]
        context = {k: v for k, v in batch.items() if k != "tokens"}
        hidden = self.masker(self.layout, b, ratio=self.draw_ratio(b, generator), generator=generator, **context)
        mask = hidden.to(tokens.device, non_blocking=True)
        inputs = tokens.masked_fill(mask, self.mask_id)
        prev = None
        if self.reuse_prob and float(uniform((), generator)) < self.reuse_prob:
            earlier = tokens.masked_fill(self.earlier_mask(hidden, generator).to(tokens.device), self.mask_id)
            with torch.no_grad():
                prev = Previous(earlier, self.model.read(earlier).features)
        logits = self.model(inputs, where=mask, prev=prev)  # [M, V] at the hidden places
        targets = tokens[mask]
        loss = self.loss(F.cross_entropy(logits.float(), targets, reduction="none"), mask)
        with torch.no_grad():
            hit = logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(-1)
        metrics = {"loss": loss.detach(), "hidden_acc": hit.float().mean(), "hidden_share": mask.float().mean(),
                   "reused": torch.tensor(float(prev is not None))}
        return ObjectiveOutput(loss, metrics)
