"""Recipe `image-tokenizer`: train an image tokenizer (VQ-VAE, van den Oord et al. 2017, arXiv:1711.00937,
or FSQ, Mentzer et al. 2023, arXiv:2309.15505; `nn/image_tokenizer.py`) on the train split of an
embedded image set, and measure it on the held-out split: reconstruction MSE and PSNR, the share of
the codebook used and the perplexity of the codes, and what an image costs as tokens against pixels
(`eval/tokenizer.py`). FSQ's claim is that a fixed grid of levels reaches VQ's quality without
codebook collapse, at the same bits per image.

    unmask train image-tokenizer data.set=glyphs tokenizer.quantizer=vq --out runs/glyphs-vq
    unmask sample runs/glyphs-vq --n 16          # held-out originals (top) beside reconstructions
    unmask tokenize runs/glyphs-vq --set glyphs --split train --out glyphs-train.safetensors

The tokenizer trains for `tokenizer.steps` steps of `tokenizer.batch_size` images at `tokenizer.lr`,
as the tokenizer role of every image recipe does (`recipes/image_tokens.py`); the `train` section
gives the seed, precision and checkpointing, and its own steps, batch size and learning rate are
refused. `unmask tokenize` stores a set as the tokens of this recipe's run, or of `RUN/tokenizer`
of any recipe with a tokenizer role (`stored_set`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import option, section
from ..data import image_sets
from ..errors import UnmaskError
from ..eval.tokenizer import measure_tokenizer, tokenize
from ..nn import ImageTokenizer
from ..objectives import TokenizerTraining
from ..train import TrainConfig
from .base import NoSettings, Recipe, memo
from .image_tokens import ROLE, TokenizerSettings, tokenizer_objective
from .report import Metric, Report, Table
from .run import Run

CHANNELS = {"glyphs": 1, "emoji": 3, "faces": 1, "digits": 1}  # image_sets.NAMES: grey, except emoji
IMAGE_SIZE = 32


def image_set(name: str, split: str) -> image_sets.ImageSet:
    """One split of an embedded set at 32 x 32, loaded once per process."""
    if name not in CHANNELS:
        raise UnmaskError(f"unknown image set {name!r}; the sets are {', '.join(CHANNELS)}")
    return memo(("image-set", name, split), lambda: image_sets.load(name, split, IMAGE_SIZE))


def pixel_bits(images: torch.Tensor) -> int:
    """Bits an image of Uint8[M, C, H, W] costs stored as its pixels: C * H * W * 8."""
    return int(images[0].numel()) * 8


@dataclass(frozen=True)
class Data:
    set: str = option("glyphs", choices=tuple(CHANNELS), help="embedded image set: train split trains, the "
                                                              "held-out split is measured")


@dataclass(frozen=True)
class Eval:
    shown: int = option(16, lo=1, hi=200, help="held-out images drawn beside their reconstructions")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(), help="seed, precision and checkpoints; the tokenizer section "
                                                     "sets steps, batch size and learning rate")
    model: NoSettings = section(NoSettings(), help="none: the network is the tokenizer section's")
    tokenizer: TokenizerSettings = section(TokenizerSettings())
    data: Data = section(Data())
    eval: Eval = section(Eval())


class ImageTokenizerRecipe(Recipe):
    name = "image-tokenizer"
    papers = ("VQ-VAE", "FSQ")
    summary = "an image tokenizer (VQ or FSQ) on an embedded image set: reconstruction, codebook use, bits per image"
    Settings = Settings

    def check(self) -> None:
        t, default = self.settings.train, TrainConfig()
        moved = [k for k in ("steps", "batch_size", "lr") if getattr(t, k) != getattr(default, k)]
        if moved:
            raise UnmaskError(f"image-tokenizer trains with tokenizer.steps, tokenizer.batch_size and tokenizer.lr; "
                              f"set those instead of train.{', train.'.join(moved)}")

    def model_config(self):
        return self.settings.tokenizer.config(IMAGE_SIZE, CHANNELS[self.settings.data.set])

    def build(self) -> TokenizerTraining:
        return tokenizer_objective(self.settings.tokenizer, IMAGE_SIZE, CHANNELS[self.settings.data.set])

    def training_data(self, run: Run) -> dict:
        return {"images": image_set(self.settings.data.set, "train").images}

    def fit(self, run: Run, objective, data: dict, role: str = "main", train: TrainConfig | None = None):
        """The tokenizer section's steps, batch size and learning rate; the rest of `train` as set."""
        if train is None:
            own = self.settings.tokenizer.train_config(self.settings.train.seed)
            train = dataclasses.replace(self.settings.train, **{k: getattr(own, k) for k in (
                "steps", "batch_size", "lr", "warmup", "weight_decay", "log_every")})
        return super().fit(run, objective, data, role, train)

    def setup(self) -> str:
        s, t = self.settings, self.settings.tokenizer
        done = getattr(self, "trained_steps", None)
        steps = f"{t.steps}" if done in (None, t.steps) else f"{done} of {t.steps} (stopped early)"
        quantizer = f"FSQ levels {t.levels}" if t.quantizer == "fsq" else f"VQ, {t.codes} codes of width {t.code_dim}"
        return (f"Recipe `{self.name}` (VQ-VAE arXiv:1711.00937, FSQ arXiv:2309.15505): {quantizer}, width {t.width}, "
                f"{IMAGE_SIZE // t.downsample}x{IMAGE_SIZE // t.downsample} tokens; {steps} steps of {t.batch_size} "
                f"`{s.data.set}` training images at lr {t.lr}, seed {s.train.seed}.")

    def measure(self, run: Run, objective: TokenizerTraining) -> dict:
        train, test = image_set(self.settings.data.set, "train"), image_set(self.settings.data.set, "test")
        tokenizer = objective.tokenizer.eval()
        metrics = measure_tokenizer(tokenizer, test.images)
        metrics["train_mse"] = measure_tokenizer(tokenizer, train.images)["mse"]
        metrics["pixel_bits_per_image"] = pixel_bits(test.images)
        metrics["compression"] = metrics["pixel_bits_per_image"] / metrics["bits_per_image"]
        metrics["training_images"], metrics["held_out_images"] = len(train), len(test)
        draw_reconstructions(tokenizer, test.images[: self.settings.eval.shown], run.file("reconstructions.png"))
        return metrics

    def report(self, metrics: dict) -> Report:
        rows = (
            Metric("mse", "reconstruction MSE, held-out ([0, 1] scale)", better="lower"),
            Metric("train_mse", "reconstruction MSE, training images"),
            Metric("psnr", "PSNR of the held-out set, dB", better="higher"),
            Metric("used_share", "share of the codebook used on the held-out set"),
            Metric("perplexity", "perplexity of the held-out codes"),
            Metric("codes_used", "codes used"),
            Metric("codebook_size", "codebook size"),
            Metric("bits_per_image", "bits per image as tokens (h * w * log2 K)", "pixel_bits_per_image", "lower"),
            Metric("pixel_bits_per_image", "bits per image as 8-bit pixels (C * H * W * 8)"),
            Metric("compression", "pixel bits / token bits"),
            Metric("training_images", "training images"),
            Metric("held_out_images", "held-out images"),
        )
        return Report(f"image-tokenizer: {self.settings.tokenizer.quantizer.upper()} on {self.settings.data.set}",
                      self.setup(), (Table(rows),),
                      (("held-out originals (top row) and their reconstructions (bottom row)", "reconstructions.png"),))

    def sample(self, run: Run, objective: TokenizerTraining, n: int, out: Path) -> Path:
        """The first n held-out images (top rows) beside their reconstructions (bottom rows)."""
        out = self.sample_path(out)
        draw_reconstructions(objective.tokenizer.eval(), image_set(self.settings.data.set, "test").images[:n], out)
        return out


