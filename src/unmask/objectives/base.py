"""What every objective returns: a scalar loss to minimise and a dict of metrics, each a 0-dim
detached tensor on the loss's device.

An objective never reads a value into Python (`.item()`, `float(t)`, `if t:`): on a GPU each read
waits for every queued kernel (STYLE habit 11). The trainer averages the metrics on the device and
reads them once per logged step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, torch.Tensor]  # name -> 0-dim detached tensor


def as_metric(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A metric as a 0-dim detached tensor on `like`'s device: a tensor is detached (and moved there
    if it was computed on the host, e.g. from a mask); a Python number (a count fixed by the shapes)
    is filled in on the device, with no copy that would wait for it."""
    if torch.is_tensor(value):
        return value.detach().to(like.device, non_blocking=True)
    return torch.full((), float(value), device=like.device)
