"""Recipe `bamm`: BAMM (Pinyoanuntapong et al. 2024, "BAMM: Bidirectional Autoregressive Motion Model",
arXiv:2403.19435) on pybullet's 15 humanoid clips: motion tokens predicted left to right under a hybrid
attention mask, an END token whose place is the motion's length, and the length error of generated
motions against predicting a mean length.

Data (`data.motion`): the clips at 20 fps, 62 features per frame, first 75% of each clip's frames train,
last 25% held out. Windows of every length from `data.min_frames` to `data.max_frames` frames at every
start (training windows every `data.stride` frames) inside one split of one clip. A window's length is
thus not set by its motion but by where it was cut and by how long the clip's split part is: the
clip name carries what there is to know about it (short clips give no long windows), and a prefix
carries a little more (near a part's end only short windows fit). Frames become tokens by k-means
(`nn/point_tokenizer.kmeans`) over the training frames' normalised features, `data.codes` centroids,
one token per frame (the codebook is saved with the model). Rows are [clip name | codes | END | PAD].

Training (`objectives/bamm.py`): next-token prediction under the hybrid mask with random revealed
tokens and random code corruption, END scored. Generation (`sampling/bamm.py`): a causal pass that
draws END (the length), then `bamm.refinements` refinement passes that redraw every other token with
the rest revealed. Measured on held-out windows given their clip name (and, second, their first
`eval.prefix` frames): the mean absolute length error in frames of `eval.draws` cascades per window,
and of their median, against the mean length of the training windows of that clip and the global
training mean (and the medians: the best constant for an absolute error).

    unmask train bamm --out runs/bamm
    unmask sample runs/bamm --prompt jump --n 3 --out jump     # jump.gif: three drawn motions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..config import option, section
from ..data import motion
from ..errors import UnmaskError
from ..layout import Layout
from ..nn import ModelConfig
from ..nn.bamm import HybridCausalTokenModel
from ..nn.point_tokenizer import kmeans, nearest
from ..objectives.bamm import BAMMTokenModeling
from ..sampling.bamm import bamm_cascade, end_lengths
from ..train import TrainConfig
from .base import Recipe, TransformerSettings, memo
from .report import Metric, Report, Table
from .run import Run


@dataclass(frozen=True)
class Data:
    min_frames: int = option(4, lo=1, help="shortest window (frames at 20 fps)")
    max_frames: int = option(16, lo=2, help="longest window; the token rows hold this many motion places")
    stride: int = option(1, lo=1, help="frames between training window starts")
    codes: int = option(64, lo=2, help="k-means codes (one token per frame)")


@dataclass(frozen=True)
class BAMMSettings:
    reveal_prob: float = option(0.5, lo=0.0, hi=1.0, help="share of rows with revealed tokens (BAMM: 0.5)")
    reveal_max: float = option(0.5, lo=0.0, hi=1.0, help="revealed share r ~ U(0, reveal_max) (BAMM: 0.5)")
    corrupt_max: float = option(0.5, lo=0.0, hi=1.0, help="random-code share u ~ U(0, corrupt_max) (BAMM: 0.5)")
    refinements: int = option(1, lo=0, help="refinement passes after the causal one (BAMM: 1)")


@dataclass(frozen=True)
class Eval:
    draws: int = option(6, lo=1, help="cascades per held-out window")
    prefix: int = option(2, lo=1, help="frames given in the second measurement")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature of the cascade")
    stride: int = option(2, lo=1, help="frames between held-out window starts")


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup=100, log_every=100))
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=3, heads=4))
    data: Data = section(Data())
    bamm: BAMMSettings = section(BAMMSettings())
    eval: Eval = section(Eval())


class Rows(NamedTuple):
    tokens: torch.Tensor  # Long[M, N]: [clip name | codes | END | PAD ...]
    clip: torch.Tensor  # Long[M]
    length: torch.Tensor  # Long[M], frames


def all_windows(split: str, lo: int, hi: int, stride: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every window of lo..hi frames starting every `stride` frames inside one split of one clip:
    (features Float[L_i, F] each, clip Long[M])."""
    xs, clips = [], []
    for c, x in enumerate(motion.clip_features()):
        b = motion.split_point(x.shape[0])
        start, stop = (0, b) if split == "train" else (b, x.shape[0])
        for length in range(lo, hi + 1):
            for s in range(start, stop - length + 1, stride):
                xs.append(x[s:s + length].float())
                clips.append(c)
    if not xs:
        raise UnmaskError(f"no {split} window of {lo}..{hi} frames")
    return xs, torch.tensor(clips)


