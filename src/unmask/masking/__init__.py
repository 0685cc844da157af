"""Maskers: which tokens to hide. See `base.py` for the contract (True = hidden, exact counts)."""

from .base import Masker, hide_top
from .block import BlockMask
from .random import BernoulliMask, RandomMask, random_mask
from .span import SpanMask
from .tube import TubeMask

__all__ = ["Masker", "hide_top", "RandomMask", "BernoulliMask", "BlockMask", "SpanMask", "TubeMask", "random_mask"]
