"""Hard Patches Mining (HPM, Wang et al., CVPR 2023, P3): besides reconstructing the hidden patches,
the model learns to predict *how hard* each one is, and that prediction chooses what to hide next,
so it poses itself harder problems as training goes (easy to hard).

- loss predictor: a second, one-block decoder branch reading the same encoder output, one scalar
  per hidden patch;
- relative (ranking) loss (HPM's `--relative`): for every ordered pair (i, j) of hidden patches of a
  row, with detached reconstruction errors l and predictions s,
      L_rank = - sum[ 1(l_j > l_i) log sigma(s_j - s_i) + 1(l_j < l_i) log(1 - sigma(s_j - s_i)) ]
               / #{pairs with l_i != l_j}
  (log-sigmoid here in place of HPM's log(x + 1e-6): the same loss without the clamp);
- masks: the predictor scores every patch of the image seen whole, and `HardPatchMask` hides the
  `hard_share` of the budget with the highest predicted loss, the rest at random; the share grows
  linearly from 0 to 0.5 over training (`hard_share_at`); total loss L_rec + L_rank.

HPM scores with an EMA copy of the model; here the current weights score (under no_grad), which
saves a second model at this scale. Progress is counted by the objective itself (a buffer saved in
checkpoints), as `steps` training calls.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..masking import HardPatchMask
from ..masking.hard_patch import hard_share_at
from ..nn.mae import MAEDecoder, MaskedAutoencoder
from .base import ObjectiveOutput, as_metric
from .mae import MaskedAutoencoding


def relative_loss(pred: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """HPM's ranking loss. pred, errors: Float[B, M] (errors are targets, detached). Scalar."""
    l = errors.detach()
    diff = pred.unsqueeze(2) - pred.unsqueeze(1)  # [B, M, M]: s_i - s_j at (i, j)
    above = (l.unsqueeze(2) > l.unsqueeze(1)).float()  # l_i > l_j
    below = (l.unsqueeze(2) < l.unsqueeze(1)).float()
    # pair (j, i) with l_j > l_i contributes log sigma(s_j - s_i): sum over (i, j) with l_i > l_j
    terms = above * F.logsigmoid(diff) + below * F.logsigmoid(-diff)
    pairs = (above + below).sum()
    return -terms.sum() / pairs.clamp_min(1.0)


class HardPatchMining(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, *, steps: int, ratio: float = 0.75, norm_pix: bool = True,
                 final_share: float = 0.5):
        super().__init__(model, HardPatchMask(hard_share=0.0), ratio=ratio, norm_pix=norm_pix)
        if steps < 1:
            raise ValueError(f"HPM needs the number of training steps (>= 1) for its schedule, got {steps}")
        self.steps, self.final_share = steps, final_share
        self.loss_predictor = MAEDecoder(model.config, out_dim=1, depth=1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._count = (0, self._state())  # (the step buffer's value on the host, the buffer state it mirrors)

    @torch.no_grad()
    def predicted_losses(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, L]: the predictor's score of every patch, the image seen whole."""
        encoded = self.model.encoder(images)
        return self.loss_predictor(encoded, every=True).squeeze(-1)

    def _state(self) -> tuple[int, int]:
        return self.step.data_ptr(), self.step._version  # host metadata: changes when the buffer does

    def calls(self) -> int:
        """Training calls so far, as a Python int. The `step` buffer (saved in checkpoints) is read
        only when it changed outside `forward` (a loaded checkpoint, a test that sets it), never at
        every step: each read would wait for the device."""
        if self._count[1] != self._state():
            self._count = (int(self.step), self._state())
        return self._count[0]

    def _apply(self, fn, *args, **kwargs):
        in_step = self._count[1] == self._state()
        out = super()._apply(fn, *args, **kwargs)
        if in_step:  # a move or cast keeps the value
            self._count = (self._count[0], self._state())
        return out

    @property
    def hard_share(self) -> float:
        return hard_share_at(self.calls() / self.steps, self.final_share)

    def hard_mask(self, images: torch.Tensor, generator) -> torch.Tensor:
        """Bool[B, L] on the host: this step's mask, `hard_share` of the hidden patches by predicted
        loss (the predictions are copied to the host, where the masker draws with the step's
        generator: one wait for the device per step once the share is above 0)."""
        masker = dataclasses.replace(self.masker, hard_share=self.hard_share)
        b = images.shape[0]
        scores = self.predicted_losses(images) if masker.hard_share > 0 else torch.zeros(b, self.layout.n)
        return masker(self.layout, b, ratio=self.ratio, generator=generator, scores=scores)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        share = self.hard_share
        mask = self.hard_mask(images, generator)
        rec, errors, out = self.reconstruction(images, mask)
        rank = relative_loss(self.loss_predictor(out.encoded).squeeze(-1), errors)
        if self.training:
            count = self.calls() + 1
            self.step += 1
            self._count = (count, self._state())
        loss = rec + rank
        return ObjectiveOutput(loss, {"loss": loss.detach(), "reconstruction": rec.detach(), "rank": rank.detach(),
                                      "hard_share": as_metric(share, loss)})
