"""Recipe `motion`: MMM (Pinyoanuntapong et al. 2024, "MMM: Generative Masked Motion Model",
arXiv:2312.03596) on pybullet's 15 humanoid clips: masked motion tokens, parallel decoding, and editing
by placing mask tokens, measured on in-betweening against interpolation.

Data (`data.motion`): the clips at 20 fps, 61 features per frame, cut into windows of `data.frames`
frames; the first 75% of each clip's frames train, the last 25% are held out. The windows become tokens
of the per-body-part motion tokenizer trained first in `RUN/motion_tokenizer` (`recipes/motion_tokens.py`):
5 streams (torso, right leg, left leg, right arm, left arm) x frames / down token times, each part its own
codebook. The masked token model reads [clip name (one token) | 5 x T' motion tokens]; the clip name is
MMM's condition (its text) and is always given.

Training (`objectives/mmm.py`): exactly round(r n) of the n motion tokens hidden, r ~ U(0.5, 1), the
cross-entropy over every motion token (`mmm.score_all`). Sampling: MaskGIT's confidence order
(`sampler.*`). Editing: a canvas with mask ids only where motion is to be made:
- in-betweening (measured): a held-out window's first and last `eval.given` token times (every part) are
  given and the middle is drawn; the mean joint position error (metres, after forward kinematics, over
  the middle frames and all 18 joints) is compared with linear interpolation of the features between the
  last given frame before the gap and the first after it, and with slerp of the joint rotations. The
  interpolations get the exact end frames; MMM gets their tokens, so its error includes the tokenizer's
  (reported alone as `mpjpe_tokenizer`, a floor for MMM).
- long motions (`unmask sample`): `eval.sample_windows` windows chained by outpainting, each new window
  given the last `eval.given` token times of the one before (MMM's long-sequence generation).

    unmask train motion --out runs/motion
    unmask sample runs/motion --prompt walk --n 2 --out walk     # walk.gif, two motions side by side
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import option, section
from ..data import motion
from ..errors import UnmaskError
from ..layout import Layout
from ..masking import RandomMask
from ..nn import MaskedTokenModel, ModelConfig
from ..nn.motion_tokenizer import PARTS, MotionTokenizer
from ..objectives.mmm import MMMTokenModeling
from ..sampling import generate
from ..train import TrainConfig
from .base import Recipe, SamplerSettings, TransformerSettings
from .motion_tokens import (
    ROLE,
    MotionTokenizerSettings,
    layout,
    load_motion_tokenizer,
    motion_tokenizer_objective,
    part_errors,
    stored_motion_tokens,
    train_motion_tokenizer,
)
from .report import Metric, Report, Table
from .run import Run


@dataclass(frozen=True)
class Data:
    frames: int = option(12, lo=2, help="frames per window at 20 fps (a multiple of motion_tokenizer.down)")


@dataclass(frozen=True)
class MMMSettings:
    low: float = option(0.5, lo=0.0, hi=1.0, lo_open=True, help="training mask ratio r ~ U(low, 1); MMM: 0.5")
    score_all: bool = option(True, help="cross-entropy over every motion token (MMM) or only the hidden ones")


@dataclass(frozen=True)
class Eval:
    given: int = option(1, lo=1, help="token times given at each end (in-betweening) or carried over (chaining)")
    draws: int = option(4, lo=1, help="in-betweening draws per held-out window")
    sample_windows: int = option(3, lo=1, help="windows chained by outpainting into one sampled motion")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=1200, batch_size=64, lr=2e-3, warmup=100, log_every=100))
    model: TransformerSettings = section(TransformerSettings(dim=96, depth=3, heads=4))
    data: Data = section(Data())
    motion_tokenizer: MotionTokenizerSettings = section(MotionTokenizerSettings())
    mmm: MMMSettings = section(MMMSettings())
    sampler: SamplerSettings = section(SamplerSettings(steps=8))
    eval: Eval = section(Eval())


def positions(x: torch.Tensor) -> torch.Tensor:
    """Float[M, T, F] features -> Float64[M, T, J, 3] joint positions, each window from the origin."""
    return motion.joint_positions(x.double())


def interpolate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Float[M, T, F]: frames k..T-k-1 replaced by the linear interpolation of frames k-1 and T-k."""
    t = x.shape[1]
    w = torch.arange(1, t - 2 * k + 1, dtype=x.dtype)[:, None] / (t - 2 * k + 1)  # [gap, 1]
    out = x.clone()
    out[:, k:t - k] = x[:, k - 1:k] * (1 - w) + x[:, t - k:t - k + 1] * w
    return out


