"""Objectives: batch -> (loss, metrics). Each owns its networks and its masker."""

from .audio_tokenizer import AcousticTokenizerTraining
from .autoregressive import NextTokenPrediction
from .base import ObjectiveOutput
from .cha_mae import ChannelMaskedAutoencoding
from .classification import Classification, PooledClassifier
from .dmjd import DisjointMaskingJointDistillation
from .electra import Electra
from .enat import ENATTokenModeling
from .hpm import HardPatchMining
from .hybrid_distill import HybridDistillation
from .i2p_mae import I2PMAE
from .image_tokenizer import TokenizerTraining
from .insertion import InsertionLM
from .lut import UnmaskedTokenLearning
from .mae import MaskedAutoencoding
from .mar import DiscreteMAR, MaskedAutoregression
from .maskalign import MaskAlign
from .masked_diffusion import MaskedDiffusion
from .masked_token import MagnetTokenModeling, MaskedTokenModeling
from .mfm import MaskedFrequencyModeling
from .mfm_uda import MaskedFeatureUDA
from .mimic import MimicBeforeReconstruct
from .mto import MaskedTokenOptimization
from .octree_ar import OctreeAR
from .selective_mae import SelectiveMaskedAutoencoding
from .spark import SparK
from .token_unify import TokenUnify
from .umd import UnifiedMaskedDiffusion

__all__ = ["ObjectiveOutput", "MaskedTokenModeling",
           "NextTokenPrediction", "Electra", "MaskedDiffusion",
           "MaskedAutoencoding", "HardPatchMining", "UnmaskedTokenLearning", "MimicBeforeReconstruct", "MaskAlign",
           "DisjointMaskingJointDistillation", "MaskedFrequencyModeling", "SelectiveMaskedAutoencoding",
           "UnifiedMaskedDiffusion", "MaskedTokenOptimization", "InsertionLM",
           "TokenizerTraining", "MagnetTokenModeling", "AcousticTokenizerTraining",
           "Classification", "PooledClassifier",
           "SparK", "ChannelMaskedAutoencoding", "MaskedFeatureUDA", "TokenUnify", "HybridDistillation", "I2PMAE",
           "OctreeAR", "MaskedAutoregression", "DiscreteMAR", "ENATTokenModeling"]
