"""BEATs (Chen, Wu, Wang, Wu, Tompkins, Chen, Che, Yu, Wei 2023, "BEATs: Audio Pre-Training with
Acoustic Tokenizers", arXiv:2212.09058; OpenBEATs, Bharadwaj et al. 2025, arXiv:2507.14129): an
audio encoder learns by predicting, at masked log-mel patches, the discrete labels an acoustic
tokenizer gives them, and the tokenizer of the next round is distilled from this encoder.

`BEATs` on log-mel frames mel: Float[B, T, mels] (batch {"mel", optional "lengths"}):
- patches of 2 frames x all mels (`nn/acoustic_labels.patches`), utterance standardised, a linear
  embedding plus learned positions: x Float[B, N, D], N = ceil(T / 2);
- exactly round(ratio * N) patches of each row hidden (`masking.RandomMask`, ratio 0.75 as BEATs);
- the encoder sees only the visible patches (MAE-style drop, as BEATs: `nn/visible.py`); a light
  predictor (one block) reads the encoder output with a learned mask vector put back at the hidden
  places (positions added again) and a linear head gives logits over the tokenizer's codes;
- loss: cross-entropy against the tokenizer's label of each hidden patch, averaged over hidden
  patches only (padding patches included: they are silence and get silence's label).
The tokenizer is any module mel -> Long[B, N] (frozen here: it is kept in eval mode, its weights out
of the optimiser's reach since nothing in the loss reaches them).

`features(mel)` is the frozen encoder on all patches (nothing hidden): Float[B, N, D], the
teacher of the next round's tokenizer and the features the probes read.

`Distillation` trains a `DistilledTokenizer` against a frozen teacher (a trained `BEATs`): the
estimator's output from the quantized codes must match the teacher's feature of every valid patch
by cosine (`distillation_loss`), plus the VQ loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from ..masking.random import RandomMask
from ..nn import Transformer
from ..nn.acoustic_labels import FRAMES, DistilledTokenizer, distillation_loss, patch_lengths, patches, standardise
from ..nn.transformer import init_weights
from ..nn.visible import gather_tokens, restore, split_visible
from .base import ObjectiveOutput
from .mae import masked_mean


class BEATs(nn.Module):
    """Masked acoustic-label prediction (see the module docstring); batch -> ObjectiveOutput."""

    def __init__(self, tokenizer: nn.Module, codes: int, mels: int = 40, dim: int = 64, depth: int = 4,
                 heads: int = 4, ratio: float = 0.75, frames: int = FRAMES, max_patches: int = 64):
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must lie in (0, 1) (some patch must stay visible), got {ratio}")
        self.ratio, self.frames, self.codes = ratio, frames, codes
        self.masker = RandomMask()
        self.embed = nn.Linear(frames * mels, dim)
        self.position = nn.Parameter(torch.zeros(max_patches, dim))
        self.encoder = Transformer(dim, depth, heads)
        self.mask_embedding = nn.Parameter(torch.zeros(dim))
        self.predictor = Transformer(dim, 1, heads)
        self.head = nn.Linear(dim, codes)
        init_weights(self)
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.mask_embedding, std=0.02)
        self.tokenizer = tokenizer  # after init_weights: a given tokenizer keeps its own weights
        self.tokenizer.requires_grad_(False)

    def embedded(self, mel: torch.Tensor) -> torch.Tensor:
        """mel Float[B, T, mels] -> patch embeddings with positions Float[B, N, D]."""
        x = self.embed(patches(standardise(mel), self.frames))
        return x + self.position[: x.shape[1]]

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel Float[B, T, mels] -> the encoder's final output on every patch, Float[B, ceil(T / 2), D]."""
        return self.encoder(self.embedded(mel))

    @torch.no_grad()
    def targets(self, mel: torch.Tensor) -> torch.Tensor:
        """Long[B, N]: the tokenizer's labels (tokenizer in eval mode: no VQ restarts while labelling)."""
        self.tokenizer.eval()
        return self.tokenizer(mel)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        mel = batch["mel"].to(self.position.device, non_blocking=True)
        x = self.embedded(mel)
        b, n = x.shape[:2]
        mask = self.masker(Layout.seq(n), b, ratio=self.ratio, generator=generator)  # host: indexing reads it
        index = split_visible(mask).to(x.device)
        mask = mask.to(x.device, non_blocking=True)
        encoded = self.encoder(gather_tokens(x, index.ids_keep))
        full = restore(encoded, self.mask_embedding.to(x.dtype).view(1, 1, -1), index) + self.position[:n]
        logits = self.head(self.predictor(full)).float()  # [B, N, codes]
        ids = self.targets(mel)
        ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, N]
        loss = masked_mean(ce, mask)
        metrics = {"loss": loss.detach(), "acc": masked_mean((logits.argmax(-1) == ids).float(), mask).detach(),
                   "masked": mask.float().mean()}
        return ObjectiveOutput(loss, metrics)


class Distillation(nn.Module):
    """Trains `tokenizer` to predict `teacher.features` through its quantized codes; batch {"mel",
    optional "lengths"} -> ObjectiveOutput. The teacher is frozen and kept in eval mode."""

    def __init__(self, tokenizer: DistilledTokenizer, teacher: BEATs):
        super().__init__()
        self.tokenizer, self.teacher = tokenizer, teacher
        self.teacher.requires_grad_(False)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        mel = batch["mel"].to(self.teacher.position.device, non_blocking=True)
        self.teacher.eval()
        with torch.no_grad():
            target = self.teacher.features(mel)  # [B, N, D]
        n = target.shape[1]
        lengths = batch.get("lengths")
        if lengths is None:
            valid = torch.ones(target.shape[:2], dtype=torch.bool, device=mel.device)
        else:
            valid = torch.arange(n, device=mel.device) < patch_lengths(lengths, self.tokenizer.frames).to(
                mel.device, non_blocking=True).unsqueeze(1)
        q = self.tokenizer.quantize(mel, generator)
        distill = distillation_loss(self.tokenizer.estimate(q.quantized), target, valid)
        loss = distill + q.loss
        return ObjectiveOutput(loss, {"loss": loss.detach(), "cosine": 1 - distill.detach(), "vq": q.loss.detach(),
                                      "perplexity": q.perplexity, "used": q.used_share})
