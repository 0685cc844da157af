"""Sampling: the one `generate` loop, the float64 draw, and the step policies."""

from .ancestral import AncestralSampler, AncestralState
from .categorical import categorical, gumbel, inverse_cdf, token_logp
from .first_hitting import FirstHittingSampler, FirstHittingState
from .generate import GenerationOutput, generate
from .maskgit import MaskGITSampler, MaskGITState

__all__ = [
    "generate",
    "GenerationOutput",
    "categorical",
    "inverse_cdf",
    "gumbel",
    "token_logp",
    "MaskGITSampler",
    "MaskGITState",
    "AncestralSampler",
    "AncestralState",
    "FirstHittingSampler",
    "FirstHittingState",
]
