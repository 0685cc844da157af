"""DAMRO (Gong et al. 2024, "DAMRO: Dive into the Attention Mechanism of LVLM to Reduce Object
Hallucination", arXiv:2410.04514, P37): a ViT's [CLS] token attends mostly to a few high-norm
outlier tokens that carry little local information; find them (the top-k of the [CLS] attention at
one layer) and remove their influence at decoding by contrasting the model's logits with its logits
given those tokens alone: `(1 + alpha) * logits(all tokens) - alpha * logits(outlier tokens only)`.

The paper contrasts the language decoder of a vision-language model fed the outliers alone; here the
decoder is a classifier's linear head on the [CLS] token (`ClassTokenViT`, the project's
`MaskedEncoder` with a class token), and "outlier tokens only" means the encoder reads just those
patches (the others dropped, MAE's drop path), so both logits come from the same network.

- `ClassTokenViT`: patch encoder + class token + a linear head on the class token; also an
  objective (`batch {"images", "labels"}` -> cross-entropy) for the one `Trainer`;
- `cls_attention`: Float[B, L], the [CLS] row of one block's attention map over the L patches
  (mean over heads), and `token_norms`: Float[B, L], the L2 norms of the patch tokens leaving
  that block;
- `top_k_tokens`: Long[B, k], the k best-scored patches of each row (ascending places);
- `find_outliers`: the above at once, with the [CLS] attention share on the top-k;
- `only_tokens`: Bool[B, L], True = hidden everywhere except the given places (a mask in the
  project's convention);
- `contrastive_logits`: the DAMRO rule, with the paper's adaptive plausibility cut (`beta`: classes
  whose full-input probability is below beta times the largest are set to -inf; 0 turns it off);
- `damro_logits`: find the outliers and contrast in one call.

    >>> out = find_outliers(model.encoder, images, k=4)          # doctest: +SKIP
    >>> logits = damro_logits(model, images, k=4, alpha=1.0)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..nn.mae import MAEConfig, MaskedEncoder
from ..nn.token_drop import attention_logits, keep_most_attended
from ..nn.transformer import init_weights
from ..objectives.base import ObjectiveOutput
from ..objectives.classification import scored


class ClassTokenViT(nn.Module):
    """A ViT classifier read from its class token. images: Float[B, C, H, W] -> logits Float[B, K];
    `mask` (Bool[B, L], True = hidden) drops patches before the encoder, as MAE does."""

    def __init__(self, cfg: MAEConfig, classes: int):
        super().__init__()
        if not cfg.cls_token or cfg.hide != "drop":
            raise ValueError("ClassTokenViT needs MAEConfig(cls_token=True, hide='drop')")
        if classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {classes}")
        self.encoder = MaskedEncoder(cfg)
        self.head = nn.Linear(cfg.dim, classes)
        init_weights(self)

    def logits(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(images, mask).tokens[:, 0])  # [B, D] -> [B, K]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        return scored(self.logits(batch["images"]), batch["labels"])


def _layer(encoder: MaskedEncoder, layer: int) -> int:
    depth = len(encoder.transformer.blocks)
    if not -depth <= layer < depth:
        raise ValueError(f"layer must lie in [{-depth}, {depth - 1}] for a {depth}-block encoder, got {layer}")
    return layer % depth


@torch.no_grad()
def _block_io(encoder: MaskedEncoder, images: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and the output of block `layer` on whole images: 2 x Float[B, 1 + L, D]."""
    if encoder.cls is None:
        raise ValueError("DAMRO reads the [CLS] attention: the encoder needs a class token")
    block = encoder.transformer.blocks[_layer(encoder, layer)]
    seen: list[torch.Tensor] = []
    hooks = [block.register_forward_pre_hook(lambda m, args: seen.append(args[0])),
             block.register_forward_hook(lambda m, args, out: seen.append(out))]
    try:
        encoder(images)
    finally:
        for h in hooks:
            h.remove()
    return seen[0], seen[1]


