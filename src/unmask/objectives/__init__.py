"""Objectives: batch -> (loss, metrics). Each owns its networks and its masker."""

from .base import ObjectiveOutput
from .masked_token import MaskedTokenModeling

__all__ = ["ObjectiveOutput", "MaskedTokenModeling"]
