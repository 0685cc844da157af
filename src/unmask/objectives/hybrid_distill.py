"""Hybrid Distillation (Shi et al. 2023, "Hybrid Distillation: Connecting Masked Autoencoders with
Contrastive Learners", arXiv:2306.15876, P23): a student imitates the token relations of a masked
image modeling teacher (its attention maps: diversity) and the features of a supervised or
contrastive teacher (discrimination), while dropping its least-attended tokens block by block.

- relation term: at each block i of `relation_layers`, the student's attention maps (per head) over
  the tokens it still holds, against the MIM teacher's block-i maps restricted to those same tokens
  (the teacher's scores at those rows and columns, softmaxed over them, so both are distributions
  over the same keys): smooth L1 between the maps times the number of keys n (a uniform row then
  reads 1 everywhere, whatever n: on raw maps of 16 keys the term is ~1e-4 and vanishes beside the
  feature term), mean over entries, then over the layers;
- feature term: a linear head on the student's final tokens against the supervised teacher's final
  tokens at the same places, whitened by a parameter-free LayerNorm (`mimic.teacher_tokens`):
  smooth L1;
- progressive redundant token dropping: block i reads exactly `counts[i]` tokens (`keep_ratios`,
  non-increasing); where the count falls, the student keeps the tokens that the MIM teacher's block i,
  restricted to the tokens still held, attends to most (attention received, mean over heads and
  queries; `nn/token_drop.py`). The teachers read every token of the whole image;
- total = relation_weight * relation + feature_weight * feature; `relation=False` or `feature=False`
  removes its term (the paper's ablations).

The relation blocks (default: the second half), the keep schedule (`default_keep_ratios`), the n
scaling and the choice of the MIM teacher's maps to rank tokens are set here for 16-token digits.
The student reads whole images, no random mask: what it does not see is what the dropping removes.
Probes read the student with every token (`features`). Both teachers are frozen `MaskedEncoder`s
without a class token; the MIM teacher has the student's depth and heads (block i teaches block i).

batch: {"images": Float[B, C, H, W]} -> ObjectiveOutput.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.mae import MAEConfig, MaskedEncoder, init_mae
from ..nn.token_drop import attention_logits, keep_counts, keep_most_attended, received_attention
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric
from .mimic import frozen, teacher_tokens


def default_keep_ratios(depth: int) -> tuple[float, ...]:
    """Every token through the first half of the blocks (at least the first block), then a share
    falling linearly to 0.5 at the last block: (1, 1, 0.75, 0.5) for 4 blocks, (1,) for one."""
    first = max(1, depth // 2)
    return tuple(1.0 if i < first else 1.0 - 0.5 * (i - first + 1) / (depth - first) for i in range(depth))


def restrict(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """logits: [B, H, L, L], ids: Long[B, n] -> [B, H, n, n]: the rows and columns of those tokens."""
    b, h, length, _ = logits.shape
    n = ids.shape[1]
    rows = logits.gather(2, ids[:, None, :, None].expand(b, h, n, length))
    return rows.gather(3, ids[:, None, None, :].expand(b, h, n, n))


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student, teacher: attention maps Float[B, H, n, n] -> smooth L1 (beta 1) of n * maps, mean over
    entries."""
    n = student.shape[-1]
    return F.smooth_l1_loss(student.float() * n, teacher.float() * n)


@torch.no_grad()
def teacher_attention(teacher: MaskedEncoder, images: torch.Tensor) -> list[torch.Tensor]:
    """The pre-softmax attention scores of every block of `teacher` on whole images: depth x Float[B, H, L, L]."""
    teacher.eval()
    inputs: list[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
             for blk in teacher.transformer.blocks]
    try:
        teacher(images)
    finally:
        for h in hooks:
            h.remove()
    return [attention_logits(blk.attn, blk.norm1(x)) for blk, x in zip(teacher.transformer.blocks, inputs, strict=True)]


class StudentPass(NamedTuple):
    tokens: torch.Tensor  # [B, n, D]: the final tokens (after the last norm), n = counts[-1]
    places: list[torch.Tensor]  # per block, Long[B, counts[i]]: the places of the tokens it read, ascending
    relations: list[torch.Tensor]  # per block of relation_layers: the relation loss there (scalars)


