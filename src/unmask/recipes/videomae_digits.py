"""Recipe `videomae-digits`: VideoMAE on moving digits (Tong et al. 2022, arXiv:2203.12602), with
VideoMAE V2's dual masking (P65, Wang et al. 2023, arXiv:2303.16727) and CrossVideoMAE's video-frame
alignment (P57, Ahamed et al. 2025, arXiv:2502.07811) as variants, judged by probes of the frozen
encoder against the same encoder at random initialisation and raw pixels (`probed.py`).

Clips of 8 frames of 32 x 32 (`data/video.py`: one 16 x 16 digit moving and bouncing) are cut into
tubelets of 2 frames x 4 x 4 pixels, a 4 x 8 x 8 grid of 256 tokens; a tube mask hides 90% of them
(the same 58 of 64 places in each time slice) and the encoder reads the other 24. Evaluation
probes mean-pooled encoder features of held-out clips (made from the 360 held-out digits) on two
tasks: which digit moves (10 classes) and where it moves (8 directions), with logistic regression
and kNN, with all labels and with 10 labels per class.

| objective.variant | paper | objective |
|---|---|---|
| videomae | VideoMAE: tube mask, decoder fills every hidden place | objectives/videomae.py |
| v2 | P65 VideoMAE V2: + running-cell decoder mask (`objective.decoder_ratio`) | objectives/videomae.py |
| crossvideo | P57 CrossVideoMAE: + video / sampled-frame contrastive alignment | objectives/cross_video.py |

    unmask train videomae-digits --out runs/videomae          # about 4 minutes on one free CPU core
    unmask train videomae-digits objective.variant=v2 --out runs/videomae-v2
    unmask eval runs/videomae
    unmask sample runs/videomae --n 4                         # visible / filled in / truth, frame by frame
    unmask train videomae-digits data.source=my_digits/ --out runs/videomae-mine   # your own images (docs/data.md)

With `data.source` the clips are made from the user's images (`data/user_images.py`, as in the
`digits` recipe: 8x8, 17 grey levels, classes from subfolders, a hash split): training clips from
their training images; the probes are fitted on clips of those and scored on clips of their held-out
ones, and the `digit` task asks which class moves. Without labels there is nothing to probe: the
run reports the objective on the held-out clips instead (`probed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import digits
from ..data.video import MovingDigits, moving_digits, moving_images
from ..nn.mae import MAEConfig, MaskedAutoencoder
from ..objectives.cross_video import CrossVideoMAE
from ..objectives.videomae import VideoMaskedAutoencoding
from ..train import TrainConfig
from .base import memo
from .digits import ImageData
from .probed import ProbedRecipe, ProbedSettings, ProbeSet
from .run import Run

VARIANTS = ("videomae", "v2", "crossvideo")
FRAMES, SIZE, PATCH, TUBELET = 8, 32, 4, 2
PROBE_SEED = 0  # the probe clips are the same for every run
TASKS = {"digit": "which digit moves (10 classes)", "direction": "where it moves (8 directions)"}


@dataclass(frozen=True)
class Data(ImageData):
    """The images the clips are made from (`ImageData`), and how many training clips each opens."""
    clips_per_digit: int = option(2, lo=1, hi=8, help="training clips made from each training digit (or image "
                                                      "of data.source), drawn with train.seed")


@dataclass(frozen=True)
class Objective:
    variant: str = option("videomae", choices=VARIANTS, help="objective")
    ratio: float = option(0.9, lo=0.0, hi=0.95, help="share of tubelets hidden from the encoder (tube mask)")
    decoder_ratio: float = option(0.5, lo=0.25, hi=0.75, help="v2: share of places the decoder skips (running cell)")
    cross_weight: float = option(0.1, lo=0.0, help="crossvideo: weight of the video-frame alignment")
    norm_pix: bool = option(False, help="per-tubelet normalised targets, as VideoMAE (off here: docs/video.md)")


@dataclass(frozen=True)
class Settings(ProbedSettings):
    train: TrainConfig = section(TrainConfig(steps=600, batch_size=64, lr=1.5e-3, warmup=50))
    data: Data = section(Data())
    objective: Objective = section(Objective())


def probe_clips(split: str, data: Data = Data()) -> MovingDigits:
    """The fixed probe clips of a split: one per digit (or per image of `data.source`), seeded by PROBE_SEED."""
    if not data.source:
        return memo(("moving-digits", split, FRAMES, SIZE, PROBE_SEED),
                    lambda: moving_digits(split, frames=FRAMES, size=SIZE, seed=PROBE_SEED))
    images = (data.source, data.labels, data.invert, data.white)
    return memo(("moving-images", images, split, FRAMES, SIZE, PROBE_SEED),
                lambda: moving_images(*user_images(data, split), frames=FRAMES, size=SIZE, seed=PROBE_SEED))


def user_images(data: Data, split: str, run: Run | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images Long[n, 8, 8] grey levels 0..16, labels Long[n]) of a split of `data.source`; with
    `run`, RUN/data.json is written."""
    levels, labels = data.read(run).part(split)
    return levels.view(-1, 8, 8), labels