@torch.no_grad()
def cls_attention(encoder: MaskedEncoder, images: torch.Tensor, layer: int = -2) -> torch.Tensor:
    """Float[B, L]: the attention the class token pays each of the L patches at block `layer`
    (default: the penultimate, as the paper reads its ViT), mean over heads. The softmax runs over
    all 1 + L keys, so a row sums to 1 minus the class token's attention to itself."""
    x, _ = _block_io(encoder, images, layer)
    block = encoder.transformer.blocks[_layer(encoder, layer)]
    probs = attention_logits(block.attn, block.norm1(x)).softmax(-1)  # [B, H, 1 + L, 1 + L]
    return probs[:, :, 0, 1:].mean(1)  # [B, L]


@torch.no_grad()
def token_norms(encoder: MaskedEncoder, images: torch.Tensor, layer: int = -2) -> torch.Tensor:
    """Float[B, L]: the L2 norm of each patch token leaving block `layer` (the residual stream)."""
    _, out = _block_io(encoder, images, layer)
    return out[:, 1:].float().norm(dim=-1)


def top_k_tokens(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores: Float[B, L] -> Long[B, k], the places of the k highest scores of each row, ascending;
    among equal scores the earlier place wins."""
    return keep_most_attended(scores, k)


class Outliers(NamedTuple):
    ids: torch.Tensor  # Long[B, k]: the top-k patches of the [CLS] attention, ascending
    attention: torch.Tensor  # Float[B, L]: the [CLS] attention on each patch
    norms: torch.Tensor  # Float[B, L]: each patch token's norm after that block
    share: torch.Tensor  # Float[B]: the top-k's share of the [CLS] attention on patches


def find_outliers(encoder: MaskedEncoder, images: torch.Tensor, k: int, layer: int = -2) -> Outliers:
    attn = cls_attention(encoder, images, layer)  # [B, L]
    ids = top_k_tokens(attn, k)  # [B, k]
    share = attn.gather(1, ids).sum(1) / attn.sum(1)
    return Outliers(ids, attn, token_norms(encoder, images, layer), share)


def only_tokens(ids: torch.Tensor, tokens: int) -> torch.Tensor:
    """ids: Long[B, k] -> Bool[B, tokens], True = hidden: every place but `ids`."""
    if ids.ndim != 2 or ids.numel() == 0:
        raise ValueError(f"ids must be Long[B, k] with k >= 1, got shape {tuple(ids.shape)}")
    if int(ids.min()) < 0 or int(ids.max()) >= tokens:
        raise ValueError(f"ids must lie in [0, {tokens}), got {int(ids.min())}..{int(ids.max())}")
    mask = torch.ones(ids.shape[0], tokens, dtype=torch.bool, device=ids.device)
    return mask.scatter(1, ids, False)


def contrastive_logits(full: torch.Tensor, outliers: torch.Tensor, alpha: float, beta: float = 0.0) -> torch.Tensor:
    """full, outliers: Float[B, K] -> Float[B, K] = (1 + alpha) full - alpha outliers. With beta > 0,
    classes whose probability under `full` is below beta times the top one are set to -inf (the
    adaptive plausibility constraint the paper takes from visual contrastive decoding), so the
    contrast cannot promote a class the model itself finds implausible. alpha = 0, beta = 0 returns
    `full` unchanged."""
    if full.shape != outliers.shape:
        raise ValueError(f"logits differ in shape: {tuple(full.shape)} and {tuple(outliers.shape)}")
    if alpha < 0 or not 0.0 <= beta <= 1.0:
        raise ValueError(f"need alpha >= 0 and beta in [0, 1], got alpha={alpha}, beta={beta}")
    out = full if alpha == 0 else (1 + alpha) * full - alpha * outliers
    if beta > 0:
        logp = full.float().log_softmax(-1)
        implausible = logp < logp.max(-1, keepdim=True).values + torch.log(torch.tensor(beta))
        out = out.masked_fill(implausible, float("-inf"))
    return out


@torch.no_grad()
def damro_logits(model: ClassTokenViT, images: torch.Tensor, k: int, alpha: float, *, layer: int = -2,
                 beta: float = 0.0, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Float[B, K]: `contrastive_logits` of the model on whole images and on the top-k [CLS]-attended
    patches alone (or on `ids`, Long[B, k], given: a control with other patches)."""
    if ids is None:
        ids = find_outliers(model.encoder, images, k, layer).ids
    tokens = model.encoder.pos.shape[1]
    full = model.logits(images)
    alone = model.logits(images, only_tokens(ids, tokens))
    return contrastive_logits(full, alone, alpha, beta)
