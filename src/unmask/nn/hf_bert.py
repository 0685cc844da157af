"""`BertMaskedModel` (nn/bert.py) in the naming of Hugging Face's `BertForMaskedLM`, both ways: the
two compute the same logits, so a run of `mlm-code model.arch=bert` leaves as a BERT folder and a
BERT folder starts a run (`model.init`). No import of transformers here but inside `load_bert_folder`.

The ids are the same on both sides: our data id i is the model's id i (0..V-1) and our mask id V is
the model's `[MASK]`, id V, so the model's vocabulary has V + 1 ids. Ours never predicts the mask;
BERT's decoder has a logit for it too, so its bias there is `MASK_BIAS` (-1e4): its share of the
softmax is exp(-1e4), zero in float32, and BERT's probabilities equal ours. Token type 0 and the
position embeddings add up to our positions: the exported token-type row is zero, and an imported one
is folded into the positions (as `nn/hf.py`'s `copy_bert_weights` does).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UnmaskError
from .bert import BertConfig, BertMaskedModel
from .hf_folder import check_config, check_shapes, load_pretrained

MASK_BIAS = -1e4  # the decoder bias of [MASK]: no probability, and finite in float16 too
GROWING = ("bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight")


def bert_config_kwargs(cfg: BertConfig) -> dict:
    """Keyword arguments of `transformers.BertConfig` that build the same network as `cfg`."""
    return dict(
        vocab_size=cfg.vocab_size + 1, hidden_size=cfg.dim, num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads, intermediate_size=int(cfg.dim * cfg.mlp_ratio), hidden_act="gelu",
        max_position_embeddings=cfg.layout.n, type_vocab_size=1, layer_norm_eps=cfg.eps,
        pad_token_id=None, tie_word_embeddings=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def _layer_keys(i: int) -> dict[str, str]:
    """Our key (inside block i) -> BERT's, for the weights that map one to one."""
    p = f"bert.encoder.layer.{i}"
    pairs = {"attn.proj": f"{p}.attention.output.dense", "norm1": f"{p}.attention.output.LayerNorm",
             "mlp.0": f"{p}.intermediate.dense", "mlp.2": f"{p}.output.dense", "norm2": f"{p}.output.LayerNorm"}
    return {f"blocks.{i}.{ours}.{w}": f"{theirs}.{w}" for ours, theirs in pairs.items() for w in ("weight", "bias")}


def _plain_keys(depth: int) -> dict[str, str]:
    keys = {"embed.tokens.weight": "bert.embeddings.word_embeddings.weight",
            "embed_norm.weight": "bert.embeddings.LayerNorm.weight",
            "embed_norm.bias": "bert.embeddings.LayerNorm.bias",
            "transform.0.weight": "cls.predictions.transform.dense.weight",
            "transform.0.bias": "cls.predictions.transform.dense.bias",
            "transform.2.weight": "cls.predictions.transform.LayerNorm.weight",
            "transform.2.bias": "cls.predictions.transform.LayerNorm.bias"}
    for i in range(depth):
        keys |= _layer_keys(i)
    return keys


@torch.no_grad()
def to_bert_state_dict(model: BertMaskedModel) -> dict[str, torch.Tensor]:
    """Our weights under BERT's keys (the tied decoder weight left out: it is the word embeddings)."""
    ours, cfg = model.state_dict(), model.config
    out = {theirs: ours[key] for key, theirs in _plain_keys(cfg.depth).items()}
    out["bert.embeddings.position_embeddings.weight"] = ours["embed.pos"][0]
    out["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.dim)
    out["cls.predictions.bias"] = torch.cat([ours["bias"], ours["bias"].new_tensor([MASK_BIAS])])
    for i in range(cfg.depth):
        p = f"bert.encoder.layer.{i}.attention.self"
        for part, w in zip(("query", "key", "value"), ours[f"blocks.{i}.attn.qkv.weight"].chunk(3), strict=True):
            out[f"{p}.{part}.weight"] = w
        for part, b in zip(("query", "key", "value"), ours[f"blocks.{i}.attn.qkv.bias"].chunk(3), strict=True):
            out[f"{p}.{part}.bias"] = b
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


@torch.no_grad()
def from_bert_state_dict(model: BertMaskedModel, theirs: dict[str, torch.Tensor]) -> None:
    """Load BERT's weights (names of `BertForMaskedLM.state_dict()`, shapes checked) into `model`."""
    cfg, n = model.config, model.config.layout.n
    ours = {key: theirs[bert] for key, bert in _plain_keys(cfg.depth).items()}
    ours["embed.pos"] = (theirs["bert.embeddings.position_embeddings.weight"][:n]
                         + theirs["bert.embeddings.token_type_embeddings.weight"][0]).unsqueeze(0)
    ours["bias"] = theirs["cls.predictions.bias"][: cfg.vocab_size]
    for i in range(cfg.depth):
        p = f"bert.encoder.layer.{i}.attention.self"
        for w in ("weight", "bias"):
            parts = [theirs[f"{p}.{part}.{w}"] for part in ("query", "key", "value")]
            ours[f"blocks.{i}.attn.qkv.{w}"] = torch.cat(parts)
    model.load_state_dict(ours)


def load_bert_folder(model: BertMaskedModel, folder: str | Path, setting: str = "model.init") -> None:
    """Start `model` from a `BertForMaskedLM` folder (safetensors only): its config and every shape must
    be the model's (position and token-type tables may be longer), its decoder tied to its embeddings."""
    bert = load_pretrained(folder, "BertForMaskedLM", "bert", setting)
    where, cfg = f"{setting}={folder}", model.config
    check_config(bert.config, {
        "num_hidden_layers": (cfg.depth, "model.depth"), "num_attention_heads": (cfg.heads, "model.heads"),
        "hidden_act": ("gelu", "BERT's exact GELU"), "layer_norm_eps": (cfg.eps, "BERT's LayerNorm epsilon"),
        "is_decoder": (False, "a bidirectional encoder"),
    }, where)
    theirs = bert.state_dict()
    check_shapes(theirs, to_bert_state_dict(model), where, at_least=GROWING)
    decoder = theirs.get("cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, theirs["bert.embeddings.word_embeddings.weight"]):
        raise UnmaskError(f"{where}: its decoder weight is not tied to its word embeddings, as ours is")
    from_bert_state_dict(model, theirs)

