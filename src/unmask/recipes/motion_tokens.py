"""Motion tokens for recipes: the per-body-part motion tokenizer (`nn/motion_tokenizer.py`, VQ-VAE of
van den Oord et al. 2017, arXiv:1711.00937, over short windows as in MMM, Pinyoanuntapong et al. 2024,
arXiv:2312.03596) trained on the training windows of `data.motion` with the one Trainer in its own run
folder (`RUN/motion_tokenizer`), and each split stored as its tokens.

A recipe that generates or reads motion tokens declares a `motion_tokenizer: MotionTokenizerSettings`
section, returns `motion_tokenizer_objective(...)` from `build_role("motion_tokenizer")`, and calls
`train_motion_tokenizer(recipe, run, frames)` before its own training; `stored_motion_tokens(run,
tokenizer, split, frames)` then gives the split's windows as `MotionTokens(tokens Long[M, P, T'], clip
Long[M], x Float[M, frames, F])`, P = 5 body-part streams, T' = frames / down; `layout(T')` is the
streams segment `Layout.streams(P, T', name="motion")` (time fastest within each part, so
`tokens.reshape(M, -1)` lays the rows out as the layout reads them). `part_errors` measures a
reconstruction as joint position error after forward kinematics, per body part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..config import option
from ..data import motion
from ..layout import Layout
from ..nn.motion_tokenizer import PARTS, MotionTokenizer, MotionTokenizerConfig
from ..objectives.motion_tokenizer import MotionTokenizerTraining
from ..train import TrainConfig
from .base import memo
from .run import Run

ROLE = "motion_tokenizer"


@dataclass(frozen=True)
class MotionTokenizerSettings:
    codes: int = option(128, lo=2, help="codebook size of each body part")
    code_dim: int = option(16, lo=1, help="width of a code vector")
    width: int = option(32, lo=8, help="channels of each part's convolutions (a multiple of 8)")
    down: int = option(2, choices=(1, 2), help="frames per token")
    steps: int = option(800, lo=1, help="training steps of the tokenizer")
    batch_size: int = option(64, lo=1, help="windows per step")
    lr: float = option(2e-3, lo=0, lo_open=True, help="peak learning rate")
    mirror: bool = option(False, help="train on every window and its mirror image (left for right): twice the data")

    def config(self) -> MotionTokenizerConfig:
        return MotionTokenizerConfig(width=self.width, down=self.down, codes=self.codes, code_dim=self.code_dim)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=min(50, self.steps // 10),
                           weight_decay=0.0, seed=seed, log_every=max(1, self.steps // 10))


class MotionTokens(NamedTuple):
    tokens: torch.Tensor  # Long[M, P, T']
    clip: torch.Tensor  # Long[M], index into data.motion.CLIPS
    x: torch.Tensor  # Float[M, frames, F], the windows the tokens code


def layout(steps: int) -> Layout:
    """The motion segment: P body-part streams x `steps` token times."""
    return Layout.streams(len(PARTS), steps, name="motion")


def motion_tokenizer_objective(settings: MotionTokenizerSettings) -> MotionTokenizerTraining:
    """The tokenizer's training objective, weights as initialised."""
    return MotionTokenizerTraining(MotionTokenizer(settings.config()))


def train_motion_tokenizer(recipe, run: Run, frames: int) -> MotionTokenizer:
    """Train (or resume, or load) the tokenizer of `recipe.settings.motion_tokenizer` on the training
    windows of `frames` frames in `RUN/motion_tokenizer`; returns it in eval mode."""
    settings = recipe.settings.motion_tokenizer
    x = motion.windows("train", frames).x
    x = torch.cat([x, motion.mirror(x)]) if settings.mirror else x
    objective = recipe.objective(ROLE)
    objective.tokenizer.set_normalisation(x)  # saved with the weights; a resumed run reads the same
    trained = recipe.fit(run.sub(ROLE), objective, {"motion": x}, role=ROLE,
                         train=settings.train_config(recipe.settings.train.seed))
    return trained.tokenizer.eval()


def load_motion_tokenizer(recipe, run: Run) -> MotionTokenizer:
    """The trained tokenizer of a finished run."""
    return recipe.load(run.sub(ROLE), ROLE).tokenizer.eval()


def stored_motion_tokens(run: Run, tokenizer: MotionTokenizer, split: str, frames: int,
                         mirror: bool = False) -> MotionTokens:
    """The split's windows of `frames` frames (followed by their mirror images with `mirror`) and their
    tokens, computed once per run."""
    key = ("motion-tokens", str(run.folder.resolve()), run.sub(ROLE).trained_step(), split, frames, mirror)

    def make() -> MotionTokens:
        w = motion.windows(split, frames)
        x, clip = (torch.cat([w.x, motion.mirror(w.x)]), w.clip.repeat(2)) if mirror else (w.x, w.clip)
        with torch.no_grad():
            tokens = torch.cat([tokenizer.encode(chunk) for chunk in x.split(256)])
        return MotionTokens(tokens, clip, x)

    return memo(key, make)


def joint_errors(x: torch.Tensor, reference: torch.Tensor, frames: slice = slice(None)) -> torch.Tensor:
    """Float[M, T, F] twice -> Float[M, t, J]: each joint's distance in metres after forward kinematics
    (both from the origin), over the frames `frames`."""
    return (motion.joint_positions(x.double()) - motion.joint_positions(reference.double()))[:, frames].norm(dim=-1)


def part_errors(errors: torch.Tensor, prefix: str) -> dict[str, float]:
    """Float[M, t, J] joint errors -> {prefix: the mean, prefix_PART: the mean over the part's joints}."""
    out = {prefix: float(errors.mean())}
    for part, joints in motion.JOINT_PARTS.items():
        out[f"{prefix}_{part}"] = float(errors[..., list(joints)].mean())
    return out
