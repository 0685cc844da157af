"""Objectives: batch -> (loss, metrics). Each owns its networks and its masker."""

from .audio_tokenizer import AcousticTokenizerTraining
from .autoregressive import NextTokenPrediction
from .base import ObjectiveOutput
from .dmjd import DisjointMaskingJointDistillation
from .electra import Electra
from .hpm import HardPatchMining
from .image_tokenizer import TokenizerTraining
from .insertion import InsertionLM
from .lut import UnmaskedTokenLearning
from .mae import MaskedAutoencoding
from .maskalign import MaskAlign
from .masked_diffusion import MaskedDiffusion
from .masked_token import MagnetTokenModeling, MaskedTokenModeling
from .mfm import MaskedFrequencyModeling
from .mimic import MimicBeforeReconstruct
from .mto import MaskedTokenOptimization
from .selective_mae import SelectiveMaskedAutoencoding
from .umd import UnifiedMaskedDiffusion

__all__ = ["ObjectiveOutput", "MaskedTokenModeling",
           "NextTokenPrediction", "Electra", "MaskedDiffusion",
           "MaskedAutoencoding", "HardPatchMining", "UnmaskedTokenLearning", "MimicBeforeReconstruct", "MaskAlign",
           "DisjointMaskingJointDistillation", "MaskedFrequencyModeling", "SelectiveMaskedAutoencoding",
           "UnifiedMaskedDiffusion", "MaskedTokenOptimization", "InsertionLM",
           "TokenizerTraining", "MagnetTokenModeling", "AcousticTokenizerTraining"]
