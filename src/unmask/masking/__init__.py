"""Maskers: which tokens to hide. See `base.py` for the contract (True = hidden, exact counts)."""

from .ask2mask import Ask2Mask
from .base import Masker, hide_top
from .block import BlockMask
from .channel_patch import ChannelPatchMask
from .cm3 import CausalMasking, cm3_spans, cm3_transform
from .cm3_body import BodyCausalMasking
from .coarse_to_fine import CoarseToFineCorruption, CoarseToFineMask
from .color import ColorMask
from .corruption import BertCorruption
from .disjoint import DisjointViewMask
from .edge import EdgeMask
from .entity import EntityMask
from .frequency import FrequencyMask
from .guided import GuidedMask
from .hard_patch import HardPatchMask
from .magnet import MagnetMask
from .meap import MeapMask
from .mixture import MixtureMask
from .motion import BodyPartMask, TimeFrameMask
from .ngram import NGramMask
from .random import BernoulliMask, RandomMask, random_mask
from .running_cell import RunningCellMask
from .selective import SelectiveMask
from .span import SpanMask
from .stream_wise import StreamWiseMask
from .tracks import TrackMask
from .tube import TubeMask
from .twin import TwinMask
from .wav2vec_span import Wav2VecSpanMask
from .words import WholeWordMask

__all__ = ["Masker", "hide_top", "RandomMask", "BernoulliMask", "BlockMask", "SpanMask", "TubeMask", "random_mask",
           "BertCorruption", "WholeWordMask", "NGramMask", "EntityMask", "MeapMask", "CausalMasking",
           "cm3_spans", "cm3_transform", "BodyCausalMasking",
           "ColorMask", "DisjointViewMask", "FrequencyMask", "HardPatchMask", "SelectiveMask",
           "RunningCellMask", "TwinMask", "TrackMask", "MixtureMask", "EdgeMask", "CoarseToFineMask",
           "CoarseToFineCorruption", "MagnetMask", "StreamWiseMask",
           "Wav2VecSpanMask", "Ask2Mask", "TimeFrameMask", "BodyPartMask", "ChannelPatchMask", "GuidedMask"]
