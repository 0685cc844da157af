"""What a 2D network says about a point cloud's depth views, back on the cloud's groups (I2P-MAE,
Zhang et al. 2023, arXiv:2212.06785): its token features are the 2D-semantic targets and the
attention of its class token in the last block, averaged over heads, is the saliency that guides
the mask (the release reads CLIP's last-block class-token attention, `img_sals[:, 0, 1:]`).

    out = view_targets(encoder, depth_views(points), centres)
    out.features   # Float[B, G, V * D]: each view's features at the centre's pixel, views concatenated
    out.saliency   # Float[B, G]: the class token's attention at the centre's pixel, mean over views

The 2D network is any `MaskedEncoder` with a class token over one-channel images of the views' size
(in the recipe: an MAE trained on glyphs, not on point clouds).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .mae import MaskedEncoder
from .projection import DepthViews, back_project
from .token_drop import attention_logits


class ViewTargets(NamedTuple):
    features: torch.Tensor  # Float[B, G, V * D]
    saliency: torch.Tensor  # Float[B, G]


def cls_attention(encoder: MaskedEncoder, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """images: Float[B, C, H, W] -> (features Float[B, L, D], saliency Float[B, L]): the encoder's
    patch tokens, every patch visible, and the last block's class-token attention to each patch
    (mean over heads; the class token's own share is left out, so a row sums to less than 1)."""
    if encoder.cls is None:
        raise ValueError("the saliency is the class token's attention: build the 2D encoder with cls_token=True")
    last = encoder.transformer.blocks[-1]
    seen: list[torch.Tensor] = []
    hook = last.norm1.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        tokens = encoder(images).tokens  # [B, 1 + L, D]
    finally:
        hook.remove()
    weights = attention_logits(last.attn, seen[-1]).softmax(-1)  # [B, H, 1 + L, 1 + L]
    return tokens[:, 1:], weights[:, :, 0, 1:].mean(1)


@torch.no_grad()
def view_targets(encoder: MaskedEncoder, views: DepthViews, centres: torch.Tensor) -> ViewTargets:
    """The 2D network's features and saliency of each view, read back at the centres.
    centres: Float[B, G, 3] (in the frame `views` were fitted in)."""
    b, v, s, _ = views.images.shape
    grid = encoder.cfg.grid
    features, saliency = cls_attention(encoder, views.images.reshape(b * v, 1, s, s))  # [BV, L, D], [BV, L]
    maps = features.transpose(1, 2).reshape(b, v, -1, *grid)  # [B, V, D, h, w]
    sal = saliency.reshape(b, v, 1, *grid)  # [B, V, 1, h, w]
    f = back_project(maps, views, centres)  # [B, V, G, D]
    return ViewTargets(f.permute(0, 2, 1, 3).reshape(b, centres.shape[1], -1),
                       back_project(sal, views, centres).squeeze(-1).mean(1))
