"""Supervised classification as an objective: cross-entropy of a network's class logits. Not a
masked objective; it trains the classifiers that masked models are measured with (a supervised
teacher, a classifier whose inputs get masked, a fine-tuned encoder) through the same `Trainer`.

    Classification(net)   batch {"images": [B, ...], "labels": Long[B]} -> ObjectiveOutput
                          net(images) -> logits Float[B, K]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput


class Classification(nn.Module):
    """Cross-entropy of `net(batch[inputs])` against `batch["labels"]`; metrics: the loss and the
    batch accuracy."""

    def __init__(self, net: nn.Module, inputs: str = "images"):
        super().__init__()
        self.net, self.inputs = net, inputs

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        logits = self.net(batch[self.inputs])  # [B, K]
        labels = batch["labels"]
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "accuracy": accuracy.detach()})