class EncoderFeatures(nn.Module):
    """A `MaskedEncoder` read whole, as the backbone of a classifier (the supervised teacher):
    `features(images: Float[B, C, H, W]) -> Float[B, L, D]`."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.encoder = MaskedEncoder(cfg)
        init_mae(self.encoder)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).tokens[:, self.encoder.prefix :]


class HybridDistillation(nn.Module):
    def __init__(self, cfg: MAEConfig, mim_teacher: MaskedEncoder, supervised_teacher: MaskedEncoder, *,
                 keep_ratios: Sequence[float] | None = None, relation_layers: Sequence[int] | None = None,
                 relation: bool = True, feature: bool = True, relation_weight: float = 1.0,
                 feature_weight: float = 1.0):
        super().__init__()
        if cfg.cls_token or mim_teacher.cls is not None or supervised_teacher.cls is not None:
            raise ValueError("Hybrid Distillation here drops patch tokens and has no class token: use "
                             "cls_token=False for the student and both teachers")
        if cfg.hide != "drop":
            raise ValueError(f"the student must be a drop-hidden encoder (hide='drop'), got hide={cfg.hide!r}")
        t = mim_teacher.cfg
        if (t.depth, t.heads) != (cfg.depth, cfg.heads):
            raise ValueError(f"the MIM teacher teaches block i its block i's maps per head: it needs the student's "
                             f"depth and heads ({cfg.depth}, {cfg.heads}), got ({t.depth}, {t.heads})")
        if mim_teacher.cfg.grid != cfg.grid or supervised_teacher.cfg.grid != cfg.grid:
            raise ValueError(f"both teachers must read the student's token grid {cfg.grid}")
        if not (relation or feature):
            raise ValueError("turn on at least one term: relation or feature")
        tokens = cfg.layout.n
        self.counts = keep_counts(tokens, default_keep_ratios(cfg.depth) if keep_ratios is None else keep_ratios)
        if len(self.counts) != cfg.depth:
            raise ValueError(f"give one keep ratio per block ({cfg.depth}), got {len(self.counts)}")
        layers = tuple(range(cfg.depth // 2, cfg.depth)) if relation_layers is None else tuple(relation_layers)
        if not layers or any(not 0 <= i < cfg.depth for i in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"relation_layers must be distinct blocks in [0, {cfg.depth}), got {layers}")
        self.relation_layers = layers
        self.relation, self.feature = relation, feature
        self.relation_weight, self.feature_weight = relation_weight, feature_weight
        self.encoder = MaskedEncoder(cfg)
        init_mae(self.encoder)
        self.head = nn.Linear(cfg.dim, supervised_teacher.cfg.dim) if feature else None  # no unused weights
        if self.head is not None:
            init_mae(self.head)
        self.teacher = frozen(mim_teacher)  # the MIM teacher (the recipe's role "teacher")
        self.supervised_teacher = frozen(supervised_teacher)

    @property
    def layout(self):
        return self.encoder.cfg.layout

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: the student's tokens, every token kept (probes)."""
        return self.encoder(images).tokens

    def student(self, images: torch.Tensor, maps: list[torch.Tensor]) -> StudentPass:
        """Run the student with progressive dropping guided by the MIM teacher's `maps` (depth x
        [B, H, L, L] pre-softmax scores, `teacher_attention`)."""
        enc = self.encoder
        patches = enc.cfg.patchify(images)  # [B, L, p*p*C]
        x = enc.embed(patches) + enc.pos  # [B, L, D]
        b, length = x.shape[:2]
        ids = torch.arange(length, device=x.device).expand(b, length)  # [B, L]
        relations, places = [], []
        for i, (block, keep) in enumerate(zip(enc.transformer.blocks, self.counts, strict=True)):
            if keep < ids.shape[1]:  # counts fixed by the settings: no read of the device
                taught = restrict(maps[i], ids).softmax(-1)  # [B, H, n, n]
                chosen = keep_most_attended(received_attention(taught), keep)  # [B, keep], into the held tokens
                x, ids = gather_tokens(x, chosen), ids.gather(1, chosen)
            places.append(ids)
            if self.relation and i in self.relation_layers:
                own = attention_logits(block.attn, block.norm1(x)).softmax(-1)  # [B, H, n, n]
                relations.append(relation_loss(own, restrict(maps[i], ids).softmax(-1)))
            x = block(x)
        return StudentPass(enc.transformer.norm(x), places, relations)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        maps = teacher_attention(self.teacher, images)
        tokens, places, relations = self.student(images, maps)
        loss = tokens.new_zeros((), dtype=torch.float32)
        metrics = {}
        if self.relation:
            rel = torch.stack(relations).mean()
            loss = loss + self.relation_weight * rel
            metrics["relation"] = rel.detach()
        if self.feature:
            target = gather_tokens(teacher_tokens(self.supervised_teacher, images), places[-1])  # [B, n, Dt]
            feat = F.smooth_l1_loss(self.head(tokens).float(), target.float())
            loss = loss + self.feature_weight * feat
            metrics["feature"] = feat.detach()
        metrics["loss"] = loss.detach()
        metrics["kept_share"] = as_metric(self.counts[-1] / self.layout.n, loss)
        return ObjectiveOutput(loss, metrics)