def draw_reconstructions(tokenizer: ImageTokenizer, images: torch.Tensor, path: Path) -> None:
    """A PNG of images Uint8[M, C, H, W]: rows of up to 16 originals, each followed by a row of their
    reconstructions decode(encode(x))."""
    with torch.inference_mode():
        recon = (tokenizer.decode(tokenize(tokenizer, images).to(tokenizer.decoder[0].weight.device)).cpu()
                 .clamp(0, 1).mul(255).round().to(torch.uint8))
    columns = min(16, len(images))
    rows = [t for start in range(0, len(images), columns)
            for t in (images[start : start + columns], recon[start : start + columns])]
    padded = [torch.cat([r, torch.full((columns - len(r), *r.shape[1:]), 128, dtype=torch.uint8)]) for r in rows]
    image_sets.save_grid(torch.cat(padded), path, columns)


class TrainedTokenizer(NamedTuple):
    tokenizer: ImageTokenizer
    checkpoint: Path
    digest: str  # SHA-256 of the checkpoint's weights file, from its manifest
    recipe: str


def trained_tokenizer(folder: Path) -> TrainedTokenizer:
    """The tokenizer of a trained run: an `image-tokenizer` run, or `folder/tokenizer` of a recipe with a
    tokenizer role. An UnmaskError says what the folder holds instead."""
    from ..train.checkpoint import find_checkpoint, load_checkpoint, newest_whole
    from . import get

    folder = Path(folder)
    if not folder.is_dir():
        raise UnmaskError(f"run folder {folder} does not exist")
    own, _ = newest_whole(folder)
    role = "main"
    if own is not None and json.loads((own / "config.json").read_text()).get("recipe") != ImageTokenizerRecipe.name:
        own, role = None, ROLE
    if own is None:
        if newest_whole(folder / ROLE)[0] is None:
            what = "no checkpoint"
            if newest_whole(folder)[0] is not None:
                found = json.loads((newest_whole(folder)[0] / "config.json").read_text()).get("recipe")
                what = f"a {found!r} run with no image tokenizer ({folder / ROLE} has no checkpoint)"
            raise UnmaskError(f"{folder} is not an image tokenizer run: it holds {what}; train one with "
                              "`unmask train image-tokenizer`")
        role = ROLE
    ckpt = find_checkpoint(folder if role == "main" else folder / ROLE)
    tensors, config, state = load_checkpoint(ckpt)
    cls = get(str(config.get("recipe", "?")))
    objective = cls(cls.settings_from(config, ckpt)).restore(ckpt, tensors, config, role)
    name = "ema.safetensors" if "ema" in tensors else "model.safetensors"
    return TrainedTokenizer(objective.tokenizer.eval(), ckpt, state["files"][name], cls.name)


