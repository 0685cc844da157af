"""What every objective returns: a scalar loss to minimise and a dict of float metrics."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, float]