class VideoMAEDigits(ProbedRecipe):
    name = "videomae-digits"
    papers = ("P65", "P57")
    summary = "VideoMAE (tube masks; V2 dual masking, CrossVideoMAE variants) on moving digits; probes vs random init"
    Settings = Settings
    raw_inputs = "raw pixels"
    probe_batch = 128

    @property
    def tasks(self) -> dict[str, str]:
        d = self.settings.data
        if not d.source:
            return TASKS
        return {**TASKS, "digit": f"which image class moves ({len(d.read().classes)} classes)"}

    def model_config(self) -> MAEConfig:
        return self.settings.model.mae_config(image_size=(FRAMES, SIZE, SIZE), channels=1, patch=PATCH,
                                              tubelet=TUBELET)

    def build(self):
        o = self.settings.objective
        model = MaskedAutoencoder(self.model_config())
        if o.variant == "crossvideo":
            return CrossVideoMAE(model, ratio=o.ratio, norm_pix=o.norm_pix, weight=o.cross_weight)
        decoder_ratio = o.decoder_ratio if o.variant == "v2" else 0.0
        return VideoMaskedAutoencoding(model, ratio=o.ratio, norm_pix=o.norm_pix, decoder_ratio=decoder_ratio)

    def training_data(self, run: Run) -> dict:
        """Float[M, 1, 8, 32, 32]: `data.clips_per_digit` clips of each training digit (or training
        image of `data.source`), drawn with train.seed."""
        d = self.settings.data
        if d.source:
            images, labels = user_images(d, "train", run)
        else:
            train = digits.load("train")
            images, labels = train.images.view(-1, 8, 8), train.labels
        clips = moving_images(images, labels, clips_per_digit=d.clips_per_digit, frames=FRAMES, size=SIZE,
                              seed=self.settings.train.seed)
        return {"videos": clips.videos}

    def labelled(self) -> bool:
        return not self.settings.data.source or self.settings.data.read().labelled

    def heldout_batch(self) -> dict:
        return {"videos": probe_clips("test", self.settings.data).videos}

    def probe_set(self, split: str) -> ProbeSet:
        clips = probe_clips(split, self.settings.data)
        return ProbeSet(clips.videos, {task: getattr(clips, task)[:, 0] for task in self.tasks})

    def details(self) -> str:
        o, d = self.settings.objective, self.settings.data
        v2 = f" (decoder ratio {o.decoder_ratio})" if o.variant == "v2" else ""
        held_out = (f"Images: `{d.source}` at 8x8, 17 grey levels; held-out clips of the images held out by hash "
                    f"of the path ({int(d.read().held_out.sum())} images)." if d.source
                    else "Held-out clips of the 360 held-out digits.")
        return f"Tube ratio {o.ratio}, variant {o.variant}{v2}. {held_out}"

    @torch.no_grad()
    def sample(self, run: Run, objective: VideoMaskedAutoencoding, n: int, out: Path) -> Path:
        """Reconstructions of n held-out clips under one tube mask: for each clip, rows of visible
        tubelets / filled in / truth, frames left to right, drawn into a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..nn.patch import unpatchify_video
        from ..nn.visible import gather_tokens, restore

        x = probe_clips("test", self.settings.data).videos[:n]
        n = len(x)
        mask = objective.draw_mask(n, torch.Generator().manual_seed(self.settings.train.seed))
        encoded = objective.model.encoder(x, mask)
        pred = objective.model.decoder(encoded)  # every hidden place, even for v2
        tubelets = objective.model.config.patchify(x)
        index = encoded.index
        hidden = gather_tokens(tubelets, index.ids_hidden)
        if objective.norm_pix:  # undo the per-tubelet normalisation with the true statistics
            pred = pred * (hidden.var(-1, keepdim=True) + 1e-6).sqrt() + hidden.mean(-1, keepdim=True)
        visible = gather_tokens(tubelets, index.ids_keep)
        shape = (PATCH, TUBELET, 1, FRAMES, SIZE, SIZE)
        rows = [unpatchify_video(restore(visible, torch.full_like(pred, 0.5), index), *shape),
                unpatchify_video(restore(visible, pred, index), *shape).clamp(0, 1), x]
        fig, axes = plt.subplots(3 * n, FRAMES, figsize=(FRAMES * 0.7, 3 * n * 0.7 + 0.4), squeeze=False)
        for i in range(n):
            for r, (name, video) in enumerate(zip(("visible", "filled", "truth"), rows, strict=True)):
                for t in range(FRAMES):
                    ax = axes[3 * i + r, t]
                    ax.imshow(video[i, 0, t].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                axes[3 * i + r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        o = self.settings.objective
        fig.suptitle(f"{o.variant}: tube mask {o.ratio} (grey = hidden) / reconstruction / truth", fontsize=8)
        fig.tight_layout()
        out = self.sample_path(out)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return out