def stored_set(folder: Path, name: str, split: str, out: Path) -> dict:
    """Store one split of an embedded set as the tokens of the tokenizer in run `folder`: `out` is a
    safetensors file with `tokens` Long[M, h, w] and `labels` Long[M], and JSON metadata (set, split,
    codebook size, grid, bits per image, the tokenizer's checkpoint and its SHA-256). Returns the metadata."""
    from safetensors.torch import save_file

    if split not in image_sets.SPLITS:
        raise UnmaskError(f"unknown split {split!r}; the splits are {', '.join(image_sets.SPLITS)}")
    made = trained_tokenizer(folder)
    tokenizer = made.tokenizer
    data = image_set(name, split)
    if data.images.shape[1] != tokenizer.config.channels:
        raise UnmaskError(f"set {name!r} has {data.images.shape[1]} channels; the tokenizer in {folder} reads "
                          f"{tokenizer.config.channels}")
    tokens = tokenize(tokenizer, data.images)
    h, w = tokenizer.grid
    meta = {"set": name, "split": split, "images": len(data), "codebook_size": tokenizer.codebook_size,
            "grid": [h, w], "bits_per_image": tokenizer.bits_per_image, "pixel_bits_per_image": pixel_bits(data.images),
            "tokenizer_recipe": made.recipe, "tokenizer_checkpoint": str(made.checkpoint),
            "tokenizer_sha256": made.digest, "classes": list(data.classes)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({"tokens": tokens.contiguous(), "labels": data.labels.contiguous()}, str(tmp),
              metadata={"unmask": json.dumps(meta)})
    tmp.replace(out)
    return meta
