"""MaskGCT's semantic tokens (Wang et al. 2024, "MaskGCT: Zero-Shot Text-to-Speech with Masked Generative
Codec Transformer", arXiv:2409.00750, section 3.2): speech units are the k-means clusters of a
self-supervised speech encoder's hidden features (w2v-BERT 2.0 there), so that they keep what is said and
lose most of how it sounds.

Here the encoder is w2v-BERT (Chung et al. 2021, arXiv:2108.06209; `objectives/w2v_bert.py`) trained
briefly on the speech train split in `RUN/w2v` with the one Trainer; its features after `layer` blocks
(Float[M, T / 2, D], one per two log-mel frames, aligned with the acoustic tokens of `down` = 2) are
clustered by k-means (`nn/point_tokenizer.kmeans`, k-means++ seeds, drawn from the training seed) over
every latent frame of the train split. A frame's token is its nearest centroid:

    semantic_tokens(run, settings, seed, split) -> Long[M, T / 2]

MaskGCT clusters the 17th layer of a 24-layer encoder (the middle); `layer` picks ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import option, to_dict
from ..data import speech
from ..nn.point_tokenizer import kmeans, nearest
from ..objectives.w2v_bert import W2VBert
from ..seeding import seeded
from ..train import TrainConfig, fit
from .base import memo
from .run import Run

ROLE = "w2v"
NAME = "speech-w2v-bert"  # what the encoder's config.json records as the recipe


@dataclass(frozen=True)
class SemanticSettings:
    steps: int = option(300, lo=1, help="training steps of the w2v-BERT encoder")
    dim: int = option(64, lo=8, help="w2v-BERT width")
    depth: int = option(4, lo=2, help="w2v-BERT blocks (the first half contrastive, the rest MLM)")
    layer: int = option(3, lo=0, help="blocks whose output is clustered (0 = the positioned latents)")
    codes: int = option(64, lo=2, help="k-means clusters: the semantic vocabulary")
    kmeans_steps: int = option(30, lo=1, help="Lloyd steps of the k-means")

    def encoder(self) -> W2VBert:
        return W2VBert(40, self.dim, self.depth, 4, contrast_depth=self.depth // 2)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=32, lr=2e-3, warmup=min(40, self.steps // 10), seed=seed,
                           log_every=max(1, self.steps // 5))

    def run_config(self) -> dict:
        model = {"dim": self.dim, "depth": self.depth}
        return {"recipe": NAME, "role": ROLE, "settings": to_dict(self), "model": model}


def train_semantic_encoder(run: Run, settings: SemanticSettings, seed: int, frames: int = 48) -> W2VBert:
    """Train (or resume, or load) w2v-BERT on the speech train split in `RUN/w2v`; returns it in eval mode."""
    data = speech.frames("train", frames)
    with seeded(seed):
        objective = settings.encoder()
    sub = run.sub(ROLE)
    trained = fit(objective, {"mel": data.mel, "lengths": data.lengths}, settings.train_config(seed), sub.folder,
                  settings.run_config(), sub.progress, sub.changes)
    return trained.eval()


@torch.no_grad()
def encoder_features(encoder: W2VBert, mel: torch.Tensor, layer: int, batch: int = 256) -> torch.Tensor:
    """mel Float[M, T, 40] -> Float[M, ceil(T / 2), D] on the host."""
    return torch.cat([encoder.features(chunk, layer).float().cpu() for chunk in mel.split(batch)])


def semantic_tokens(run: Run, settings: SemanticSettings, seed: int, split: str, frames: int = 48) -> torch.Tensor:
    """Long[M, ceil(frames / 2)]: a speech split (rows in `speech.frames(split)` order) as semantic tokens,
    computed once per run, checkpoint, settings and split."""

    def centroids() -> torch.Tensor:  # Float[codes, D], from the train split's frames
        encoder = train_semantic_encoder(run, settings, seed, frames)
        x = encoder_features(encoder, speech.frames("train", frames).mel, settings.layer)
        return kmeans(x.flatten(0, 1), settings.codes, steps=settings.kmeans_steps,
                      generator=torch.Generator().manual_seed(seed))

    base = (str(run.folder.resolve()), run.sub(ROLE).trained_step(), tuple(sorted(to_dict(settings).items())), seed,
            frames)
    c = memo(("semantic-centroids",) + base, centroids)

    def tokens() -> torch.Tensor:
        encoder = train_semantic_encoder(run, settings, seed, frames)
        x = encoder_features(encoder, speech.frames(split, frames).mel, settings.layer)  # [M, T', D]
        return nearest(x.flatten(0, 1), c).view(x.shape[:2])

    return memo(("semantic-tokens", split) + base, tokens)
