"""Networks: the Transformer, embeddings, heads and the masked token model."""

from .embedding import Embedding, sincos_nd
from .heads import LogitsHead
from .masked_model import MaskedTokenModel, ModelConfig
from .transformer import Transformer

__all__ = ["Embedding", "LogitsHead", "MaskedTokenModel", "ModelConfig", "Transformer", "sincos_nd"]
