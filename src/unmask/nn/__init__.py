"""Networks: the Transformer, embeddings, heads and the masked token model."""

from .audio_tokenizer import AcousticTokenizer, AcousticTokenizerConfig
from .bert import BertConfig, BertMaskedModel
from .causal import CausalTokenModel
from .embedding import Embedding, sincos_nd
from .emd import EMDConfig, EMDMaskedTokenModel
from .enat import ENATConfig, ENATModel
from .heads import LogitsHead
from .image_tokenizer import ImageTokenizer, ImageTokenizerConfig, TokenizerOutput
from .joint_layer import JointDenoiser, JointLayer
from .mae import MAEConfig, MAEDecoder, MaskedAutoencoder, MaskedEncoder
from .masked_model import MaskedTokenModel, ModelConfig
from .patch import PatchEmbed, patchify, unpatchify
from .quantizers import FSQ, Quantized, ResidualVQ, VectorQuantizer
from .scale_attention import scale_causal_mask
from .token_shuffle import TokenShuffle
from .transformer import Transformer
from .visible import VisibleIndex, split_visible

__all__ = ["Embedding", "LogitsHead", "MaskedTokenModel", "ModelConfig", "Transformer", "sincos_nd",
           "BertConfig", "BertMaskedModel", "CausalTokenModel", "EMDConfig", "EMDMaskedTokenModel",
           "MAEConfig", "MAEDecoder", "MaskedAutoencoder", "MaskedEncoder", "PatchEmbed", "patchify", "unpatchify",
           "VisibleIndex", "split_visible", "JointLayer", "JointDenoiser", "TokenShuffle", "scale_causal_mask",
           "ImageTokenizer", "ImageTokenizerConfig", "TokenizerOutput", "FSQ", "Quantized", "VectorQuantizer",
           "ResidualVQ", "AcousticTokenizer", "AcousticTokenizerConfig", "ENATConfig", "ENATModel"]
