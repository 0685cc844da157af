"""The supervised objective that trains classifiers (teachers, probes by fine-tuning, masked-input
studies): its loss and accuracy against a hand computation."""

import math

import torch
from torch import nn

from unmask.objectives.classification import Classification


class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x):
        return self.logits[x]


def test_loss_is_mean_cross_entropy_and_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0 - math.log(3.0)]])
    objective = Classification(Fixed(logits), inputs="rows")
    loss, metrics = objective({"rows": torch.tensor([0, 1, 2]), "labels": torch.tensor([0, 0, 1])})
    # -log softmax by hand: row 0 -> log(1 + e^-2); row 1 label 0 -> log(1 + e); row 2 label 1 -> log 4
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.e) + math.log(4.0)) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose(metrics["accuracy"].item(), 1 / 3, rel_tol=1e-6)  # only row 0's argmax is its label
    loss.backward()
    assert objective.net.logits.grad.abs().sum() > 0
