"""Recipe `spark-glyphs`: SparK (P41, Tian et al. 2023, "Designing BERT for Convolutional Networks:
Sparse and Hierarchical Masked Modeling", arXiv:2301.03580) on the 32x32 glyphs, judged by probes of
the frozen CNN's features against the same CNN at random initialisation (`probed.py`).

A small ResNet (`nn/masked_cnn.py`: a stride-2 stem by default and two stages, final stride 4) reads
only the visible cells of an 8x8 grid of 4x4-pixel cells (60% hidden, exactly 38 of 64), as a sparse
image: hidden positions are zeroed after every conv and the batch norms use visible statistics. The
hierarchical decoder (`nn/spark.py`) fills each scale's hidden positions with a mask token and
upsamples; the loss is the norm-pix MSE of the hidden cells. Evaluation probes the mean-pooled last
map of the held-out glyphs (other fonts of the same 111 characters): logistic regression and kNN,
with all labels and with 10 labels per class.

    unmask train spark-glyphs --out runs/spark-glyphs        # about a minute of one CPU core
    unmask eval runs/spark-glyphs
    unmask sample runs/spark-glyphs --n 8                    # visible cells / filled in / truth
    unmask train spark-glyphs objective.ratio=0.75 model.stem_stride=1 --out runs/spark-s1
    unmask train spark-glyphs data.source=my_images/ --out runs/spark-mine   # your own images (docs/data.md)

With `data.source` the images are the user's (`data/user_images.py`, read as 32x32 grey images of
256 levels); the probes use the classes of their subfolders, and without labels the run reports the
objective on the held-out images instead (`probed.py`).

`benchmarks/spark.py` sets it beside a ViT MAE with the same budget, over 3 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section, to_dict
from ..data.image_sets import load, save_grid
from ..nn.masked_cnn import CNNConfig, cell_keep
from ..nn.patch import patchify, unpatchify
from ..objectives.spark import SparK, visible_count
from ..train import TrainConfig
from .digits import ImageData
from .probed import ProbedRecipe, ProbedSettings, ProbeSet
from .run import Run

IMAGE = 32


@dataclass(frozen=True)
class Model:
    dim: int = option(64, lo=8, help="the CNN's last width (its first stage has half)")
    decoder_dim: int = option(32, lo=4, help="decoder width at the deepest scale (halved at the next)")
    stem_stride: int = option(2, choices=(1, 2), help="stem stride: 2 gives 4x4-pixel cells with two stages")


@dataclass(frozen=True)
class Objective:
    variant: str = option("spark", choices=("spark",), help="the objective (SparK)")
    ratio: float = option(0.6, lo=0.0, hi=0.95, help="share of cells hidden (exactly round(64 * (1 - ratio)) visible)")
    norm_pix: bool = option(True, help="per-cell normalised pixel targets")


@dataclass(frozen=True)
class Data(ImageData):
    """The user's images (read as 32x32 grey), or the glyphs."""
    source: str = option("", help="your images: a folder of PNG / JPEG (one class per subfolder), a glob, or a "
                                  ".npy array [N, H, W]; empty: the 32x32 glyphs")


@dataclass(frozen=True)
class Settings(ProbedSettings):
    train: TrainConfig = section(TrainConfig(steps=300, batch_size=64, lr=1.5e-3, warmup=30))
    model: Model = section(Model())
    data: Data = section(Data())
    objective: Objective = section(Objective())


def glyph_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(Float[M, 1, 32, 32] in [0, 1], Long[M]) of a split of the glyphs."""
    s = load("glyphs", split, IMAGE)
    return s.images.float() / 255.0, s.labels


class SparKGlyphs(ProbedRecipe):
    name = "spark-glyphs"
    papers = ("P41",)
    summary = "SparK: a sparse masked CNN with a hierarchical decoder on 32x32 glyphs; probes vs random init"
    Settings = Settings
    trained_prefix = "spark_"
    tasks = {"": "which character (111 classes, held-out fonts)"}

    def model_config(self) -> CNNConfig:
        m = self.settings.model
        return CNNConfig(channels=1, widths=(m.dim // 2, m.dim), stem_stride=m.stem_stride)

    def model_dict(self) -> dict:
        d = to_dict(self.model_config())
        return {**d, "widths": list(d["widths"])}  # as JSON reads it back

    def build(self) -> SparK:
        o, m = self.settings.objective, self.settings.model
        return SparK((IMAGE, IMAGE), self.model_config(), decoder_width=m.decoder_dim, ratio=o.ratio,
                     norm_pix=o.norm_pix)

    def split(self, split: str, run: Run | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images Float[M, 1, 32, 32] in [0, 1], labels Long[M]) of a split: the glyphs or the user's."""
        if not self.settings.data.source:
            return glyph_images(split)
        levels, labels = self.settings.data.read(run, size=(IMAGE, IMAGE), levels=256).part(split)
        return levels.float().div(255).view(-1, 1, IMAGE, IMAGE), labels

    def labelled(self) -> bool:
        return not self.settings.data.source or self.settings.data.read(size=(IMAGE, IMAGE), levels=256).labelled

    def training_data(self, run) -> dict:
        return {"images": self.split("train", run)[0]}

    def heldout_batch(self) -> dict:
        return {"images": self.split("test")[0]}

    def probe_set(self, split: str) -> ProbeSet:
        images, labels = self.split(split)
        return ProbeSet(images, {"": labels})

    def details(self) -> str:
        cfg = self.model_config()
        grid = IMAGE // cfg.stride
        return (f"CNN widths {cfg.widths}, stem stride {cfg.stem_stride}: a {grid}x{grid} grid of {cfg.stride}x"
                f"{cfg.stride}-pixel cells, {visible_count(grid * grid, self.settings.objective.ratio)} visible; "
                "probes fitted on the training glyphs, scored on held-out renders.")

    @torch.no_grad()
    def sample(self, run: Run, objective: SparK, n: int, out: Path, prompt: str | None = None) -> Path:
        """Reconstructions of n held-out images: visible cells / filled in / truth, as one PNG."""
        x = self.split("test")[0][:n]
        mask = objective.draw_mask(len(x), torch.Generator().manual_seed(self.settings.train.seed))
        pred = patchify(objective.reconstruct(x, mask), objective.cell)  # [n, L, cell*cell]
        cells = patchify(x, objective.cell)
        if objective.norm_pix:  # undo the per-cell normalisation with the true cell statistics
            pred = pred * (cells.var(-1, keepdim=True) + 1e-6).sqrt() + cells.mean(-1, keepdim=True)
        filled = unpatchify(torch.where(mask.unsqueeze(-1), pred, cells), objective.cell, 1, IMAGE, IMAGE)
        shown = x * cell_keep(mask, objective.grid, objective.cell)
        rows = torch.cat([shown, filled.clamp(0, 1), x])  # [3n, 1, 32, 32]
        out = self.sample_path(out)
        save_grid((rows * 255).round().to(torch.uint8), out, columns=len(x))
        return out
