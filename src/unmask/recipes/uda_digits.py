"""Recipe `uda-digits`: unsupervised domain adaptation from handwritten to typeset digits with
Masked Feature Modeling (MFM, Zhou et al. 2025, arXiv:2509.13801; `objectives/mfm_uda.py`) on top
of mean-teacher self-training (DACS's pseudo-label rule).

Source: scikit-learn's handwritten digits with their labels; target: typeset '0'..'9' of nine DejaVu
faces, shifted, scaled and blurred, without labels (`data/domain_shift.py`). A small ViT (16 x 16
images, patch 4: 16 tokens) reads both; the figure is the deployed network's accuracy (encoder and
head, no Rebuilder) on renders of three held-out faces, and on the held-out handwritten digits.

    unmask train uda-digits --out runs/uda                                   # MFM
    unmask train uda-digits objective.mfm=false --out runs/uda-st            # self-training alone
    unmask train uda-digits objective.mfm=false objective.self_training=false --out runs/uda-src
    unmask eval runs/uda
    unmask sample runs/uda --n 8        # held-out typeset renders over the mean handwritten digit of each prediction
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data.domain_shift import DomainShift, RenderShift, digit_domains, perturb
from ..data.image_sets import save_grid
from ..nn.mae import MAEConfig, MaskedEncoder, init_mae
from ..objectives.mfm_uda import (
    DACS_MOMENTUM,
    DACS_THRESHOLD,
    MFM_RATIO,
    WEIGHTINGS,
    MaskedFeatureUDA,
    Rebuilder,
    TokenClassifier,
)
from ..train import TrainConfig
from .base import NoSettings, Recipe, TransformerSettings, memo
from .run import Run

SIZE, PATCH, CLASSES = 16, 4, 10


@dataclass(frozen=True)
class Model(TransformerSettings):
    dim: int = option(64, lo=8, help="Transformer width")
    depth: int = option(2, lo=1, help="Transformer blocks")
    rebuilder_depth: int = option(2, lo=1, help="Rebuilder blocks (MFM: 2)")


@dataclass(frozen=True)
class Data:
    target_test: int = option(600, lo=10, help="renders of the held-out faces scored by eval")
    seed: int = option(0, lo=0, help="seed of the target renders (the same for every run by default)")
    augment: float = option(0.05, lo=0.0, hi=0.3, help="the student's augmentation: shift up to this share of "
                                                       "the side, scale by up to twice it, blur up to 1 px; 0: none")


@dataclass(frozen=True)
class Objective:
    mfm: bool = option(True, help="the MFM term; false: the self-training baseline")
    self_training: bool = option(True, help="mean-teacher self-training on the target; both false: source only")
    ratio: float = option(MFM_RATIO, lo=0.0, hi=1.0, help="share of target feature tokens hidden (MFM: 0.4)")
    weight: float = option(1.0, lo=0.0, help="weight of the MFM term")
    threshold: float = option(DACS_THRESHOLD, lo=0.0, hi=1.0, help="pseudo-label confidence threshold (DACS)")
    momentum: float = option(DACS_MOMENTUM, lo=0.0, hi=1.0, hi_open=True, help="EMA teacher's alpha (DACS)")
    weighting: str = option("share", choices=WEIGHTINGS, help="share: DACS's one weight per batch; mask: per example")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=600, batch_size=64, lr=1e-3, warmup=20))
    model: Model = section(Model())
    data: Data = section(Data())
    objective: Objective = section(Objective())
    sampler: NoSettings = section(NoSettings())
    eval: NoSettings = section(NoSettings())


class UDADigits(Recipe):
    name = "uda-digits"
    papers = ("P50 MFM-UDA",)
    summary = "domain adaptation, handwritten -> typeset digits: masked feature modeling on self-training"
    Settings = Settings

    def model_config(self) -> MAEConfig:
        m = self.settings.model
        return MAEConfig(image_size=(SIZE, SIZE), channels=1, patch=PATCH, dim=m.dim, depth=m.depth,
                         heads=m.heads, cls_token=False, hide="drop")

    def domains(self) -> DomainShift:
        d = self.settings.data
        return memo(("uda-digits", d.target_test, d.seed),
                    lambda: digit_domains(SIZE, target_test=d.target_test, seed=d.seed))

    def build(self) -> MaskedFeatureUDA:
        cfg, m, o = self.model_config(), self.settings.model, self.settings.objective
        encoder, head = MaskedEncoder(cfg), TokenClassifier(m.dim, CLASSES)
        init_mae(encoder)
        rebuilder = Rebuilder(m.dim, cfg.grid, width=m.dim, depth=m.rebuilder_depth, heads=m.heads)
        return MaskedFeatureUDA(encoder, head, rebuilder if o.mfm else None, mfm=o.mfm,
                                self_training=o.self_training, ratio=o.ratio, mfm_weight=o.weight,
                                threshold=o.threshold, momentum=o.momentum, weighting=o.weighting,
                                augment=self.augment())

    def augment(self):
        share = self.settings.data.augment
        if share == 0:
            return None
        jitter = RenderShift(shift=share, scale=2 * share, blur=1.0)

        def augment(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            return perturb(images, jitter, generator)

        return augment

    def training_data(self, run: Run) -> dict[str, torch.Tensor]:
        """Source images and labels, and as many unlabelled target renders, paired by row."""
        d = self.domains()
        return {"source": d.source_train.images, "labels": d.source_train.labels, "target": d.target_train.images}

    @torch.no_grad()
    def measure(self, run: Run, objective: MaskedFeatureUDA) -> dict:
        d, out = self.domains(), {}
        for name, domain in (("target_test", d.target_test), ("target_train", d.target_train),
                             ("source_test", d.source_test)):
            right = objective.predict(domain.images).argmax(-1) == domain.labels
            out[f"accuracy_{name}"] = right.float().mean().item()
        return out

    @torch.no_grad()
    def sample(self, run: Run, objective: MaskedFeatureUDA, n: int, out: Path, prompt: str | None = None) -> Path:
        """The first n held-out target renders (top row) over the mean handwritten source digit of the
        class the deployed network predicts for each (bottom row), as one PNG."""
        d = self.domains()
        shown = d.target_test.images[:n]  # [n, 1, S, S]
        predicted = objective.predict(shown).argmax(-1)  # [n]
        means = torch.stack([d.source_train.images[d.source_train.labels == k].mean(0) for k in range(CLASSES)])
        rows = torch.cat([shown, means[predicted]])  # [2n, 1, S, S]
        out = self.sample_path(out)
        save_grid((rows.clamp(0, 1) * 255).round().to(torch.uint8), out, columns=len(shown))
        return out
