"""Recipe `digits`: one masked model over label + pixel tokens that both understands and generates
(the any-to-any idea of 4M, Mizrahi et al. 2023, arXiv:2312.06647, P59, at the scale of 8x8 digits).

Training hides a schedule-drawn share of each segment independently (so the label is sometimes the
only thing hidden, sometimes the only thing shown). The same weights then predict the label from
the pixels, draw class-conditional digits, and inpaint.

    unmask train digits --out runs/digits                 # train, then evaluate
    unmask eval runs/digits sampler.name=first-hitting    # metrics.json, figures, report.md again
    unmask sample runs/digits --n 100                     # runs/digits/samples.png
    unmask train digits data.source=my_digits/ --out runs/mine   # your own images (docs/data.md)

With `data.source` the images are the user's (`data/user_images.py`: 8x8, 17 grey levels, classes
from subfolders, a hash split). Without labels (no class subfolders, or only one) the label segment
carries no loss and holds one constant token, samples are unconditional, and the metrics that need
labels are left out; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import digits
from ..data.user_images import UserImages, read_images
from ..errors import UnmaskError
from ..eval.digits import FillRule
from ..eval.digits import evaluate as evaluate_digits
from ..eval.figures import digit_grid
from ..masking import BlockMask, EdgeMask, MixtureMask, RandomMask
from ..nn import MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..schedules import SCHEDULES, Schedule
from ..train import TrainConfig
from .base import Recipe, SamplerSettings, TransformerSettings, memo
from .report import Metric, Report, Table
from .run import Run

QUALITY_K = 3  # neighbours of the precision / recall manifolds: more held-out images than this are needed


@dataclass(frozen=True)
class ImageData:
    """Where the digit recipes' images come from: scikit-learn's digits, or the user's own."""
    source: str = option("", help="your images: a folder of PNG / JPEG (one class per subfolder), a glob, or a "
                                  ".npy array [N, H, W]; empty: scikit-learn's 8x8 digits")
    labels: str = option("", help="a .npy of one label (integer or string) per image of a .npy source")
    invert: bool = option(False, help="turn grey levels around: dark ink on light paper becomes bright ink on "
                                      "dark, as in the embedded digits")
    white: float = option(0.0, lo=0.0, help="value of white in a .npy source; 0: by its dtype (uint8 255, "
                                            "uint16 65535, float 1)")

    def read(self, run: Run | None = None, size: tuple[int, int] = (8, 8), levels: int = digits.LEVELS) -> UserImages:
        """The images of `source` as `size` grids of `levels` grey levels (the digits' 8x8 and 17 by
        default), read once per process; with `run`, what was read and skipped is written as
        RUN/data.json."""
        images = memo(("user-images", self, size, levels), lambda: read_images(
            self.source, size=size, levels=levels, labels=self.labels, invert=self.invert, white=self.white))
        if run is not None:
            run.write_json("data.json", images.to_dict())
        return images


