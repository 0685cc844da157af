"""Recipe `ait`: dense outputs as tokens with soft-token decoding (All in Tokens, Ning et al. 2023,
arXiv:2301.02229; `objectives/ait.py`) on the emoji set (`data/image_sets.py`: Twemoji on white, 32 x
32, each with its object mask, alpha > 127).

A VQ tokenizer (van den Oord et al. 2017, arXiv:1711.00937) is trained first on the training emoji's
object MASKS (one channel, `RUN/tokenizer`, `recipes/image_tokens.py`); each mask becomes an 8 x 8 grid
of codes. A model then predicts those codes from the emoji's RGB pixels (`MaskTokenPredictor`, one
pass, cross-entropy). Evaluation decodes each held-out prediction twice, from the argmax codes and from
the soft codes (softmax-weighted codebook vectors), thresholds the decoded mask at 1/2 and scores the
mean IoU with the true mask, beside the tokenizer's own reconstruction of the true mask (the ceiling
of any token prediction) and the training set's mean mask (a floor that reads no image). The
defaults (tokenizer 600 steps, predictor 600) took 13 to 16 wall-minutes on one thread of a busy
2-core machine; docs/papers.md has the figures.

    unmask train ait --out runs/ait
    unmask train ait train.seed=1 --out runs/ait-1
    unmask sample runs/ait --n 16            # image, true mask, argmax mask, soft mask per row
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import image_sets
from ..objectives.ait import MaskTokenPrediction, MaskTokenPredictor, decode_argmax, decode_soft, mask_iou
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .image_tokens import ROLE, TokenizerSettings, load_tokenizer, stored_tokens, tokenizer_objective, train_tokenizer
from .report import Metric, Report, Table
from .run import Run

SET = "emoji"
SIZE = 32


@dataclass(frozen=True)
class Eval:
    batch_size: int = option(256, lo=1, help="held-out images per forward pass")


@dataclass(frozen=True)
class PredictorModel:
    """What identifies the network of a run: the mask tokenizer's config and the predictor's size."""
    tokenizer: dict
    dim: int
    depth: int
    heads: int


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=600, batch_size=64, lr=1e-3, warmup=30, log_every=50),
                                 help="the mask-token predictor's training; the tokenizer's is `tokenizer`")
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=2, heads=4))
    tokenizer: TokenizerSettings = section(TokenizerSettings(quantizer="vq", codes=64, code_dim=8, width=32,
                                                             steps=600), help="the VQ tokenizer of the masks")
    eval: Eval = section(Eval())


def mask_images(masks: torch.Tensor) -> torch.Tensor:
    """Bool[M, H, W] -> Uint8[M, 1, H, W], 0 or 255: a mask as a one-channel image."""
    return masks.unsqueeze(1).to(torch.uint8) * 255


class AiT(Recipe):
    name = "ait"
    papers = ("P46",)
    summary = "object masks of emoji as VQ tokens predicted from the image; soft-token vs argmax decoding (IoU)"
    Settings = Settings
    roles = ("main", ROLE)

    def emoji(self, split: str) -> image_sets.ImageSet:
        return image_sets.load(SET, split)

    def model_config(self) -> PredictorModel:
        m = self.settings.model
        return PredictorModel(self.settings.tokenizer.config(SIZE, 1).to_dict(), m.dim, m.depth, m.heads)

    def build_role(self, role: str):
        t = self.settings.tokenizer
        if role == ROLE:
            return tokenizer_objective(t, SIZE, 1)
        if role != "main":
            return super().build_role(role)
        m, config = self.settings.model, t.config(SIZE, 1)
        return MaskTokenPrediction(MaskTokenPredictor(3, SIZE, config.grid[0], config.codebook_size,
                                                      m.dim, m.depth, m.heads))

    def build(self) -> MaskTokenPrediction:
        return self.build_role("main")

    def training_data(self, run: Run) -> dict:
        """The training emoji and their masks' codes (the mask tokenizer is trained first, once per run)."""
        train = self.emoji("train")
        masks = mask_images(train.masks)
        tokenizer = train_tokenizer(self, run, masks)
        return {"images": train.images, "tokens": stored_tokens(run, tokenizer, "train-masks", masks)}

    def decoded(self, run: Run, objective: MaskTokenPrediction, images: torch.Tensor) -> dict:
        """{"argmax", "soft"}: Bool[M, H, W] masks decoded from the predicted codes of images Uint8[M, 3, H, W]."""
        tokenizer = load_tokenizer(self, run)
        h, w = tokenizer.grid
        out: dict = {"argmax": [], "soft": []}
        objective.eval()
        with torch.inference_mode():
            for chunk in images.split(self.settings.eval.batch_size):
                probs = objective.predictor(chunk).float().softmax(-1).unflatten(1, (h, w))  # [B, h, w, K]
                out["argmax"].append(decode_argmax(tokenizer, probs)[:, 0].cpu() > 0.5)
                out["soft"].append(decode_soft(tokenizer, probs)[:, 0].cpu() > 0.5)
        return {k: torch.cat(v) for k, v in out.items()}

    def measure(self, run: Run, objective: MaskTokenPrediction) -> dict:
        train, test = self.emoji("train"), self.emoji("test")
        tokenizer = load_tokenizer(self, run)
        with torch.inference_mode():
            rebuilt = torch.cat([tokenizer.decode(tokenizer.encode(c))[:, 0].cpu() > 0.5
                                 for c in mask_images(test.masks).split(self.settings.eval.batch_size)])
        mean_mask = (train.masks.float().mean(0) > 0.5).expand_as(test.masks)
        masks = self.decoded(run, objective, test.images)
        return {"train_images": len(train), "test_images": len(test),
                "iou_soft": mask_iou(masks["soft"], test.masks).mean().item(),
                "iou_argmax": mask_iou(masks["argmax"], test.masks).mean().item(),
                "iou_tokenizer": mask_iou(rebuilt, test.masks).mean().item(),
                "iou_mean_mask": mask_iou(mean_mask, test.masks).mean().item(),
                "soft_differs": (masks["soft"] != masks["argmax"]).float().mean().item()}

    def report(self, metrics: dict) -> Report:
        rows = (Metric("iou_soft", "held-out mask IoU, soft-token decoding", "iou_argmax", "higher"),
                Metric("iou_argmax", "held-out mask IoU, argmax decoding", "iou_mean_mask", "higher"),
                Metric("iou_tokenizer", "the mask tokenizer's reconstruction of the true mask (ceiling)"),
                Metric("iou_mean_mask", "the training set's mean mask (floor: reads no image)"),
                Metric("soft_differs", "share of pixels where soft and argmax masks differ"))
        t = self.settings.tokenizer
        text = (f"{metrics.get('test_images')} held-out emoji; masks as 8 x 8 codes of a VQ tokenizer of {t.codes} "
                f"codes trained {t.steps} steps first; mean per-image IoU of the decoded mask (> 1/2).")
        return Report("ait", self.setup(), (Table(rows, "Soft-token vs argmax decoding of predicted mask tokens",
                                                  text),))

    def sample(self, run: Run, objective: MaskTokenPrediction, n: int, out: Path) -> Path:
        """A PNG: for each of the first n held-out emoji a row of image, true mask, argmax mask, soft mask."""
        test = self.emoji("test")
        images, truth = test.images[:n], test.masks[:n]
        masks = self.decoded(run, objective, images)
        rgb = [mask_images(m).expand(-1, 3, -1, -1) for m in (truth, masks["argmax"], masks["soft"])]
        tiles = torch.stack([images, *rgb], 1).flatten(0, 1)  # [n * 4, 3, H, W]
        path = self.sample_path(out)
        image_sets.save_grid(tiles.contiguous(), path, columns=4)
        return path
