"""Recipe `digits`: one masked model over label + pixel tokens that both understands and generates
(the any-to-any idea of 4M, Mizrahi et al. 2023, arXiv:2312.06647, P59, at the scale of 8x8 digits).

Training hides a schedule-drawn share of each segment independently (so the label is sometimes the
only thing hidden, sometimes the only thing shown). The same weights then predict the label from
the pixels, draw class-conditional digits, and inpaint.

    unmask train digits --out runs/digits                 # train, then evaluate
    unmask eval runs/digits sampler.name=first-hitting    # metrics.json, figures, report.md again
    unmask sample runs/digits --n 100                     # runs/digits/samples.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import digits
from ..errors import UnmaskError
from ..eval.digits import evaluate as evaluate_digits
from ..eval.figures import digit_grid
from ..masking import BlockMask, EdgeMask, MixtureMask, RandomMask
from ..nn import MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..schedules import SCHEDULES, Schedule
from ..train import TrainConfig
from .base import Recipe, SamplerSettings, TransformerSettings
from .report import Metric, Report, Table


@dataclass(frozen=True)
class Objective:
    label_weight: float = option(0.4, lo=0.0, hi=1.0, help="share of the loss on the label segment")
    schedule: str = option("linear", choices=SCHEDULES, help="training mask-ratio schedule")
    block_share: float = option(0.5, lo=0.0, hi=1.0, help="share of rows whose pixels are hidden in blocks "
                                "(BEiT's block-wise masks) instead of at random; their label stays given")
    edge_share: float = option(0.0, lo=0.0, hi=1.0, help="share of rows whose pixels are hidden from one edge "
                               "inwards (MaskGIT's outpainting masks); their label stays given")


@dataclass(frozen=True)
class Eval:
    n_samples: int = option(500, lo=10, help="class-conditional samples drawn by eval")
    n_inpaint: int = option(100, lo=1, hi=360, help="held-out digits whose bottom half is also sampled")
    inpaint_draws: int = option(4, lo=1, help="sampled completions per inpainted digit")
    elbo_draws: int = option(4, lo=1, help="mask draws per held-out digit for the negative ELBO")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=2400, batch_size=64, lr=2e-3, warmup=100, checkpoint_every=600))
    model: TransformerSettings = section(TransformerSettings(dim=64))
    objective: Objective = section(Objective())
    sampler: SamplerSettings = section(SamplerSettings("ancestral", 16, temperature=0.9))
    eval: Eval = section(Eval())


class Digits(Recipe):
    name = "digits"
    papers = ("P59",)
    summary = "label + pixel tokens of 8x8 digits: one model classifies, generates and inpaints"
    Settings = Settings

    def check(self) -> None:
        o = self.settings.objective
        if o.block_share + o.edge_share > 1:
            raise UnmaskError(f"objective.block_share + objective.edge_share = {o.block_share + o.edge_share} "
                              "is more than 1")

    def model_config(self) -> ModelConfig:
        m = self.settings.model
        return ModelConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab=digits.SEGMENT_VOCAB)

    def build(self) -> MaskedTokenModeling:
        o = self.settings.objective
        weights = {"label": o.label_weight, "pixels": 1.0 - o.label_weight}
        masker = RandomMask()
        if o.block_share or o.edge_share:
            blocks = BlockMask(("pixels",), min_area=4)  # BEiT's 16 of 196 patches, scaled to 64
            masker = MixtureMask(maskers=(RandomMask(), blocks, EdgeMask(("pixels",))),
                                 weights=(1 - o.block_share - o.edge_share, o.block_share, o.edge_share))
        return MaskedTokenModeling(MaskedTokenModel(self.model_config()), masker, Schedule(o.schedule),
                                   per_segment=True, segment_weights=weights)

    def training_data(self, run) -> dict:
        return {"tokens": digits.load("train").tokens}

    def measure(self, run, objective: MaskedTokenModeling) -> dict:
        s = self.settings
        e = s.eval
        metrics, images, filled, truth = evaluate_digits(
            objective.model, s.sampler.build(), n_samples=e.n_samples, n_inpaint=e.n_inpaint, k=e.inpaint_draws,
            seed=s.train.seed, elbo_draws=e.elbo_draws, progress=run.progress)
        order = torch.cat([torch.nonzero(torch.arange(len(images)) % 10 == c).squeeze(1)[:10] for c in range(10)])
        digit_grid(images[order].numpy(), 10, 10, run.file("samples.png"),
                   "class-conditional samples (row = class)", [str(c) for c in range(10)])
        k = 10
        given = truth.images[:k].clone()
        given[:, 32:] = 0  # drawn blank: the hidden half
        rows = torch.cat([given, filled[:k, 1:], truth.images[:k]])
        digit_grid(rows.numpy(), 3, k, run.file("inpaint.png"),
                   "inpainting: label and top half given / generated / truth", ["given", "generated", "truth"])
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        rows = (
            Metric("label_accuracy", "label accuracy (held-out, label hidden)", 0.93, "higher"),
            Metric("conditional_accuracy", f"conditional accuracy ({s.eval.n_samples} samples, "
                   "logistic-regression judge)", 0.85, "higher"),
            Metric("classifier_test_accuracy", "judge's own test accuracy on real digits"),
            Metric("novelty", "novelty (not a copy of a training image)", 0.95, "higher"),
            Metric("frechet_distance", "Frechet distance of the samples to held-out digits"),
            Metric("precision", "precision of the samples (k-NN manifold)"),
            Metric("recall", "recall of the samples (k-NN manifold)"),
            Metric("heldout_nelbo_bits", "held-out negative ELBO, bits per pixel token", better="lower"),
            Metric("inpaint_mse", "inpainting MSE, posterior-mean fill (label and top half given; 360 held-out)",
                   "inpaint_mse_class_mean", "lower"),
            Metric("inpaint_mse_mean_of_k", f"inpainting MSE, mean of {s.eval.inpaint_draws} sampled completions "
                   f"(first {s.eval.n_inpaint} held-out)"),
            Metric("inpaint_mse_single", "inpainting MSE, one sampled completion (2x posterior variance)"),
        )
        setup = (f"{self.setup()} Sampler `{s.sampler.name}` with {s.sampler.steps} steps (the 4M idea: one model "
                 "classifies, generates and inpaints).")
        return Report("digits: one masked model that classifies, generates and inpaints", setup, (Table(rows),),
                      (("class-conditional samples", "samples.png"), ("inpainting", "inpaint.png")))

    @torch.no_grad()
    def sample(self, run, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
        """n class-conditional samples (classes in turn), drawn into a PNG."""
        from ..eval.digits import conditional_canvas, sample_batched

        labels = torch.arange(n) % digits.CLASSES
        g = torch.Generator().manual_seed(self.settings.train.seed)
        tokens, _ = sample_batched(objective.model.eval(), conditional_canvas(labels), self.settings.sampler.build(), g)
        images, _ = digits.decode(tokens)
        cols = min(n, 10)
        rows = -(-n // cols)
        padded = torch.zeros(rows * cols, 64, dtype=torch.long)
        padded[:n] = images
        out = self.sample_path(out)
        digit_grid(padded.numpy(), rows, cols, out, f"{n} class-conditional samples")
        return out
