"""Sampling: the one `generate` loop, the float64 draw, and the step policies."""

from .amused import AmusedSampler, AmusedState
from .ancestral import AncestralSampler, AncestralState
from .bamm import BAMMSampler, BAMMState, bamm_cascade
from .block_cache import BlockCached, BlockCachedState
from .categorical import categorical, gumbel, inverse_cdf, nucleus, nucleus_draw, token_logp
from .constrained import ConstrainedDraw, ConstrainedSampler, ConstrainedState, awrs, token_masking
from .dream import DreamSampler, DreamState
from .enat import ENATDenoiser, ENATSampler, ENATState
from .first_hitting import FirstHittingSampler, FirstHittingState
from .generate import GenerationOutput, generate
from .guidance import ClassifierFreeGuidance, GuidanceSchedule, guidance_scale
from .joint import JointSampler, JointState
from .kv_cache import CachedDenoiser, KVCache
from .llada import LLaDASampler, LLaDAState
from .magnet import MagnetSampler, MagnetState
from .mar import MARSampler, generate_continuous
from .maskgit import MaskGITSampler, MaskGITState
from .next_scale import NextScaleSampler, NextScaleState
from .pivot import PivotSampler, PivotState
from .rcr import RCRSampler, RCRState
from .recap import ReCAPSampler, ReCAPState
from .threshold import ThresholdSampler, ThresholdState

__all__ = [
    "generate",
    "BlockCached",
    "BlockCachedState",
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
    "nucleus",
    "nucleus_draw",
    "AmusedSampler",
    "AmusedState",
    "LLaDASampler",
    "LLaDAState",
    "DreamSampler",
    "DreamState",
    "ThresholdSampler",
    "ThresholdState",
    "RCRSampler",
    "RCRState",
    "MagnetSampler",
    "MagnetState",
    "ReCAPSampler",
    "ReCAPState",
    "ENATSampler",
    "ENATState",
    "ENATDenoiser",
    "JointSampler",
    "JointState",
    "ConstrainedSampler",
    "ConstrainedState",
    "ConstrainedDraw",
    "awrs",
    "token_masking",
    "NextScaleSampler",
    "NextScaleState",
    "PivotSampler",
    "PivotState",
    "ClassifierFreeGuidance",
    "GuidanceSchedule",
    "guidance_scale",
    "CachedDenoiser",
    "KVCache",
    "BAMMSampler",
    "BAMMState",
    "bamm_cascade",
    "MARSampler",
    "generate_continuous",
]
