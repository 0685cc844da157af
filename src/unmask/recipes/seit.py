"""Recipe `seit`: SeiT++ (Lee et al. 2024, "SeiT++: masked token modeling improves storage-efficient
training", arXiv:2312.10105): store the training images as the tokens of an image tokenizer (a few
hundred bits each instead of 8 bits per pixel), pre-train a Transformer on the stored tokens by
masked token modeling (hide a share drawn from a normal truncated to [0.5, 1],
`masking/truncated_normal.py`; predict the hidden tokens), then fine-tune it to classify token grids.
The claim is accuracy per stored bit: tokens with MTM pre-training close the gap to a classifier
trained on pixels at a fraction of the storage.

Roles, each a run of its own beside the MTM model in RUN (`recipes/image_tokens.py`):

    tokenizer   the image tokenizer (VQ or FSQ) trained on the train split's pixels (RUN/tokenizer)
    main        MTM pre-training on the stored train tokens (SeiT++'s pre-training)
    tokens      the classifier on tokens from random initialisation (RUN/tokens)
    finetune    the same classifier started from the MTM weights (RUN/finetune): SeiT++
    pixels      the same Transformer on 4 x 4 pixel patches (64 patches, as many as the 8 x 8 token
                grid), from random initialisation (RUN/pixels)

Every classifier trains `classify.steps` steps of `classify.batch_size` with the `train` section's
other settings, and mean-pools the final features into a linear head. Evaluation scores each on the
held-out renders (glyphs: other fonts), probes the frozen MTM features against the same network at
random initialisation (`eval/probe.py`'s logistic regression), and gives the storage of an image:
tokens h * w * log2(K) bits, pixels C * H * W * 8.

    unmask train seit --out runs/seit                  # glyphs, 111 classes
    unmask train seit train.seed=1 --out runs/seit-1
    unmask sample runs/seit --n 20                     # held-out glyphs: truth and prediction
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import option, section
from ..errors import UnmaskError
from ..eval.probe import linear_probe, pooled_features
from ..layout import Layout
from ..masking import RandomMask
from ..masking.truncated_normal import TruncatedNormalRatio
from ..nn import MaskedTokenModel, ModelConfig, PatchEmbed, Transformer, patchify
from ..nn.transformer import init_weights
from ..objectives import MaskedTokenModeling
from ..objectives.classification import PooledClassifier
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .image_tokenizer import CHANNELS, IMAGE_SIZE, image_set, pixel_bits
from .image_tokens import ROLE, TokenizerSettings, load_tokenizer, stored_tokens, tokenizer_objective, train_tokenizer
from .report import Metric, Report, Table
from .run import Run

CLASSIFIERS = ("tokens", "finetune", "pixels")  # roles, in the order they train
SETS = ("glyphs", "digits", "faces")  # the labelled sets (an emoji is a class of its own)


class PatchTransformer(nn.Module):
    """The pixel baseline: images Uint8[B, C, H, W] -> Float[B, L, D], L = (H / p)(W / p) patches
    embedded linearly (ViT, Dosovitskiy et al. 2021, arXiv:2010.11929), learned positions, the same
    `Transformer` as the token model."""

    def __init__(self, channels: int, image_size: int, patch: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.patch = patch
        self.embed = PatchEmbed(patch * patch * channels, dim)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        self.encoder = Transformer(dim, depth, heads)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = patchify(images.float() / 255.0, self.patch)  # [B, L, p*p*C]
        return self.encoder(self.embed(x) + self.pos)


@dataclass(frozen=True)
class Data:
    set: str = option("glyphs", choices=SETS, help="labelled embedded image set; its held-out split is the test set")
    patch: int = option(4, choices=(2, 4, 8), help="pixel baseline: side of a pixel patch")


@dataclass(frozen=True)
class Mtm:
    low: float = option(0.5, lo=0.0, hi=1.0, help="least share of tokens hidden")
    high: float = option(1.0, lo=0.0, hi=1.0, lo_open=True, help="largest share hidden")
    mean: float = option(0.55, help="mean of the normal before truncation")
    std: float = option(0.25, lo=0.0, lo_open=True, help="spread of the normal before truncation")

    def ratio(self) -> TruncatedNormalRatio:
        return TruncatedNormalRatio(self.low, self.high, self.mean, self.std)


@dataclass(frozen=True)
class Classify:
    steps: int = option(500, lo=1, help="optimizer steps of each classifier")
    batch_size: int = option(64, lo=1, help="images per step")
    lr: float = option(1e-3, lo=0.0, lo_open=True, help="peak learning rate of each classifier")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=1000, batch_size=64, lr=1e-3, warmup=50, log_every=100),
                                 help="MTM pre-training; the classifiers take its other settings")
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=3, heads=4),
                                         help="one size for the token model and the pixel baseline")
    tokenizer: TokenizerSettings = section(TokenizerSettings(), help="the image tokenizer (RUN/tokenizer)")
    data: Data = section(Data())
    mtm: Mtm = section(Mtm(), help="SeiT++'s mask ratio: a normal truncated to [low, high]")
    classify: Classify = section(Classify())


class SeiT(Recipe):
    name = "seit"
    papers = ("SeiT++",)
    summary = ("SeiT++: masked token modeling on stored image tokens, then classification; against tokens "
               "without pre-training and pixels, with bits per image")
    Settings = Settings
    sample_suffix = ".txt"
    roles = ("main", ROLE, *CLASSIFIERS)

    def check(self) -> None:
        m = self.settings.mtm
        if m.low >= m.high:
            raise UnmaskError(f"mtm.low={m.low} must be below mtm.high={m.high}")

    def channels(self) -> int:
        return CHANNELS[self.settings.data.set]

    def model_config(self) -> ModelConfig:
        m, t = self.settings.model, self.settings.tokenizer.config(IMAGE_SIZE, self.channels())
        return ModelConfig(t.codebook_size, Layout.grid(*t.grid), dim=m.dim, depth=m.depth, heads=m.heads)

    def build(self) -> MaskedTokenModeling:
        return MaskedTokenModeling(MaskedTokenModel(self.model_config()), RandomMask(), self.settings.mtm.ratio())

    def build_role(self, role: str) -> nn.Module:
        s, m = self.settings, self.settings.model
        if role == ROLE:
            return tokenizer_objective(s.tokenizer, IMAGE_SIZE, self.channels())
        if role not in CLASSIFIERS:
            return super().build_role(role)
        classes = len(image_set(s.data.set, "train").classes)
        if role == "pixels":
            backbone = PatchTransformer(self.channels(), IMAGE_SIZE, s.data.patch, m.dim, m.depth, m.heads)
        else:
            backbone = MaskedTokenModel(self.model_config())
        return PooledClassifier(backbone, m.dim, classes)

    def classify_train(self) -> TrainConfig:
        c = self.settings.classify
        return dataclasses.replace(self.settings.train, steps=c.steps, batch_size=c.batch_size, lr=c.lr,
                                   warmup=min(self.settings.train.warmup, c.steps // 10))

    def tokens(self, run: Run, split: str, tokenizer=None) -> torch.Tensor:
        """Long[M, h * w]: a split stored as the tokens of the run's trained tokenizer."""
        tokenizer = tokenizer or load_tokenizer(self, run)
        return stored_tokens(run, tokenizer, split, image_set(self.settings.data.set, split).images)

    def training_data(self, run: Run) -> dict:
        """The train split as tokens; the tokenizer is trained on its pixels first (or resumed, or loaded)."""
        tokenizer = train_tokenizer(self, run, image_set(self.settings.data.set, "train").images)
        return {"tokens": self.tokens(run, "train", tokenizer)}

    def train(self, run: Run) -> dict:
        """The tokenizer, MTM pre-training, then the three classifiers, then the evaluation."""
        data = self.training_data(run)
        mtm = self.fit(run, self.objective(), data)
        labels = image_set(self.settings.data.set, "train").labels
        for role in CLASSIFIERS:
            clf = self.objective(role)
            if role == "finetune":
                clf.backbone.load_state_dict(mtm.model.state_dict())
            inputs = image_set(self.settings.data.set, "train").images if role == "pixels" else data["tokens"]
            self.fit(run.sub(role), clf, {"inputs": inputs, "labels": labels}, role=role, train=self.classify_train())
        return self.evaluate(run, mtm)

    def test_inputs(self, run: Run, role: str, tokenizer=None) -> torch.Tensor:
        """What classifier `role` reads of the held-out split: pixels or tokens."""
        if role == "pixels":
            return image_set(self.settings.data.set, "test").images
        return self.tokens(run, "test", tokenizer)

    @torch.no_grad()
    def measure(self, run: Run, mtm: MaskedTokenModeling) -> dict:
        s = self.settings
        train, test = image_set(s.data.set, "train"), image_set(s.data.set, "test")
        tokenizer = load_tokenizer(self, run)
        metrics: dict = {"bits_tokens": tokenizer.bits_per_image, "bits_pixels": pixel_bits(test.images)}
        metrics["compression"] = metrics["bits_pixels"] / metrics["bits_tokens"]
        for role in CLASSIFIERS:
            if run.sub(role).trained_step() is not None:
                predicted = self.load(run.sub(role), role).predict(self.test_inputs(run, role, tokenizer))
                metrics[f"acc_{role}"] = float((predicted == test.labels).double().mean())
        train_tokens, test_tokens = self.tokens(run, "train", tokenizer), self.tokens(run, "test", tokenizer)
        for prefix, model in (("mtm", mtm.model.eval()), ("random_init", self.objective().model.eval())):
            features = [pooled_features(model.features, x) for x in (train_tokens, test_tokens)]
            metrics[f"probe_{prefix}"] = linear_probe(features[0], train.labels, features[1], test.labels)
        metrics["training_images"], metrics["held_out_images"] = len(train), len(test)
        metrics["classes"] = len(train.classes)
        return metrics

    def report(self, metrics: dict) -> Report:
        s = self.settings
        rows = (
            Metric("acc_pixels", f"pixels ({s.data.patch}x{s.data.patch} patches), from scratch: accuracy"),
            Metric("acc_tokens", "tokens, no MTM pre-training: accuracy", "acc_pixels", "higher"),
            Metric("acc_finetune", "tokens, MTM pre-training + fine-tune (SeiT++): accuracy", "acc_tokens", "higher"),
            Metric("probe_mtm", "linear probe of frozen MTM features", "probe_random_init", "higher"),
            Metric("probe_random_init", "linear probe of the same network at random init"),
            Metric("bits_tokens", "bits per image, tokens (h * w * log2 K)", "bits_pixels", "lower"),
            Metric("bits_pixels", "bits per image, pixels (C * H * W * 8)"),
            Metric("compression", "pixel bits / token bits"),
            Metric("classes", "classes"), Metric("training_images", "training images"),
            Metric("held_out_images", "held-out images"),
        )
        t, c = s.tokenizer, s.classify
        setup = (f"{self.setup()} Tokenizer {t.quantizer.upper()} ({t.steps} steps); MTM ratio ~ N({s.mtm.mean}, "
                 f"{s.mtm.std}^2) truncated to [{s.mtm.low}, {s.mtm.high}]; each classifier {c.steps} steps of "
                 f"{c.batch_size} at lr {c.lr}. Set `{s.data.set}`, scored on its held-out split.")
        return Report(f"seit: SeiT++ on {s.data.set}, accuracy against storage", setup, (Table(rows),))

    def sample(self, run: Run, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
        """`key<TAB>true class<TAB>predicted class` of the first n held-out images, by the SeiT++ classifier."""
        test = image_set(self.settings.data.set, "test")
        clf = self.load(run.sub("finetune"), "finetune")
        predicted = clf.predict(self.test_inputs(run, "finetune")[:n])
        out = self.sample_path(out)
        out.write_text("".join(f"{k}\t{test.classes[t]}\t{test.classes[p]}\n" for k, t, p in
                               zip(test.keys, test.labels.tolist(), predicted.tolist(), strict=False)))
        return out
