"""Weights and settings of a `MaskedAutoencoder` in the naming of Hugging Face's
`ViTMAEForPreTraining` (transformers >= 5), so the two can be compared on the same weights.

No import of transformers here: the keys are plain strings. Ours fuses q, k, v into one linear
(`[3D, D]`, rows q then k then v); ViTMAE keeps three; the patch embedding is our linear reshaped to
ViTMAE's `[D, C, p, p]` convolution kernel (inner patch order (row, column, channel)).
"""

from __future__ import annotations

import torch

from .mae import MAEConfig, MaskedAutoencoder


def vitmae_config_kwargs(cfg: MAEConfig, *, mask_ratio: float, norm_pix: bool, eps: float = 1e-5) -> dict:
    """Keyword arguments of `transformers.ViTMAEConfig` that build the same network as `cfg`."""
    h, w = cfg.image_size
    if h != w:
        raise ValueError(f"ViTMAE needs square images, got {cfg.image_size}")
    if not cfg.cls_token or cfg.hide != "drop":
        raise ValueError("ViTMAE has a class token and a drop-hidden encoder; set cls_token=True, hide='drop'")
    return dict(
        image_size=h, patch_size=cfg.patch, num_channels=cfg.channels,
        hidden_size=cfg.dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
        intermediate_size=int(cfg.dim * cfg.mlp_ratio),
        decoder_hidden_size=cfg.decoder_dim, decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_heads,
        decoder_intermediate_size=int(cfg.decoder_dim * cfg.decoder_mlp_ratio),
        mask_ratio=mask_ratio, norm_pix_loss=norm_pix, layer_norm_eps=eps, qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, hidden_act="gelu",
    )


def _blocks(prefix: str, transformer, out: dict) -> None:
    for i, blk in enumerate(transformer.blocks):
        p = f"{prefix}.{i}"
        q, k, v = blk.attn.qkv.weight.chunk(3, dim=0)
        qb, kb, vb = blk.attn.qkv.bias.chunk(3, dim=0)
        out.update({
            f"{p}.attention.q_proj.weight": q, f"{p}.attention.q_proj.bias": qb,
            f"{p}.attention.k_proj.weight": k, f"{p}.attention.k_proj.bias": kb,
            f"{p}.attention.v_proj.weight": v, f"{p}.attention.v_proj.bias": vb,
            f"{p}.attention.o_proj.weight": blk.attn.proj.weight, f"{p}.attention.o_proj.bias": blk.attn.proj.bias,
            f"{p}.layernorm_before.weight": blk.norm1.weight, f"{p}.layernorm_before.bias": blk.norm1.bias,
            f"{p}.layernorm_after.weight": blk.norm2.weight, f"{p}.layernorm_after.bias": blk.norm2.bias,
            f"{p}.mlp.fc1.weight": blk.mlp[0].weight, f"{p}.mlp.fc1.bias": blk.mlp[0].bias,
            f"{p}.mlp.fc2.weight": blk.mlp[2].weight, f"{p}.mlp.fc2.bias": blk.mlp[2].bias,
        })


@torch.no_grad()
def to_vitmae_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """Our weights under ViTMAE's keys (positions included, class-token position zero)."""
    cfg, enc, dec = model.config, model.encoder, model.decoder
    if enc.cls is None or enc.mask_token is not None:
        raise ValueError("only a drop-hidden model with a class token maps onto ViTMAE")
    d = enc.embed.proj.weight.shape[0]
    kernel = enc.embed.proj.weight.reshape(d, cfg.patch, cfg.patch, cfg.channels).permute(0, 3, 1, 2)
    zero = torch.zeros(1, 1, d)
    out = {
        "vit.embeddings.cls_token": enc.cls,
        "vit.embeddings.position_embeddings": torch.cat([zero, enc.pos], dim=1),
        "vit.embeddings.patch_embeddings.projection.weight": kernel,
        "vit.embeddings.patch_embeddings.projection.bias": enc.embed.proj.bias,
        "vit.layernorm.weight": enc.transformer.norm.weight, "vit.layernorm.bias": enc.transformer.norm.bias,
        "decoder.mask_token": dec.mask_token,
        "decoder.decoder_pos_embed": torch.cat([torch.zeros(1, 1, dec.pos.shape[-1]), dec.pos], dim=1),
        "decoder.decoder_embed.weight": dec.embed.weight, "decoder.decoder_embed.bias": dec.embed.bias,
        "decoder.decoder_norm.weight": dec.transformer.norm.weight,
        "decoder.decoder_norm.bias": dec.transformer.norm.bias,
        "decoder.decoder_pred.weight": dec.head.weight, "decoder.decoder_pred.bias": dec.head.bias,
    }
    _blocks("vit.layers", enc.transformer, out)
    _blocks("decoder.decoder_layers", dec.transformer, out)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
