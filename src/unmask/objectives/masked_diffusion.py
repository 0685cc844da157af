"""The masked diffusion ELBO (MDLM, Sahoo et al. 2024, arXiv:2406.07524; LLaDA, Nie et al. 2025,
arXiv:2502.09992), with a prompt that is never hidden (LLaDA's SFT) and DiffuCoder's coupled
complementary masks (Gong et al. 2025, arXiv:2506.20639, P54): the tokens one mask leaves visible
are exactly the ones the second mask hides, so every token is scored once per pair and the estimate
of the bound varies less.

For a row with answer tokens A (all tokens when there is no prompt), t ~ U(eps, 1) and one float64
uniform u_i per token (eps keeps t away from 0, where the 1/t weight explodes, as MDLM and LLaDA do):
- single mask: hide i in A where u_i < t (each token with probability t); the row's estimate is
  sum_hidden CE / t;
- coupled (`coupled=True`, t ~ U(eps, 1 - eps) so both weights stay finite): also hide the complement
  u_i >= t, whose tokens are hidden as at time 1 - t, and average the two estimates:
  (sum_{u<t} CE / t + sum_{u>=t} CE / (1 - t)) / 2. Each half is an unbiased estimate of the same
  bound (1 - t has the law of t), so the average is too; it costs two network calls.
Pretraining divides the batch's sum by B * N (all tokens, as MDLM and LLaDA normalise): an upper
bound on the negative log-likelihood per token. This is the one implementation of the bound (the
plain masked token loss, `MaskedTokenModeling`, has no 1/t weight). With a prompt (`batch["prompt"]`:
Bool[B, N], True = given) each row is divided by its answer length, then the rows are averaged
(LLaDA's SFT). In nats per token; `bits` = nats / ln 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput

ELBO_EPS = 1e-3  # MDLM and LLaDA keep t away from 0, where the 1/t weight explodes


class MaskedDiffusion(nn.Module):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N] (optional)} -> ObjectiveOutput."""

    def __init__(self, model: nn.Module, *, coupled: bool = False, eps: float = ELBO_EPS):
        super().__init__()
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.model = model
        self.coupled = coupled
        self.eps = eps
        self.mask_id = model.mask_id
        self.layout = model.config.layout

    def draw(self, b: int, n: int, generator, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """t: Float64[B] and the per-token uniforms u: Float64[B, N], drawn on the host and moved to
        `device` without waiting for it."""
        top = 1 - 2 * self.eps if self.coupled else 1 - self.eps
        t = self.eps + top * torch.rand(b, generator=generator, dtype=torch.float64)
        u = torch.rand(b, n, generator=generator, dtype=torch.float64)
        return t.to(device, non_blocking=True), u.to(device, non_blocking=True)

    def hidden_ce_sum(self, tokens: torch.Tensor, hide: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Sum of the cross-entropy of hidden tokens per row, Float[B], and the counts for the
        hidden-token accuracy ({"correct", "hidden"}: 0-dim tensors, never read here)."""
        logits = self.model(tokens.masked_fill(hide, self.mask_id), where=hide)  # [M, V]
        targets = tokens[hide]
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        rows = torch.nonzero(hide)[:, 0]
        sums = torch.zeros(tokens.shape[0], device=tokens.device).index_add_(0, rows, ce)
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets).sum()
        return sums, {"correct": correct, "hidden": hide.sum()}

    def row_bounds(self, batch: dict, generator=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(per-row estimate of the summed NLL bound in nats Float[B], answer lengths Long[B], counts)."""
        tokens = batch["tokens"]
        b, n = tokens.shape
        answer = ~batch["prompt"] if batch.get("prompt") is not None else torch.ones_like(tokens, dtype=torch.bool)
        t, u = self.draw(b, n, generator, tokens.device)
        first = (u < t[:, None]) & answer
        sums, counts = self.hidden_ce_sum(tokens, first)
        est = sums / t.to(sums)
        if self.coupled:
            second = ~(u < t[:, None]) & answer
            sums2, counts2 = self.hidden_ce_sum(tokens, second)
            est = (est + sums2 / (1 - t).to(sums2)) / 2
            counts = {k: counts[k] + counts2[k] for k in counts}
        return est, answer.sum(1), counts

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        est, lengths, counts = self.row_bounds(batch, generator)
        if batch.get("prompt") is None:
            loss = est.sum() / lengths.sum()  # = / (B * N)
        else:
            loss = (est / lengths.clamp(min=1).to(est)).mean()
        nats = loss.detach()
        metrics = {"loss": nats, "elbo_bits_per_token": nats / math.log(2),
                   "hidden_acc": counts["correct"] / counts["hidden"]}  # nan when nothing is hidden
        return ObjectiveOutput(loss, metrics)
