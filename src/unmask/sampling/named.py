"""The three samplers a recipe offers by name (`sampler=` on the command line): MaskGIT's confidence
order on a cosine schedule, MDLM's ancestral steps, and first-hitting (one token per call)."""

from __future__ import annotations

from ..schedules import Schedule
from .ancestral import AncestralSampler
from .first_hitting import FirstHittingSampler
from .maskgit import MaskGITSampler

NAMES = ("maskgit", "ancestral", "first-hitting")


def named_sampler(name: str, steps: int, temperature: float = 1.0, choice_temperature: float = 1.0):
    """A sampler by name; `steps` is unused by first-hitting, `choice_temperature` only by MaskGIT."""
    if name == "maskgit":
        return MaskGITSampler(steps, Schedule("cosine"), temperature, choice_temperature)
    if name == "ancestral":
        return AncestralSampler(steps, temperature)
    if name == "first-hitting":
        return FirstHittingSampler(temperature)
    raise ValueError(f"sampler must be one of {NAMES}, got {name!r}")
