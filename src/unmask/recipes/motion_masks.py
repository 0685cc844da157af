"""Recipe `motion-masks`: Motion Masked Diffusion (MMDM; Chen 2024, "Text-driven Human Motion Generation
with Motion Masked Diffusion Model", arXiv:2409.19686) on pybullet's 15 humanoid clips: the same
diffusion model trained with time-frame masks, with body-part masks, with both, and with none (plain
MDM), measured on two completion tasks against simple fills.

Data (`data.motion`): the clips at 20 fps, 62 features per frame, windows of `data.frames` frames (the
first 75% of each clip's frames train, the last 25% are held out). Models (`objectives/mmdm.py`,
`nn/motion_denoiser.py`): x0-predicting diffusion over the normalised features, tokens = 5 body parts x
frames; in training each row's tokens are hidden in the embedding space by its masker at a share
r ~ U(`mmdm.ratio_min`, 1) per row (`masking/motion.py`): `TimeFrameMask` (whole frames, the main
model), `BodyPartMask` (one part over a span of frames, `RUN/parts`), either at random (`RUN/both`),
or none (`RUN/plain`). Each model trains for `train.steps`.

Completion, on every held-out window, `eval.draws` draws each (DDIM with replacement, `eval.steps`
steps; second, with the unknown tokens also masked as in training):
- frames: the middle frames hidden, `eval.given` frames known at each end (as the `motion` recipe's
  in-betweening); error over the hidden frames, all 18 joints; against linear interpolation of the
  features between the last known frame before the gap and the first after it;
- part: the part `eval.part` hidden over the whole window; error over that part's joints, all
  frames; against the training mean of the part's features.
Errors are mean joint position errors in metres after forward kinematics (`motion_tokens.joint_errors`).

    unmask train motion-masks --out runs/motion-masks
    unmask sample runs/motion-masks --n 4 --out drawn     # drawn.gif: four windows drawn from nothing
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import option, section
from ..data import motion
from ..errors import UnmaskError
from ..masking import BodyPartMask, MixtureMask, TimeFrameMask
from ..nn.motion_denoiser import PARTS, MotionDenoiser, MotionDenoiserConfig
from ..objectives.mmdm import MotionMaskedDiffusion
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .motion import interpolate
from .motion_tokens import joint_errors
from .report import Metric, Report, Table
from .run import Run

MASKS = {"main": "frames", "parts": "parts", "both": "both", "plain": "none"}


@dataclass(frozen=True)
class Data:
    frames: int = option(12, lo=4, help="frames per window at 20 fps")
    mirror: bool = option(False, help="train on every window and its mirror image (left for right)")


@dataclass(frozen=True)
class MMDMSettings:
    ratio_min: float = option(0.25, lo=0.0, hi=1.0, help="hidden share r ~ U(ratio_min, 1) per row")
    steps: int = option(100, lo=2, help="diffusion steps of training")


@dataclass(frozen=True)
class Eval:
    given: int = option(2, lo=1, help="frames known at each end in the frames task")
    part: str = option("left_arm", choices=PARTS, help="body part hidden in the part task")
    steps: int = option(20, lo=1, help="DDIM steps of completion")
    draws: int = option(2, lo=1, help="completions per held-out window")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=400, batch_size=32, lr=2e-3, warmup=40, weight_decay=0.0,
                                             log_every=100))
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=2, heads=4))
    data: Data = section(Data())
    mmdm: MMDMSettings = section(MMDMSettings())
    eval: Eval = section(Eval())


class MotionMasks(Recipe):
    name = "motion-masks"
    papers = ("MMDM",)
    summary = "Motion Masked Diffusion on pybullet's humanoid clips: time-frame vs body-part masks on completion"
    Settings = Settings
    sample_suffix = ".gif"
    roles = tuple(MASKS)

    def check(self) -> None:
        s = self.settings
        if 2 * s.eval.given >= s.data.frames:
            raise UnmaskError(f"eval.given={s.eval.given} at each end leaves no gap in data.frames={s.data.frames}")

    def model_config(self) -> MotionDenoiserConfig:
        m = self.settings.model
        return MotionDenoiserConfig(self.settings.data.frames, m.dim, m.depth, m.heads)

    def masker(self, role: str):
        kind = MASKS[role]
        if kind == "none":
            return None
        if kind == "both":
            return MixtureMask(maskers=(TimeFrameMask(), BodyPartMask()))
        return TimeFrameMask() if kind == "frames" else BodyPartMask()

    def build_role(self, role: str) -> nn.Module:
        if role not in MASKS:
            return super().build_role(role)
        return MotionMaskedDiffusion(MotionDenoiser(self.model_config()), self.masker(role),
                                     ratio=(self.settings.mmdm.ratio_min, 1.0), steps=self.settings.mmdm.steps)

    def build(self) -> nn.Module:
        return self.build_role("main")

    def training_data(self, run: Run) -> dict:
        x = motion.windows("train", self.settings.data.frames).x
        return {"x": torch.cat([x, motion.mirror(x)]) if self.settings.data.mirror else x}

    def train(self, run: Run) -> dict:
        data = self.training_data(run)
        trained = {}
        for role in MASKS:
            objective = self.objective(role)
            objective.set_normalisation(data["x"])
            trained[role] = self.fit(run if role == "main" else run.sub(role), objective, data, role=role)
        return self.evaluate(run, trained["main"])

    # measuring ---------------------------------------------------------------------------------------
    def tasks(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bool[M, T, F] known features of each task."""
        s = self.settings.eval
        frames = torch.ones_like(x, dtype=torch.bool)
        frames[:, s.given:x.shape[1] - s.given] = False
        part = torch.ones_like(x, dtype=torch.bool)
        part[..., list(motion.BODY_PARTS[s.part])] = False
        return {"frames": frames, "part": part}

    def task_error(self, task: str, x: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Float[M, T, F] completed and true windows -> mean joint error (metres) where the task scores."""
        s = self.settings.eval
        if task == "frames":
            return joint_errors(x, truth, slice(s.given, truth.shape[1] - s.given)).mean()
        return joint_errors(x, truth)[..., list(motion.JOINT_PARTS[s.part])].mean()

    @torch.no_grad()
    def measure(self, run: Run, objective: MotionMaskedDiffusion) -> dict:
        s = self.settings
        test = motion.windows("test", s.data.frames)
        train = motion.windows("train", s.data.frames).x
        known = self.tasks(test.x)
        metrics: dict = {"test_windows": len(test.x), "test_clips": len(set(test.clip.tolist())),
                         "train_windows": len(train), "gap_frames": s.data.frames - 2 * s.eval.given}
        mean_pose = torch.where(known["part"], test.x, train.reshape(-1, train.shape[-1]).mean(0))
        metrics["frames_linear"] = float(self.task_error("frames", interpolate(test.x, s.eval.given), test.x))
        metrics["part_mean_pose"] = float(self.task_error("part", mean_pose, test.x))
        kept = True
        for role in MASKS:
            model = objective if role == "main" else self.load(run.sub(role), role)
            g = torch.Generator().manual_seed(s.train.seed)
            for task, where in known.items():
                for suffix, mask_hidden in (("", False), ("_masked", True)):
                    errors = []
                    for _ in range(s.eval.draws):
                        done = model.complete(test.x, where, sample_steps=s.eval.steps, mask_hidden=mask_hidden,
                                              generator=g)
                        kept &= bool(torch.equal(done[where], test.x[where]))
                        errors.append(self.task_error(task, done, test.x))
                    metrics[f"{task}_{MASKS[role]}{suffix}"] = float(torch.stack(errors).mean())
        metrics["given_features_kept"] = kept
        self.figures(run, objective, test.x[:1], known["frames"][:1])
        return metrics

    def figures(self, run: Run, objective: MotionMaskedDiffusion, x: torch.Tensor, known: torch.Tensor) -> None:
        """complete_*.png: one held-out window with its middle frames missing (truth, MMDM, linear)."""
        g = torch.Generator().manual_seed(self.settings.train.seed)
        done = objective.complete(x, known, sample_steps=self.settings.eval.steps, generator=g)
        for name, w in (("truth", x), ("mmdm", done), ("linear", interpolate(x, self.settings.eval.given))):
            motion.render_strip(motion.joint_positions(w[0].double()), run.file(f"complete_{name}.png"), every=1,
                                size=96)

    @torch.no_grad()
    def sample(self, run: Run, objective: MotionMaskedDiffusion, n: int, out, prompt: str | None = None):
        """n windows drawn from nothing by the main (time-frame masks) model, side by side in one GIF."""
        x = torch.zeros(n, self.settings.data.frames, motion.F)
        g = torch.Generator().manual_seed(self.settings.train.seed)
        drawn = objective.complete(x, torch.zeros_like(x, dtype=torch.bool), sample_steps=self.settings.eval.steps,
                                   generator=g)
        positions = motion.joint_positions(drawn.double())
        return motion.render_gif(positions, self.sample_path(out))

    def report(self, metrics: dict) -> Report:
        s = self.settings
        tables = []
        for task, base, what in (("frames", "frames_linear", "linear interpolation"),
                                 ("part", "part_mean_pose", "training mean pose of the part")):
            rows = [Metric(f"{task}_{kind}{suffix}", f"trained with {kind} masks{how}", base, "lower")
                    for suffix, how in (("", ""), ("_masked", ", unknown tokens masked"))
                    for kind in ("frames", "parts", "both", "none")]
            rows.append(Metric(base, what))
            title = (f"middle {metrics.get('gap_frames')} frames missing: error over them, all joints (metres)"
                     if task == "frames" else f"{s.eval.part} missing over the window: error over its joints (metres)")
            tables.append(Table(tuple(rows), title))
        sizes = Table(tuple(Metric(k) for k in ("test_windows", "test_clips", "train_windows", "given_features_kept")),
                      "sizes")
        setup = (f"{self.setup()} Four models, each {s.train.steps} steps: MMDM with time-frame masks, with body-part "
                 f"masks, with either, and plain MDM (none); hidden share r ~ U({s.mmdm.ratio_min}, 1) per row, "
                 f"{s.mmdm.steps} diffusion steps. Windows of {s.data.frames} frames at {motion.RATE} fps; completion "
                 f"by DDIM with replacement, {s.eval.steps} steps, {s.eval.draws} draws per held-out window. The data "
                 "are tiny (15 clips, about 34 s); the held-out windows come from the few clips whose last 25% is "
                 "long enough.")
        figures = (("held-out window, truth", "complete_truth.png"),
                   ("middle frames completed by MMDM (time-frame masks)", "complete_mmdm.png"),
                   ("middle frames by linear interpolation", "complete_linear.png"))
        return Report("motion-masks: time-frame vs body-part masks (MMDM) on completion", setup, (*tables, sizes),
                      figures)
