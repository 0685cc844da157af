"""Image tokens for recipes: an image tokenizer (VQ, van den Oord et al. 2017, arXiv:1711.00937, or
FSQ, Mentzer et al. 2023, arXiv:2309.15505; `nn/image_tokenizer.py`) trained on an image set with the
one Trainer in its own run folder (`RUN/tokenizer`), and the set stored as its tokens.

A recipe that generates or reads image tokens declares a `tokenizer: TokenizerSettings` section and
calls `train_tokenizer` before its own training; `stored_tokens` then gives every split as
Long[M, h * w] (row-major grids, the layout `Layout.grid(h, w)` reads), computed once per run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import int_list, option
from ..eval.tokenizer import tokenize
from ..nn import ImageTokenizer, ImageTokenizerConfig
from ..objectives import TokenizerTraining
from ..train import TrainConfig
from .base import memo
from .run import Run

ROLE = "tokenizer"


@dataclass(frozen=True)
class TokenizerSettings:
    quantizer: str = option("fsq", choices=("fsq", "vq"), help="finite scalar quantisation or a learned codebook")
    levels: str = option("8,6,5", help="FSQ: levels per channel, comma-separated (codebook = their product)")
    codes: int = option(256, lo=2, help="VQ: codebook size")
    code_dim: int = option(16, lo=1, help="VQ: width of a code vector")
    width: int = option(32, lo=8, help="channels of the first convolution")
    downsample: int = option(4, choices=(2, 4), help="image side / token grid side")
    steps: int = option(600, lo=1, help="training steps of the tokenizer")
    batch_size: int = option(64, lo=1, help="images per step")
    lr: float = option(2e-3, lo=0, lo_open=True, help="peak learning rate")

    def level_tuple(self) -> tuple[int, ...]:
        return int_list("tokenizer.levels", self.levels, lo=2)

    def config(self, image_size: int, channels: int) -> ImageTokenizerConfig:
        return ImageTokenizerConfig(image_size=image_size, channels=channels, width=self.width,
                                    downsample=self.downsample, quantizer=self.quantizer, codes=self.codes,
                                    code_dim=self.code_dim, levels=self.level_tuple())

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=min(50, self.steps // 10),
                           weight_decay=0.0, seed=seed, log_every=max(1, self.steps // 10))


def tokenizer_objective(settings: TokenizerSettings, image_size: int, channels: int) -> TokenizerTraining:
    """The tokenizer's training objective (reconstruction + the quantizer's loss), weights as initialised."""
    return TokenizerTraining(ImageTokenizer(settings.config(image_size, channels)))


def train_tokenizer(recipe, run: Run, images: torch.Tensor) -> ImageTokenizer:
    """Train (or resume, or load) the tokenizer of `recipe.settings.tokenizer` on images Uint8[M, C, H, W]
    in `RUN/tokenizer`, seeded by the recipe's seed; returns it in eval mode. The recipe's
    `build_role("tokenizer")` must return `tokenizer_objective(...)` for the same images' shape."""
    settings = recipe.settings.tokenizer
    objective = recipe.objective(ROLE)
    trained = recipe.fit(run.sub(ROLE), objective, {"images": images}, role=ROLE,
                         train=settings.train_config(recipe.settings.train.seed))
    return trained.tokenizer.eval()


def load_tokenizer(recipe, run: Run) -> ImageTokenizer:
    """The trained tokenizer of a finished run."""
    return recipe.load(run.sub(ROLE), ROLE).tokenizer.eval()


def stored_tokens(run: Run, tokenizer: ImageTokenizer, name: str, images: torch.Tensor) -> torch.Tensor:
    """Long[M, h * w]: `images` as the tokenizer's tokens, row-major, computed once per run and name."""
    key = ("image-tokens", str(run.folder.resolve()), run.sub(ROLE).trained_step(), name, tuple(images.shape))
    return memo(key, lambda: tokenize(tokenizer, images).reshape(images.shape[0], -1))
