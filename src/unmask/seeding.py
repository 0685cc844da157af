"""Seeded weight initialisation without touching the caller's global random state."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int):
    """Inside the block, torch's global CPU generator starts from `seed`; after it, the state it had
    before is back. Modules built inside get the same initial weights on every run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
