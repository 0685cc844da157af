"""`mae-digits` as a Hugging Face `ViTMAEForPreTraining` folder (OUT) and its encoder as a `ViTModel`
folder (OUT/encoder), computing our numbers (`nn/vitmae_hf.py`: the same network with its features
in ViTMAE's order).

Refused, naming the difference: a variant other than `mae` (ViTMAE computes MAE's loss only), a run
without a class token (ViTMAE always has one: train with `model.cls_token=true`), widths not divisible
by 4 (ViTMAE's sin-cos positions), and a ratio whose hidden count ViTMAE's own masking cannot give.
Inputs are `pixel_values: Float[B, 1, 8, 8]`, grey level / 16. ViTMAE draws its own masks uniformly
(a `noise` argument fixes them); the run's masker is not part of the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UnmaskError
from ..nn.hf_folder import need_transformers
from ..nn.mae import MaskedAutoencoder
from ..nn.vitmae import vitmae_config_kwargs
from ..nn.vitmae_hf import vit_state_dict, vitmae_state_dict


def check(loaded) -> None:
    o = loaded.recipe.settings.objective
    model = getattr(loaded.objective, "model", None)
    if o.variant != "mae" or not isinstance(model, MaskedAutoencoder):
        raise UnmaskError(f"objective.variant={o.variant!r} has no ViTMAE form (ViTMAE computes variant 'mae' "
                          "only); export --to unmask")
    cfg = model.config
    if not cfg.cls_token:
        raise UnmaskError("this MAE has no class token and ViTMAE always has one; train with model.cls_token=true "
                          "to export to hf, or export --to unmask")
    if cfg.dim % 4 or cfg.decoder_dim % 4:
        raise UnmaskError(f"ViTMAE's sin-cos positions need widths divisible by 4; model.dim={cfg.dim}, "
                          f"model.decoder_dim={cfg.decoder_dim}")
    mask_ratio(o.ratio, cfg.layout.n)


def mask_ratio(ratio: float, n: int) -> float:
    """ViTMAE's `mask_ratio` that keeps as many of n patches as our maskers (round(ratio * n) hidden):
    ViTMAE keeps int(n * (1 - mask_ratio))."""
    hidden = int(torch.round(torch.tensor(ratio * n, dtype=torch.float64)))
    for r in (ratio, hidden / n):
        if int(n * (1 - r)) == n - hidden:
            return r
    raise UnmaskError(f"objective.ratio={ratio} hides {hidden} of {n} patches, a count ViTMAE's masking cannot "
                      "give; export --to unmask")


def write(loaded, folder: Path) -> None:
    tf = need_transformers()
    model: MaskedAutoencoder = loaded.objective.model
    cfg, o = model.config, loaded.recipe.settings.objective
    kwargs = vitmae_config_kwargs(cfg, mask_ratio=mask_ratio(o.ratio, cfg.layout.n), norm_pix=o.norm_pix)
    vitmae = tf.ViTMAEForPreTraining(tf.ViTMAEConfig(**kwargs))
    vitmae.load_state_dict(vitmae_state_dict(model), strict=True)
    vitmae.save_pretrained(folder)
    vit = tf.ViTModel(tf.ViTConfig(**vit_config_kwargs(kwargs)), add_pooling_layer=False)
    vit.load_state_dict(vit_state_dict(model), strict=True)
    vit.save_pretrained(folder / "encoder")
    record = {"recipe": loaded.recipe.name, "run": str(loaded.run.folder), "step": loaded.run.trained_step(),
              "architecture": "ViTMAEForPreTraining", "encoder": "encoder/ (ViTModel, add_pooling_layer=False)",
              "pixel_values": "Float[B, 1, 8, 8], grey level / 16", "norm_pix_loss": o.norm_pix,
              "mask_ratio": kwargs["mask_ratio"], "ratio": o.ratio}
    (folder / "export.json").write_text(json.dumps(record, indent=2))


def vit_config_kwargs(vitmae: dict) -> dict:
    """`transformers.ViTConfig` keyword arguments of the encoder of a ViTMAE configuration."""
    keys = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "layer_norm_eps", "qkv_bias", "hidden_dropout_prob",
            "attention_probs_dropout_prob")
    return {k: vitmae[k] for k in keys}