def slerp_positions(x: torch.Tensor, k: int) -> torch.Tensor:
    """As `interpolate`, in frame space (root position and angles linear, joint rotations by slerp),
    returned as Float64[M, T, J, 3] joint positions."""
    f = motion.to_frames(x.double())  # [M, T, 44]
    t = f.shape[1]
    a, b = f[:, k - 1:k], f[:, t - k:t - k + 1]  # [M, 1, 44]
    s = torch.arange(1, t - 2 * k + 1, dtype=f.dtype) / (t - 2 * k + 1)  # [gap]
    mid = a + (b - a) * s[:, None]
    for _, i, kind in motion.ROTATIONS:
        if kind == "quat":
            mid[..., i:i + 4] = motion.slerp(a[..., i:i + 4].expand_as(mid[..., i:i + 4]),
                                             b[..., i:i + 4].expand_as(mid[..., i:i + 4]), s.expand(mid.shape[:2]))
    f[:, k:t - k] = mid
    return motion.forward_kinematics(f)


class Motion(Recipe):
    name = "motion"
    papers = ("MMM",)
    summary = "MMM on pybullet's humanoid clips: masked body-part motion tokens, in-betweening vs interpolation"
    Settings = Settings
    sample_suffix = ".gif"
    takes_prompt = True
    roles = ("main", ROLE)

    def check(self) -> None:
        s = self.settings
        if s.data.frames % s.motion_tokenizer.down:
            raise UnmaskError(f"data.frames={s.data.frames} must be a multiple of motion_tokenizer.down="
                              f"{s.motion_tokenizer.down}")
        if 2 * s.eval.given >= self.steps():
            raise UnmaskError(f"eval.given={s.eval.given} at each end leaves no gap in {self.steps()} token times "
                              f"(data.frames / motion_tokenizer.down)")

    def steps(self) -> int:
        return self.settings.data.frames // self.settings.motion_tokenizer.down

    def model_config(self) -> ModelConfig:
        m, codes = self.settings.model, self.settings.motion_tokenizer.codes
        lay = Layout.seq(1, "label") + layout(self.steps())
        return ModelConfig(codes + len(motion.CLIPS), lay, dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={"label": (codes, codes + len(motion.CLIPS)), "motion": (0, codes)})

    def build(self) -> MMMTokenModeling:
        s = self.settings.mmm
        return MMMTokenModeling(MaskedTokenModel(self.model_config()), RandomMask(("motion",)), low=s.low,
                                score_all=s.score_all)

    def build_role(self, role: str) -> nn.Module:
        if role == ROLE:
            return motion_tokenizer_objective(self.settings.motion_tokenizer)
        return super().build_role(role)

    def rows(self, run: Run, tokenizer: MotionTokenizer, split: str) -> torch.Tensor:
        """Long[M, 1 + P T']: the clip token, then the split's window tokens, part by part (training
        windows with their mirror images when the tokenizer was trained on them)."""
        mirror = split == "train" and self.settings.motion_tokenizer.mirror
        stored = stored_motion_tokens(run, tokenizer, split, self.settings.data.frames, mirror)
        return torch.cat([stored.clip[:, None] + self.settings.motion_tokenizer.codes, stored.tokens.flatten(1)], 1)

    def training_data(self, run: Run) -> dict:
        tokenizer = train_motion_tokenizer(self, run, self.settings.data.frames)
        return {"tokens": self.rows(run, tokenizer, "train")}

    # generation -------------------------------------------------------------------------------------
    def draw(self, model: MaskedTokenModel, clips: torch.Tensor, canvas: torch.Tensor,
             g: torch.Generator) -> torch.Tensor:
        """clips Long[B], canvas Long[B, P, T'] (mask id where motion is to be made) -> Long[B, P, T']."""
        label = clips[:, None] + self.settings.motion_tokenizer.codes
        out = generate(model.eval(), torch.cat([label, canvas.flatten(1)], 1), self.settings.sampler.build(),
                       mask_id=model.mask_id, generator=g)
        return out.tokens[:, 1:].reshape(canvas.shape)

    def inbetween(self, model: MaskedTokenModel, clips: torch.Tensor, tokens: torch.Tensor,
                  g: torch.Generator) -> torch.Tensor:
        """Long[B, P, T'] -> the same with every token time but the first and last `eval.given` drawn anew."""
        k = self.settings.eval.given
        canvas = tokens.clone()
        canvas[..., k:tokens.shape[-1] - k] = model.mask_id
        return self.draw(model, clips, canvas, g)

    def long_motion(self, model: MaskedTokenModel, clips: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Long[B, P, T' + (W - 1)(T' - given)]: a first window drawn from nothing, then W - 1 windows
        each given the last `eval.given` token times so far (outpainting)."""
        k, steps = self.settings.eval.given, self.steps()
        blank = torch.full((len(clips), len(PARTS), steps), model.mask_id, dtype=torch.long)
        tokens = self.draw(model, clips, blank, g)
        for _ in range(self.settings.eval.sample_windows - 1):
            canvas = blank.clone()
            canvas[..., :k] = tokens[..., -k:]
            tokens = torch.cat([tokens, self.draw(model, clips, canvas, g)[..., k:]], -1)
        return tokens

    # measuring --------------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self, run: Run, objective: MMMTokenModeling) -> dict:
        s, model = self.settings, objective.model
        tokenizer = load_motion_tokenizer(self, run)
        k, frames = s.eval.given, s.data.frames
        down = s.motion_tokenizer.down
        metrics: dict = {}
        for split in ("train", "test"):
            stored = stored_motion_tokens(run, tokenizer, split, frames)
            errors = (positions(tokenizer.decode(stored.tokens)) - positions(stored.x)).norm(dim=-1)
            metrics.update(part_errors(errors, f"tokenizer_{split}"))
            metrics[f"{split}_windows"] = len(stored.clip)
        test = stored_motion_tokens(run, tokenizer, "test", frames)
        truth = positions(test.x)
        gap = slice(k * down, frames - k * down)  # the frames the given tokens do not code

        def gap_errors(p: torch.Tensor) -> torch.Tensor:
            return (p - truth)[:, gap].norm(dim=-1)  # [M, gap frames, J]

        g = torch.Generator().manual_seed(s.train.seed)
        drawn = [self.inbetween(model, test.clip, test.tokens, g) for _ in range(s.eval.draws)]
        kept = all(torch.equal(d[..., :k], test.tokens[..., :k]) and torch.equal(d[..., -k:], test.tokens[..., -k:])
                   for d in drawn)
        mmm = torch.stack([gap_errors(positions(tokenizer.decode(d))) for d in drawn]).mean(0)
        metrics.update(part_errors(mmm, "mpjpe_mmm"))
        metrics.update(part_errors(gap_errors(positions(tokenizer.decode(test.tokens))), "mpjpe_tokenizer"))
        metrics.update(part_errors(gap_errors(positions(interpolate(test.x, k * down))), "mpjpe_linear"))
        metrics.update(part_errors(gap_errors(slerp_positions(test.x, k * down)), "mpjpe_slerp"))
        seen = stored_motion_tokens(run, tokenizer, "train", frames)  # windows trained on: no generalisation
        seen_truth = positions(seen.x)
        seen_drawn = self.inbetween(model, seen.clip, seen.tokens, g)
        for name, p in (("mmm", positions(tokenizer.decode(seen_drawn))),
                        ("tokenizer", positions(tokenizer.decode(seen.tokens))),
                        ("linear", positions(interpolate(seen.x, k * down)))):
            metrics[f"seen_mpjpe_{name}"] = float((p - seen_truth)[:, gap].norm(dim=-1).mean())
        metrics.update({"given_tokens_kept": kept, "gap_frames": gap.stop - gap.start,
                        "test_clips": len(set(test.clip.tolist())), "train_frames": sum(
                            motion.split_point(len(x)) for x in motion.clip_features())})
        self.figures(run, model, tokenizer, test, drawn[0])
        return metrics

    def figures(self, run: Run, model, tokenizer: MotionTokenizer, test, drawn: torch.Tensor) -> None:
        """inbetween_*.png: one held-out window (truth, MMM, linear); samples.png/.gif: a chained walk."""
        k = self.settings.eval.given * self.settings.motion_tokenizer.down
        i = 0
        for name, x in (("truth", test.x[i:i + 1]), ("mmm", tokenizer.decode(drawn[i:i + 1])),
                        ("linear", interpolate(test.x[i:i + 1], k))):
            motion.render_strip(positions(x)[0], run.file(f"inbetween_{name}.png"), every=1, size=96)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        walk = positions(tokenizer.decode(self.long_motion(model, torch.tensor([motion.clip_index("walk")]), g)))[0]
        motion.render_strip(walk, run.file("samples.png"), every=2, size=96)
        motion.render_gif(walk, run.file("samples.gif"))

    def report(self, metrics: dict) -> Report:
        s = self.settings
        inb = [Metric("mpjpe_mmm", "MMM in-betweening", "mpjpe_linear", "lower"),
               Metric("mpjpe_mmm", "MMM in-betweening (against slerp)", "mpjpe_slerp", "lower"),
               Metric("mpjpe_linear", "linear interpolation of the features"),
               Metric("mpjpe_slerp", "slerp of the joint rotations"),
               Metric("mpjpe_tokenizer", "the true tokens decoded (the tokenizer's floor for MMM)")]
        inb += [Metric(f"mpjpe_mmm_{p}", f"MMM, {p} joints", f"mpjpe_linear_{p}", "lower") for p in PARTS]
        seen = [Metric("seen_mpjpe_mmm", "MMM in-betweening, training windows", "seen_mpjpe_linear", "lower"),
                Metric("seen_mpjpe_linear", "linear interpolation, training windows"),
                Metric("seen_mpjpe_tokenizer", "true tokens decoded, training windows")]
        tok = [Metric(f"tokenizer_{split}{p}", f"{split} windows{(', ' + p[1:]) if p else ''}")
               for split in ("test", "train") for p in ("", *(f"_{q}" for q in PARTS))]
        sizes = [Metric(key) for key in ("train_windows", "test_windows", "test_clips", "train_frames", "gap_frames",
                                         "given_tokens_kept")]
        gap_s = metrics.get("gap_frames", 0) / motion.RATE
        setup = (f"{self.setup()} Windows of {s.data.frames} frames at {motion.RATE} fps, {self.steps()} token "
                 f"times x {len(PARTS)} body parts, {s.motion_tokenizer.codes} codes per part (tokenizer: "
                 f"{s.motion_tokenizer.steps} steps). In-betweening: {s.eval.given} token time(s) given at each "
                 f"end, a gap of {metrics.get('gap_frames')} frames ({gap_s:.2f} s), {s.eval.draws} draws per "
                 f"held-out window, MaskGIT sampler with {s.sampler.steps} steps. The data are tiny (15 clips, "
                 f"about 34 s); the held-out windows come from the few clips whose last 25% is long enough.")
        return Report("motion: MMM in-betweening on pybullet's humanoid clips", setup, (
            Table(tuple(inb), "in-betweening: mean joint position error over the gap (metres)"),
            Table(tuple(seen), "in-betweening on windows seen in training (one draw each; memory, not generalisation)"),
            Table(tuple(tok), "tokenizer: mean joint position error of decoded true tokens (metres)"),
            Table(tuple(sizes), "sizes")),
            (("held-out window, truth", "inbetween_truth.png"), ("MMM in-betweening", "inbetween_mmm.png"),
             ("linear interpolation", "inbetween_linear.png"), ("a chained walk drawn by MMM", "samples.png")))

    @torch.no_grad()
    def sample(self, run: Run, objective: MMMTokenModeling, n: int, out: Path, prompt: str | None = None) -> Path:
        """n motions of the clip `prompt` (or the clips in turn), chained windows, one GIF side by side."""
        clips = torch.tensor([motion.clip_index(prompt)] * n if prompt is not None
                             else [i % len(motion.CLIPS) for i in range(n)])
        tokenizer = load_motion_tokenizer(self, run)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        x = tokenizer.decode(self.long_motion(objective.model, clips, g))
        return motion.render_gif(positions(x), self.sample_path(out))
