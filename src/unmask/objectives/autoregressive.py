"""Next-token prediction: the autoregressive baseline on the same Transformer (`nn.CausalTokenModel`),
with three options from the catalogue:
- `input_masker` (MEAP, P12): some input positions become the mask token; the targets stay the clean
  next tokens (`masking.MeapMask`: one set of positions for the whole batch);
- `transform` (CM3, P17): each row is rewritten before training, e.g. `masking.CausalMasking`, so
  the model learns to infill spans moved to the end;
- `thought` (Masked Thought, Chen et al. 2024, arXiv:2403.02178, P44): in training only, each input
  token of the answer becomes the mask token with a probability that ramps up over the run
  (`masking.MaskedThought`); the targets stay clean and the prompt is never masked.

Position i reads tokens 0..i-1 after a start token (`bos_id`, default the mask id, which never occurs
in data) and predicts token i, so all N tokens are scored and the loss is the exact negative
log-likelihood per token, in nats: comparable with a masked diffusion bound over the same N tokens.
With a prompt (`batch["prompt"]`: Bool[B, N], True = given, as in SFT) only the answer's tokens are
scored: the loss is the mean NLL over the batch's answer tokens. Input i holds token i - 1, so it is
an answer-side input when token i - 1 is not given.

The trainer tells the objective each step before it runs (`begin_step`), which is what the Masked
Thought ramp reads; a resumed run gets the step from its checkpoint, so it ramps as an unbroken one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker
from ..masking.masked_thought import MaskedThought
from .base import ObjectiveOutput, as_metric


def scored_nll(nll: torch.Tensor, prompt: torch.Tensor | None, extra: dict | None = None) -> ObjectiveOutput:
    """The loss of per-token NLLs Float[B, N]: their mean, or with `prompt` (Bool[B, N], True = given)
    their mean over the answer side only; metrics: the loss in nats and in bits per token."""
    if prompt is None:
        loss = nll.mean()
    else:
        answer = (~prompt).to(nll.dtype)
        loss = (nll * answer).sum() / answer.sum().clamp(min=1)
    nats = loss.detach()
    return ObjectiveOutput(loss, {"loss": nats, "nll_bits_per_token": nats / math.log(2), **(extra or {})})


class NextTokenPrediction(nn.Module):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N] (optional)} -> ObjectiveOutput. `model` must
    be causal."""

    def __init__(self, model: nn.Module, *, bos_id: int | None = None, input_masker: Masker | None = None,
                 ratio: float = 0.15, transform=None, thought: MaskedThought | None = None):
        super().__init__()
        if input_masker is not None and not 0 <= ratio <= 1:
            raise ValueError(f"input mask ratio must lie in [0, 1], got {ratio}")
        self.model = model
        self.mask_id = model.mask_id
        self.bos_id = self.mask_id if bos_id is None else bos_id
        if not 0 <= self.bos_id <= self.mask_id:
            raise ValueError(f"bos_id must lie in 0..{self.mask_id}, got {bos_id}")
        self.layout = model.config.layout
        self.input_masker = input_masker
        self.ratio = ratio
        self.transform = transform
        self.thought = thought
        self.step = 0  # the optimizer step about to run (the trainer calls `begin_step`)

    def begin_step(self, step: int) -> None:
        """Called by the trainer before the forward passes of optimizer step `step` (0 at the first)."""
        self.step = step

    def answer_inputs(self, prompt: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Bool[B, N]: input places that hold an answer token (input i holds token i - 1; the start
        token at 0 is never one). Without a prompt every token is answer."""
        answer = torch.ones_like(like, dtype=torch.bool) if prompt is None else ~prompt
        return torch.cat([torch.zeros_like(answer[:, :1]), answer[:, :-1]], dim=1)

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Long[B, N] -> Long[B, N]: the start token, then tokens shifted right by one."""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        return torch.cat([bos, tokens[:, :-1]], dim=1)

    def token_nll(self, tokens: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood of every token, Float[B, N], in nats."""
        inputs = self.inputs(tokens) if inputs is None else inputs
        logits = self.model(inputs)  # [B, N, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none")
        return nll.view_as(tokens)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        if self.transform is not None:
            tokens = self.transform(tokens, generator)
        inputs = self.inputs(tokens)
        if self.input_masker is not None:
            hide = self.input_masker(self.layout, tokens.shape[0], ratio=self.ratio, generator=generator)
            hide[:, 0] = False  # the start token stays
            inputs = inputs.masked_fill(hide.to(inputs.device, non_blocking=True), self.mask_id)
        prompt = batch.get("prompt")
        extra = {}
        if self.thought is not None and self.training:
            answer_side = self.answer_inputs(prompt, inputs)
            hide = self.thought(self.layout, tokens.shape[0], step=self.step, generator=generator)
            hide = hide.to(inputs.device, non_blocking=True) & answer_side
            inputs = inputs.masked_fill(hide, self.mask_id)
            # the rate of this step, and the share of answer-side inputs it masked (about the rate)
            extra = {"thought_rate": as_metric(self.thought.rate(self.step), tokens),
                     "thought_masked_share": hide.sum() / answer_side.sum().clamp(min=1)}
        return scored_nll(self.token_nll(tokens, inputs), prompt, extra)
