"""BAMM's training rule (Pinyoanuntapong et al. 2024, "BAMM: Bidirectional Autoregressive Motion
Model", arXiv:2403.19435): next-token prediction under the hybrid attention mask (`nn/bamm.py`), with a
random share of the tokens revealed to every position, and an END token after the motion so that the
place where END is predicted is the motion's length.

As exitudio/BAMM's `MaskTransformer.forward`, per row here (a whole batch there):
- rows are [prefix (condition, always revealed) | motion codes | END | PAD ...];
- with probability `reveal_prob` (0.5) a row reveals each of its motion and END tokens independently
  with probability r ~ U(0, `reveal_max`) (0.5), else none (plain causal): Bernoulli, not exact count;
- each input token before END is replaced by a uniform random code with probability u ~ U(0,
  `corrupt_max`) (0.5; the targets stay clean);
- the loss is the cross-entropy at every motion and END place (revealed ones too), averaged per row
  and then over rows; PAD and the prefix are never scored.
MaskedTokenModeling cannot express this: its model reads hidden places as the mask token and is
scored there only, with no next-token shift and no per-row attention mask.

batch: {"tokens": Long[B, N]}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.bamm import HybridCausalTokenModel
from .base import ObjectiveOutput, as_metric


class BAMMTokenModeling(nn.Module):
    def __init__(self, model: HybridCausalTokenModel, *, codes: int, end_id: int, pad_id: int, prefix: int = 1,
                 reveal_prob: float = 0.5, reveal_max: float = 0.5, corrupt_max: float = 0.5):
        super().__init__()
        for name, value in (("reveal_prob", reveal_prob), ("reveal_max", reveal_max), ("corrupt_max", corrupt_max)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"BAMM {name} must lie in [0, 1], got {value}")
        if not 0 < codes <= min(end_id, pad_id) or end_id == pad_id:
            raise ValueError(f"BAMM needs codes 0..{codes - 1} below distinct end_id {end_id} and pad_id {pad_id}")
        self.model = model
        self.codes, self.end_id, self.pad_id, self.prefix = codes, end_id, pad_id, prefix
        self.reveal_prob, self.reveal_max, self.corrupt_max = reveal_prob, reveal_max, corrupt_max

    def draw(self, tokens: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Long[B, N] -> (revealed Bool[B, N], inputs Long[B, N] with random codes), on tokens' device.
        The draws are made on the host from the shape alone and meet the tokens on their device."""
        b, n = tokens.shape
        use = torch.rand(b, 1, generator=generator, dtype=torch.float64) < self.reveal_prob
        r = torch.rand(b, 1, generator=generator, dtype=torch.float64) * self.reveal_max * use
        shown = torch.rand(b, n, generator=generator, dtype=torch.float64) < r
        u = torch.rand(b, 1, generator=generator, dtype=torch.float64) * self.corrupt_max
        swap = torch.rand(b, n, generator=generator, dtype=torch.float64) < u
        noise = torch.randint(0, self.codes, (b, n), generator=generator)
        shown, swap, noise = (t.to(tokens.device, non_blocking=True) for t in (shown, swap, noise))
        places = torch.arange(n, device=tokens.device) >= self.prefix
        revealed = (shown & places & (tokens != self.pad_id)) | ~places
        return revealed, torch.where(swap & places & (tokens < self.codes), noise, tokens)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        revealed, inputs = self.draw(tokens, generator)
        places = torch.arange(tokens.shape[1], device=tokens.device) >= self.prefix
        scored = places & (tokens != self.pad_id)  # [B, N]: motion and END places
        logits = self.model(inputs, revealed)
        ce = F.cross_entropy(logits[scored].float(), tokens[scored], reduction="none")  # [M]: -inf elsewhere
        weight = 1.0 / scored.sum(1, keepdim=True).clamp(min=1) / tokens.shape[0]  # per row, then over rows
        loss = (ce * weight.expand_as(scored)[scored]).sum()
        hit = (logits.argmax(-1) == tokens) & scored
        end = tokens == self.end_id
        metrics = {"ce": as_metric(loss, loss), "accuracy": as_metric(hit.sum() / scored.sum().clamp(min=1), loss),
                   "end_accuracy": as_metric((hit & end).sum() / end.sum().clamp(min=1), loss),
                   "revealed": as_metric((revealed & scored).sum() / scored.sum().clamp(min=1), loss)}
        return ObjectiveOutput(loss, metrics)
