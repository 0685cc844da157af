"""Our `MaskedAutoencoder` as Hugging Face's `ViTMAEForPreTraining` (and its encoder as a `ViTModel`),
both ways, with the same numbers: a run leaves as a ViTMAE folder, and a ViTMAE folder starts a run
(`model.init`). `nn/vitmae.py` maps the names; this file adds the one real difference and the loading.

The difference is the order of features. Both use MAE's fixed 2-D sin-cos positions, but ours put the
row half first (`sincos_nd`: [sin h | cos h | sin w | cos w]) and ViTMAE's the column half (MAE's
original code swapped h and w, and pretrained ViTMAE weights rely on it). Swapping the two halves of
every width-D vector of the residual stream (rows of the linears that write to it, columns of those
that read it, LayerNorm weights, class and mask tokens) turns one network into the other exactly:
LayerNorm and attention do not depend on the order of features. The decoder's stream is swapped the
same way at its own width. The class token's position row is folded into the token on the way in.
So ViTMAE's hidden states are ours with the halves swapped; the `ViTModel` of the encoder keeps our
order (its positions are learned weights), and its last hidden state is our encoder's output.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..errors import UnmaskError
from .hf_folder import check_config, check_shapes, load_pretrained
from .mae import MaskedAutoencoder
from .vitmae import to_vitmae_state_dict

OUT_ROWS = ("embed.proj.weight", "attn.proj.weight", "mlp.2.weight")  # write to the stream
IN_COLUMNS = ("attn.qkv.weight", "mlp.0.weight", "head.weight")  # read from it
UNTOUCHED = ("attn.qkv.bias", "mlp.0.bias", "head.bias")  # live outside it


def swap(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The two halves of `t` along `dim` exchanged (its own inverse)."""
    return t.roll(t.shape[dim] // 2, dims=dim)


def swap_halves(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `MaskedAutoencoder` state dict with its encoder's and decoder's feature halves exchanged."""
    out = {}
    for key, t in state.items():
        if key == "decoder.embed.weight":  # reads the encoder's stream, writes the decoder's
            out[key] = swap(swap(t, 0), 1)
        elif key.endswith(OUT_ROWS):
            out[key] = swap(t, 0)
        elif key.endswith(IN_COLUMNS):
            out[key] = swap(t, 1)
        elif key.endswith(UNTOUCHED):
            out[key] = t
        else:  # LayerNorms, biases of the linears that write to the stream, class and mask tokens
            out[key] = swap(t, -1)
    return out


@torch.no_grad()
def hf_order(model: MaskedAutoencoder) -> MaskedAutoencoder:
    """A copy of `model` with its features in ViTMAE's order (positions included): the same numbers."""
    twin = copy.deepcopy(model)
    twin.load_state_dict(swap_halves(model.state_dict()))
    twin.encoder.pos = swap(model.encoder.pos, -1)
    twin.decoder.pos = swap(model.decoder.pos, -1)
    return twin


def vitmae_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """Our weights as `ViTMAEForPreTraining.state_dict()` (its positions are ViTMAE's own sin-cos)."""
    return to_vitmae_state_dict(hf_order(model))


def vit_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """The encoder's weights as `ViTModel(add_pooling_layer=False).state_dict()`, in our order of
    features: ViT's positions are learned weights with no order of their own, so its last hidden
    state is our encoder's output itself."""
    return {k.removeprefix("vit."): v for k, v in to_vitmae_state_dict(model).items() if k.startswith("vit.")}


def _blocks_back(theirs: dict, prefix: str, ours: str, depth: int, out: dict) -> None:
    for i in range(depth):
        p, q = f"{prefix}.{i}", f"{ours}.blocks.{i}"
        for w in ("weight", "bias"):
            out[f"{q}.attn.qkv.{w}"] = torch.cat([theirs[f"{p}.attention.{x}_proj.{w}"] for x in "qkv"])
            for mine, hf in (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.0", "mlp.fc1"), ("mlp.2", "mlp.fc2")):
                out[f"{q}.{mine}.{w}"] = theirs[f"{p}.{hf}.{w}"]


@torch.no_grad()
def from_vitmae_state_dict(model: MaskedAutoencoder, theirs: dict[str, torch.Tensor], where: str) -> None:
    """Load ViTMAE's weights (names of `ViTMAEForPreTraining.state_dict()`) into `model`; its positions
    must be the fixed sin-cos ones, in ViTMAE's order, with a zero class row in the decoder's."""
    cfg = model.config
    pos, dec_pos = theirs["vit.embeddings.position_embeddings"], theirs["decoder.decoder_pos_embed"]
    for name, got, want in (("vit.embeddings.position_embeddings", pos[:, 1:], model.encoder.pos),
                            ("decoder.decoder_pos_embed", dec_pos[:, 1:], model.decoder.pos)):
        if not torch.allclose(got.float(), swap(want, -1), atol=1e-5):
            raise UnmaskError(f"{where}: {name} are not the fixed 2-D sin-cos positions (ViTMAE's order) "
                              "that our MAE uses")
    if dec_pos[:, :1].abs().max() > 0:
        raise UnmaskError(f"{where}: decoder.decoder_pos_embed has a non-zero class row, which our decoder lacks")
    kernel = theirs["vit.embeddings.patch_embeddings.projection.weight"]  # [D, C, p, p]
    out = {
        "encoder.cls": theirs["vit.embeddings.cls_token"] + pos[:, :1],
        "encoder.embed.proj.weight": kernel.permute(0, 2, 3, 1).reshape(kernel.shape[0], -1),
        "encoder.embed.proj.bias": theirs["vit.embeddings.patch_embeddings.projection.bias"],
        "encoder.transformer.norm.weight": theirs["vit.layernorm.weight"],
        "encoder.transformer.norm.bias": theirs["vit.layernorm.bias"],
        "decoder.mask_token": theirs["decoder.mask_token"],
        "decoder.embed.weight": theirs["decoder.decoder_embed.weight"],
        "decoder.embed.bias": theirs["decoder.decoder_embed.bias"],
        "decoder.transformer.norm.weight": theirs["decoder.decoder_norm.weight"],
        "decoder.transformer.norm.bias": theirs["decoder.decoder_norm.bias"],
        "decoder.head.weight": theirs["decoder.decoder_pred.weight"],
        "decoder.head.bias": theirs["decoder.decoder_pred.bias"],
    }
    _blocks_back(theirs, "vit.layers", "encoder.transformer", cfg.depth, out)
    _blocks_back(theirs, "decoder.decoder_layers", "decoder.transformer", cfg.decoder_depth, out)
    model.load_state_dict(swap_halves(out))


def load_vitmae_folder(model: MaskedAutoencoder, folder: str | Path, setting: str = "model.init") -> None:
    """Start `model` from a `ViTMAEForPreTraining` folder (safetensors only) of the same configuration."""
    cfg, where = model.config, f"{setting}={folder}"
    if model.encoder.cls is None or model.encoder.mask_token is not None:
        raise UnmaskError(f"{setting} loads a ViTMAE, which has a class token and drops hidden patches; "
                          "this model does not")
    vitmae = load_pretrained(folder, "ViTMAEForPreTraining", "vit_mae", setting)
    check_config(vitmae.config, {
        "image_size": (cfg.image_size[0], "the 8x8 digits"), "patch_size": (cfg.patch, "model.patch"),
        "num_channels": (cfg.channels, "grey images"), "num_hidden_layers": (cfg.depth, "model.depth"),
        "num_attention_heads": (cfg.heads, "model.heads"),
        "decoder_num_hidden_layers": (cfg.decoder_depth, "model.decoder_depth"),
        "decoder_num_attention_heads": (cfg.decoder_heads, "the decoder's heads"),
        "hidden_act": ("gelu", "the exact GELU"), "layer_norm_eps": (1e-5, "our LayerNorm epsilon"),
        "qkv_bias": (True, "biased q, k, v"),
    }, where)
    theirs = vitmae.state_dict()
    check_shapes(theirs, vitmae_state_dict(model), where)
    from_vitmae_state_dict(model, theirs, where)