class BAMMRecipe(Recipe):
    name = "bamm"
    papers = ("BAMM",)
    summary = "BAMM on pybullet's humanoid clips: hybrid-attention autoregression, END predicts the length"
    Settings = Settings
    sample_suffix = ".gif"
    takes_prompt = True

    def check(self) -> None:
        d = self.settings.data
        if d.min_frames > d.max_frames:
            raise UnmaskError(f"data.min_frames={d.min_frames} exceeds data.max_frames={d.max_frames}")
        if self.settings.eval.prefix >= d.min_frames:
            raise UnmaskError(f"eval.prefix={self.settings.eval.prefix} must be below data.min_frames={d.min_frames}")

    # ids: codes 0..K-1, END = K, PAD = K + 1, clip names K + 2 ..
    def ids(self) -> tuple[int, int, int]:
        k = self.settings.data.codes
        return k, k + 1, k + 2

    def model_config(self) -> ModelConfig:
        m, d = self.settings.model, self.settings.data
        end, pad, first_clip = self.ids()
        lay = Layout.seq(1, "label") + Layout.seq(d.max_frames, "motion") + Layout.seq(1, "end")
        return ModelConfig(first_clip + len(motion.CLIPS), lay, dim=m.dim, depth=m.depth, heads=m.heads,
                           segment_vocab={"label": (first_clip, first_clip + len(motion.CLIPS)),
                                          "motion": (0, end + 1), "end": (end, end + 1)})

    def build(self) -> BAMMTokenModeling:
        b = self.settings.bamm
        end, pad, _ = self.ids()
        objective = BAMMTokenModeling(HybridCausalTokenModel(self.model_config()), codes=self.settings.data.codes,
                                      end_id=end, pad_id=pad, reveal_prob=b.reveal_prob, reveal_max=b.reveal_max,
                                      corrupt_max=b.corrupt_max)
        f = motion.F
        objective.register_buffer("codebook", torch.zeros(self.settings.data.codes, f))  # normalised features
        objective.register_buffer("mean", torch.zeros(f))
        objective.register_buffer("std", torch.ones(f))
        return objective

    # tokens --------------------------------------------------------------------------------------
    def codebook(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-means of the training frames (normalised per feature): (centroids [K, F], mean [F], std [F])."""
        d, seed = self.settings.data, self.settings.train.seed

        def make():
            frames = torch.cat([x[:motion.split_point(len(x))] for x in motion.clip_features()]).float()
            mean, std = frames.mean(0), frames.std(0).clamp(min=1e-3)  # constant features (a fixed axis) stay finite
            g = torch.Generator().manual_seed(seed)
            return kmeans((frames - mean) / std, d.codes, steps=30, generator=g), mean, std

        return memo(("bamm-codebook", d.codes, seed), make)

    def rows(self, codebook: tuple[torch.Tensor, ...], split: str, stride: int) -> Rows:
        """The split's windows as token rows; codebook: (centroids [K, F], mean [F], std [F])."""
        d = self.settings.data
        centroids, mean, std = codebook
        end, pad, first_clip = self.ids()
        xs, clips = all_windows(split, d.min_frames, d.max_frames, stride)
        tokens = torch.full((len(xs), d.max_frames + 2), pad, dtype=torch.long)
        tokens[:, 0] = clips + first_clip
        lengths = torch.tensor([len(x) for x in xs])
        for i, x in enumerate(xs):
            tokens[i, 1:1 + len(x)] = nearest((x - mean) / std, centroids)
            tokens[i, 1 + len(x)] = end
        return Rows(tokens, clips, lengths)

    def prepare(self, run: Run, objective: nn.Module, data: dict) -> None:
        centroids, mean, std = self.codebook()
        objective.codebook.copy_(centroids)
        objective.mean.copy_(mean)
        objective.std.copy_(std)

    def training_data(self, run: Run) -> dict:
        return {"tokens": self.rows(self.codebook(), "train", self.settings.data.stride).tokens}

    # measuring ----------------------------------------------------------------------------------
    def cascade(self, objective: BAMMTokenModeling, canvas: torch.Tensor, g: torch.Generator):
        end, pad, _ = self.ids()
        return bamm_cascade(objective.model.eval(), canvas, end_id=end, pad_id=pad, prefix=1,
                            refinements=self.settings.bamm.refinements, temperature=self.settings.eval.temperature,
                            generator=g)

    @torch.no_grad()
    def measure(self, run: Run, objective: BAMMTokenModeling) -> dict:
        s = self.settings
        codebook = (objective.codebook, objective.mean, objective.std)
        train, test = self.rows(codebook, "train", s.data.stride), self.rows(codebook, "test", s.eval.stride)
        truth = test.length.double()
        per_clip = torch.zeros(2, len(motion.CLIPS), dtype=torch.float64)  # mean, median
        for c in range(len(motion.CLIPS)):
            mine = train.length[train.clip == c].double()
            per_clip[:, c] = torch.stack([mine.mean(), mine.median()])
        every = train.length.double()
        metrics: dict = {"length_error_clip_mean": float((per_clip[0, test.clip] - truth).abs().mean()),
                         "length_error_clip_median": float((per_clip[1, test.clip] - truth).abs().mean()),
                         "length_error_global_mean": float((every.mean() - truth).abs().mean()),
                         "length_error_global_median": float((every.median() - truth).abs().mean()),
                         "test_windows": len(truth), "train_windows": len(train.length),
                         "test_mean_length": float(truth.mean()),
                         "train_mean_length": float(train.length.double().mean())}
        g = torch.Generator().manual_seed(s.train.seed)
        mask_id = objective.model.mask_id
        kept = True
        for name, given in (("", 1), ("_prefix", 1 + s.eval.prefix)):
            canvas = test.tokens.clone()
            canvas[:, given:] = mask_id
            lengths = []
            for _ in range(s.eval.draws):
                out = self.cascade(objective, canvas, g)
                kept &= bool(torch.equal(out.tokens[:, :given], canvas[:, :given]))
                lengths.append(out.lengths)
            drawn = torch.stack(lengths).double()  # [draws, M]
            metrics[f"length_error_bamm{name}"] = float((drawn - truth).abs().mean())
            metrics[f"length_error_bamm_median{name}"] = float((drawn.median(0).values - truth).abs().mean())
            metrics[f"length_spread_bamm{name}"] = float(drawn.std(0).mean()) if s.eval.draws > 1 else 0.0
            metrics[f"length_mean_bamm{name}"] = float(drawn.mean())
        metrics["given_tokens_kept"] = kept
        metrics["end_at_true_length_teacher_forced"] = self.end_accuracy(objective, test.tokens)
        return metrics

    def end_accuracy(self, objective: BAMMTokenModeling, tokens: torch.Tensor) -> float:
        """Share of held-out windows whose most likely token at the true END place, reading the true
        tokens before it (causal, nothing else revealed), is END."""
        end, _, _ = self.ids()
        logits = objective.model(tokens, None)
        where = tokens == end
        return float((logits.argmax(-1)[where] == end).double().mean())

    def report(self, metrics: dict) -> Report:
        s = self.settings
        rows = [Metric("length_error_bamm", "BAMM, clip name given (mean over draws)", "length_error_clip_mean",
                       "lower"),
                Metric("length_error_bamm_median", "BAMM, clip name given (median of the draws)",
                       "length_error_clip_median", "lower"),
                Metric("length_error_bamm_prefix", f"BAMM, clip name and first {s.eval.prefix} frames given",
                       "length_error_clip_mean", "lower"),
                Metric("length_error_bamm_median_prefix", "BAMM with the prefix (median of the draws)",
                       "length_error_clip_median", "lower"),
                Metric("length_error_clip_mean", "mean length of the clip's training windows"),
                Metric("length_error_clip_median", "median length of the clip's training windows"),
                Metric("length_error_global_mean", "mean length of all training windows"),
                Metric("length_error_global_median", "median length of all training windows")]
        other = [Metric(k) for k in ("length_mean_bamm", "length_mean_bamm_prefix", "length_spread_bamm",
                                     "length_spread_bamm_prefix",
                                     "end_at_true_length_teacher_forced", "given_tokens_kept", "test_windows",
                                     "train_windows", "test_mean_length", "train_mean_length")]
        setup = (f"{self.setup()} Windows of {s.data.min_frames}-{s.data.max_frames} frames at {motion.RATE} fps, "
                 f"{s.data.codes} k-means codes (one per frame); {s.eval.draws} cascades per held-out window "
                 f"(one causal pass, {s.bamm.refinements} refinement pass(es), temperature {s.eval.temperature}). "
                 "Window lengths are where the windows were cut, bounded by each clip's split part: the held-out "
                 "parts are a third as long as the training parts, so every predictor learned on training windows "
                 "overestimates. The data are tiny (15 clips, about 34 s).")
        return Report("bamm: length from the END token on pybullet's humanoid clips", setup, (
            Table(tuple(rows), "mean absolute length error on held-out windows (frames)"),
            Table(tuple(other), "spread, teacher-forced END accuracy and sizes")), ())

    @torch.no_grad()
    def sample(self, run: Run, objective: BAMMTokenModeling, n: int, out: Path, prompt: str | None = None) -> Path:
        """n motions of the clip `prompt` (or the clips in turn), drawn by the cascade, as one GIF; each
        motion shown for its drawn length, then held still."""
        _, _, first_clip = self.ids()
        clips = torch.tensor([motion.clip_index(prompt)] * n if prompt is not None
                             else [i % len(motion.CLIPS) for i in range(n)])
        canvas = torch.full((n, self.settings.data.max_frames + 2), objective.model.mask_id, dtype=torch.long)
        canvas[:, 0] = clips + first_clip
        res = self.cascade(objective, canvas, torch.Generator().manual_seed(self.settings.train.seed))
        codes = res.tokens[:, 1:-1].clamp(max=self.settings.data.codes - 1)  # END and PAD: replaced below
        x = objective.codebook[codes] * objective.std + objective.mean  # [n, T, F]
        places = torch.arange(codes.shape[1])
        last = (end_lengths(res.tokens, self.ids()[0], 1).clamp(min=1) - 1)[:, None]
        x = x.gather(1, torch.minimum(places[None], last)[..., None].expand_as(x))  # hold the last frame
        positions = motion.joint_positions(x.double())
        return motion.render_gif(positions, self.sample_path(out))
