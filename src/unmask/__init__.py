"""unmask: one engine for masked token modeling. Hide some tokens (a masker), predict them (an
objective), and to generate, repeat with a policy for which predictions to keep (a sampler)."""

from .errors import UnmaskError
from .export import load
from .layout import Layout, Segment
from .masking import BernoulliMask, BlockMask, RandomMask, SpanMask, TubeMask
from .nn import MaskedTokenModel, ModelConfig
from .objectives import MaskedTokenModeling
from .sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler, categorical, generate
from .schedules import Schedule
from .train import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "Layout", "Segment", "Schedule",
    "RandomMask", "BernoulliMask", "BlockMask", "SpanMask", "TubeMask",
    "MaskedTokenModel", "ModelConfig", "MaskedTokenModeling",
    "generate", "categorical", "MaskGITSampler", "AncestralSampler", "FirstHittingSampler",
    "Trainer", "TrainConfig", "UnmaskError", "load",
]
