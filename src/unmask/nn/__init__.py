"""Networks: the Transformer, embeddings, heads and the masked token model."""

from .bert import BertConfig, BertMaskedModel
from .causal import CausalTokenModel
from .embedding import Embedding, sincos_nd
from .emd import EMDConfig, EMDMaskedTokenModel
from .heads import LogitsHead
from .joint_layer import JointDenoiser, JointLayer
from .mae import MAEConfig, MAEDecoder, MaskedAutoencoder, MaskedEncoder
from .masked_model import MaskedTokenModel, ModelConfig
from .patch import PatchEmbed, patchify, unpatchify
from .transformer import Transformer
from .visible import VisibleIndex, split_visible

__all__ = ["Embedding", "LogitsHead", "MaskedTokenModel", "ModelConfig", "Transformer", "sincos_nd",
           "BertConfig", "BertMaskedModel", "CausalTokenModel", "EMDConfig", "EMDMaskedTokenModel",
           "MAEConfig", "MAEDecoder", "MaskedAutoencoder", "MaskedEncoder", "PatchEmbed", "patchify", "unpatchify",
           "VisibleIndex", "split_visible", "JointLayer", "JointDenoiser"]
