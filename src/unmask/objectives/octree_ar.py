"""Masked next-token prediction over octree sequences (Uni-3DAR: Lu et al. 2025, "Uni-3DAR: Unified
3D Generation and Understanding via Autoregression on Compressed Spatial Tokens", arXiv:2503.16278).

Idea: after octree compression the next token's place in space changes from token to token, so a
plain next-token predictor, which sees only where the previous token was, has to guess where it is
predicting; but the grammar already knows that place, so each token is given twice, once as a mask
token carrying the next token's level and cell (the query) and once as itself (the context), and a
causal mask lets every mask token see the real tokens before it and itself, and no token see a mask.

Layout (2T positions, interleaved): position 2i is mask i, position 2i + 1 is real token i, both
with token i's kind, level and cell centre. Query 2i may attend keys 2j + 1 for j < i, and 2i itself;
query 2i + 1 may attend keys 2j + 1 for j <= i (`masked_next_token_mask`). The loss is the
cross-entropy of token i at mask i, over the ids its kind allows (the grammar knows the kind).

`masked=False` is the plain next-token baseline on the same network: input j holds a start token
then real token j - 1 with its own level and cell, predicting token j (`causal_mask`).

Inputs per token: token embedding (the mask id for queries) + kind embedding + level embedding + a
linear map of Fourier features of the cell centre in the unit cube (Uni-3DAR adds level and 3D
position embeddings; the exact form of its position embedding is not copied).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.structures import OctreeGeometry
from ..nn.octree_transformer import OctreeARConfig, OctreeTransformer, causal_mask, masked_next_token_mask
from .base import ObjectiveOutput


class OctreeAR(nn.Module):
    """batch: {"tokens", "kind", "level": Long[B, T], "centre": Float[B, T, 3], "valid": Bool[B, T]}
    (from `OctreeGeometry.batch`) -> ObjectiveOutput with the mean NLL per valid token (nats), and the
    NLL of each token kind present."""

    def __init__(self, geo: OctreeGeometry, cfg: OctreeARConfig | None = None):
        super().__init__()
        self.geo, self.cfg = geo, cfg or OctreeARConfig()
        self.net = OctreeTransformer(geo, self.cfg)

    def inputs(self, batch: dict) -> tuple[list[torch.Tensor], torch.Tensor, slice]:
        """The network's inputs (tokens, kind, level, centre), its attention mask, and the positions
        whose outputs predict tokens 0..T-1 in order."""
        tokens, kind, level, centre = batch["tokens"], batch["kind"], batch["level"], batch["centre"]
        b, t = tokens.shape
        if self.cfg.masked:
            queries = torch.full_like(tokens, self.net.mask_id)
            inter = [torch.stack([q, r], 2).flatten(1, 2) for q, r in  # [B, 2T]: mask i, then real i
                     ((queries, tokens), (kind, kind), (level, level))]
            inter.append(centre.repeat_interleave(2, dim=1))  # [B, 2T, 3]
            return inter, masked_next_token_mask(t, tokens.device), slice(0, 2 * t, 2)
        start = [torch.full_like(tokens[:, :1], self.net.mask_id), torch.zeros_like(kind[:, :1]),
                 torch.zeros_like(level[:, :1]), torch.full_like(centre[:, :1], 0.5)]
        shifted = [torch.cat([s, x[:, :-1]], 1) for s, x in zip(start, (tokens, kind, level, centre), strict=True)]
        return shifted, causal_mask(t, tokens.device), slice(0, t)

    def logits(self, batch: dict) -> torch.Tensor:
        """Float[B, T, V]: the prediction of every token from the tokens before it."""
        x, attn, at = self.inputs(batch)
        return self.net(*x, attn, batch["kind"], only=at)

    def token_nll(self, batch: dict) -> torch.Tensor:
        """Float[B, T]: NLL of each token in nats (0 at padding)."""
        logits = self.logits(batch).float()
        target = batch["tokens"].masked_fill(~batch["valid"], 1)  # padding: any allowed id, then zeroed
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        return nll * batch["valid"]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        nll = self.token_nll(batch)
        valid = batch["valid"]
        loss = nll.sum() / valid.sum().clamp(min=1)
        metrics = {"loss": loss.detach()}
        for k, name in enumerate(("tree", "atom", "xyz") if self.geo.n_types else ("tree",)):
            of = valid & ((batch["kind"] == k) if name != "xyz" else (batch["kind"] >= 2))
            metrics[f"{name}_nll"] = ((nll * of).sum() / of.sum().clamp(min=1)).detach()
        return ObjectiveOutput(loss, metrics)