@dataclass(frozen=True)
class Objective:
    label_weight: float = option(0.05, lo=0.0, hi=1.0, help="share of the loss on the label segment (the "
                                 "one label token against 64 pixels: a larger share starves the pixels' loss)")
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
    fill_views: int = option(1, lo=1, help="mask patterns averaged by the inpainting fill: the bottom half "
                             "alone, then with fill_top_hidden of the top half hidden too")
    fill_top_hidden: float = option(0.5, lo=0.0, hi=1.0, help="share of the top half's pixels each further "
                                    "view of the fill also hides")
    fill_temperature: float = option(1.0, lo=0.0, lo_open=True, help="softmax temperature of the fill's "
                                     "expected grey level (1: the posterior mean)")

    def fill(self) -> FillRule:
        return FillRule(self.fill_temperature, self.fill_views, self.fill_top_hidden)


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=2400, batch_size=64, lr=2e-3, warmup=100, checkpoint_every=600))
    model: TransformerSettings = section(TransformerSettings(dim=64))
    data: ImageData = section(ImageData())
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
        split = self.user_split(run, "train") if self.settings.data.source else digits.load("train")
        return {"tokens": split.tokens}

    def user_split(self, run, split: str) -> digits.DigitsSplit:
        """A split of the user's images; without labels every image holds the label token of class 0."""
        data = self.settings.data.read(run)
        if len(data.classes) > digits.CLASSES:
            raise UnmaskError(f"data.source={self.settings.data.source} has {len(data.classes)} classes; the digits "
                              f"recipe has {digits.CLASSES} label tokens")
        images, labels = data.part(split)
        return digits.DigitsSplit(images, labels if data.labelled else torch.zeros_like(labels))

    def prepare(self, run, objective: MaskedTokenModeling, data: dict) -> None:
        if self.settings.data.source and not self.settings.data.read(run).labelled:
            objective.segment_weights[objective.layout.names.index("label")] = 0.0  # a constant has nothing to teach

    def measure(self, run, objective: MaskedTokenModeling) -> dict:
        if self.settings.data.source:
            return self.measure_user(run, objective)
        s = self.settings
        e = s.eval
        metrics, images, filled, truth = evaluate_digits(
            objective.model, s.sampler.build(), n_samples=e.n_samples, n_inpaint=e.n_inpaint, k=e.inpaint_draws,
            seed=s.train.seed, elbo_draws=e.elbo_draws, fill=e.fill(),
            progress=run.progress)
        self.figures(run, images, [str(c) for c in range(digits.CLASSES)], filled, truth)
        return metrics

    @torch.no_grad()
    def measure_user(self, run, objective: MaskedTokenModeling) -> dict:
        """`eval/digits.py`'s metrics on the held-out share of the user's images, drawn in the same order;
        those that need labels only when there are two classes or more."""
        from ..eval import digits as judge
        from ..eval.quality import digit_quality

        s, e = self.settings, self.settings.eval
        data, train, test = s.data.read(run), self.user_split(run, "train"), self.user_split(run, "test")
        model, sampler = objective.model.eval(), s.sampler.build()
        g = torch.Generator().manual_seed(s.train.seed)
        metrics = {"label_accuracy": judge.label_accuracy(model, test)} if data.labelled else {}
        labels = torch.arange(e.n_samples) % max(1, len(data.classes))
        images, _ = digits.decode(judge.sample_batched(model, judge.conditional_canvas(labels), sampler, g)[0])
        if data.labelled and len(train.labels.unique()) >= 2:  # the judge needs two classes to tell apart
            clf = judge.digit_classifier(train)
            metrics["conditional_accuracy"] = float((torch.from_numpy(clf.predict(images.numpy() / 16.0)) == labels)
                                                    .double().mean())
            metrics["classifier_test_accuracy"] = float(clf.score(test.images.numpy() / 16.0, test.labels.numpy()))
        seen = {tuple(row) for row in train.images.tolist()}
        metrics["novelty"] = sum(tuple(row) not in seen for row in images.tolist()) / len(images)
        if len(test.labels) > QUALITY_K:
            quality = digit_quality(images, test.images, QUALITY_K)
            metrics |= {"frechet_distance": quality.fd, "precision": quality.precision, "recall": quality.recall}

        def mse(fill, truth):
            return ((fill - truth.images[:, 32:].double()) ** 2).mean().item()

        metrics |= e.fill().score(model, test, s.train.seed)
        mean = train.images.double().mean(0).expand(len(data.classes) or 1, -1).clone()
        for c in train.labels.unique().tolist():  # a class with no training image keeps the overall mean
            mean[c] = train.images[train.labels == c].double().mean(0)
        metrics["inpaint_mse_class_mean"] = mse(mean[test.labels][:, 32:], test)
        n, k = min(e.n_inpaint, len(test.labels)), e.inpaint_draws
        part = digits.DigitsSplit(test.images[:n], test.labels[:n])
        filled, _ = judge.sample_batched(model, judge.inpaint_canvas(part).repeat_interleave(k, 0), sampler, g)
        drawn = filled[:, 1 + 32:].double().view(n, k, 32)
        metrics["inpaint_mse_mean_of_k"] = mse(drawn.mean(1), part)
        metrics["inpaint_mse_single"] = mse(drawn[:, 0], part)
        metrics["heldout_nelbo_bits"] = judge.heldout_nelbo_bits(model, test, draws=e.elbo_draws, seed=s.train.seed)
        metrics["training_images"], metrics["held_out_images"] = len(train.labels), len(test.labels)
        self.figures(run, images, list(data.classes) if data.labelled else [""], filled[::k], part)
        return metrics

    def figures(self, run, images: torch.Tensor, classes: list[str], filled: torch.Tensor,
                truth: digits.DigitsSplit) -> None:
        """samples.png (a row per class, conditioned in turn) and inpaint.png (given / generated / truth)."""
        rows = min(len(classes), 10)
        picked = [torch.nonzero(torch.arange(len(images)) % len(classes) == c).squeeze(1)[:10] for c in range(rows)]
        digit_grid(images[torch.cat(picked)].numpy(), rows, 10, run.file("samples.png"),
                   "class-conditional samples (row = class)" if len(classes) > 1 else "samples",
                   classes[:rows] if len(classes) > 1 else None)
        k = min(10, len(truth.labels))
        given = truth.images[:k].clone()
        given[:, 32:] = 0  # drawn blank: the hidden half
        digit_grid(torch.cat([given, filled[:k, 1:], truth.images[:k]]).numpy(), 3, k, run.file("inpaint.png"),
                   "inpainting: label and top half given / generated / truth", ["given", "generated", "truth"])

    def report(self, metrics: dict) -> Report:
        s = self.settings
        user = bool(s.data.source)
        held_out = metrics.get("held_out_images", 360)

        def bar(value):  # the fixed bars are the embedded digits'; another data set has none
            return None if user else value

        rows = (
            Metric("label_accuracy", "label accuracy (held-out, label hidden)", bar(0.93), "higher"),
            Metric("conditional_accuracy", f"conditional accuracy ({s.eval.n_samples} samples, "
                   "logistic-regression judge)", bar(0.85), "higher"),
            Metric("classifier_test_accuracy", f"judge's own test accuracy on real {'images' if user else 'digits'}"),
            Metric("novelty", "novelty (not a copy of a training image)", bar(0.95), "higher"),
            Metric("frechet_distance", "Frechet distance of the samples to held-out "
                   f"{'images (digit feature space)' if user else 'digits'}"),
            Metric("precision", "precision of the samples (k-NN manifold)"),
            Metric("recall", "recall of the samples (k-NN manifold)"),
            Metric("heldout_nelbo_bits", "held-out negative ELBO, bits per pixel token", better="lower"),
            Metric("inpaint_mse", f"inpainting MSE, posterior-mean fill (label and top half given; {held_out} "
                   f"held-out; {s.eval.fill_views} mask pattern{'s' if s.eval.fill_views > 1 else ''})",
                   "inpaint_mse_class_mean", "lower"),
            *((Metric("inpaint_mse_one_view", "inpainting MSE, posterior-mean fill from the bottom half's mask "
                      "alone"),) if s.eval.fill() != FillRule() else ()),
            Metric("inpaint_mse_mean_of_k", f"inpainting MSE, mean of {s.eval.inpaint_draws} sampled completions "
                   f"(first {min(s.eval.n_inpaint, held_out)} held-out)"),
            Metric("inpaint_mse_single", "inpainting MSE, one sampled completion (2x posterior variance)"),
            Metric("training_images", "training images"),
            Metric("held_out_images", "held-out images"),
        )
        setup = (f"{self.setup()} Sampler `{s.sampler.name}` with {s.sampler.steps} steps (the 4M idea: one model "
                 "classifies, generates and inpaints).")
        notes = ()
        if user:
            setup += f" Images: `{s.data.source}` at 8x8, 17 grey levels, held out by hash of the path."
            if "label_accuracy" not in metrics:
                notes = ("The images carry no labels (no class subfolders, or a single class): the label segment "
                         "was not trained, the samples are unconditional, the inpainting baseline is the mean "
                         "training image, and label accuracy and conditional accuracy are left out.",)
        return Report("digits: one masked model that classifies, generates and inpaints", setup, (Table(rows),),
                      (("class-conditional samples", "samples.png"), ("inpainting", "inpaint.png")), notes)

    @torch.no_grad()
    def sample(self, run, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
        """n class-conditional samples (classes in turn; with the user's images, their classes, or one
        constant label when there are none), drawn into a PNG."""
        from ..eval.digits import conditional_canvas, sample_batched

        classes = run.read_json("data.json")["classes"] if self.settings.data.source else range(digits.CLASSES)
        labels = torch.arange(n) % (len(classes) if len(classes) >= 2 else 1)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        tokens, _ = sample_batched(objective.model.eval(), conditional_canvas(labels), self.settings.sampler.build(), g)
        images, _ = digits.decode(tokens)
        cols = min(n, 10)
        rows = -(-n // cols)
        padded = torch.zeros(rows * cols, 64, dtype=torch.long)
        padded[:n] = images
        out = self.sample_path(out)
        digit_grid(padded.numpy(), rows, cols, out, f"{n} {'class-conditional ' if len(classes) >= 2 else ''}samples")
        return out
