"""Supervised classification as an objective: cross-entropy of a network's class logits. Not a
masked objective; it trains the classifiers that masked models are measured with (a supervised
teacher, a classifier whose inputs get masked, a fine-tuned encoder) through the same `Trainer`.

    Classification(net)            batch {"images": [B, ...], "labels": Long[B]} -> ObjectiveOutput
                                   net(images) -> logits Float[B, K]
    PooledClassifier(backbone, D, K)  batch {"inputs", "labels"}: a linear head on the mean of
                                   backbone.features(inputs) [B, L, D]; a supervised teacher or a
                                   fine-tuned encoder
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.transformer import init_weights
from .base import ObjectiveOutput


def scored(logits: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
    """Cross-entropy (in float32) of logits Float[B, K] against labels Long[B], with the loss and the
    batch accuracy as metrics."""
    labels = labels.to(logits.device, non_blocking=True)
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return ObjectiveOutput(loss, {"loss": loss.detach(), "accuracy": accuracy.detach()})


class Classification(nn.Module):
    """Cross-entropy of `net(batch[inputs])` against `batch["labels"]`; metrics: the loss and the
    batch accuracy."""

    def __init__(self, net: nn.Module, inputs: str = "images"):
        super().__init__()
        self.net, self.inputs = net, inputs

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        return scored(self.net(batch[self.inputs]), batch["labels"])


class PooledClassifier(nn.Module):
    """batch {"inputs": what `backbone.features` reads, "labels": Long[B]} -> ObjectiveOutput: the
    cross-entropy of a linear head on the mean of the backbone's final features [B, L, D]."""

    def __init__(self, backbone: nn.Module, dim: int, classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, classes)
        init_weights(self.head)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Float[B, classes]."""
        return self.head(self.backbone.features(inputs).mean(dim=1))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        return scored(self.logits(batch["inputs"]), batch["labels"])

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Long[M]: the predicted class of each input."""
        device = self.head.weight.device
        return torch.cat([self.logits(x.to(device)).argmax(-1).cpu() for x in inputs.split(batch)])
