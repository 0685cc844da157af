"""Recipe `mae-digits`: a masked autoencoder (MAE, He et al. 2022, arXiv:2111.06377) on the 8x8
digits, judged by probes of its frozen features against the same encoder at random initialisation
and raw pixels (`probed.py`).

Each digit (grey levels / 16) is cut into 2x2 patches (a 4x4 grid of 16 tokens); 75% are hidden
by an exact-count masker and only the visible ones enter the encoder; the decoder regresses the
norm-pix targets of the hidden patches. Evaluation probes mean-pooled encoder features on the
held-out split: logistic regression and kNN, with all labels and with 10 labels per class.

`objective.variant` swaps the objective for one of the MAE family (same encoder, same budget),
`objective.masker` the masks (ColorMAE's colours among them); `benchmarks/mae_variants.py` compares
them all:

| variant | paper | module |
|---|---|---|
| mae | MAE | objectives/mae.py |
| hpm | P3 HPM (Wang et al. 2023, arXiv:2304.05919) | objectives/hpm.py |
| lut | P1 LUT (Kim et al. 2023, arXiv:2310.13593) | objectives/lut.py |
| mr-mae | P5 MR-MAE (Gao et al. 2023, arXiv:2303.05475; teacher: a plain MAE) | objectives/mimic.py |
| maskalign | P33 MaskAlign (Xue et al. 2023, arXiv:2211.08887; same teacher) | objectives/maskalign.py |
| dmjd | P72 DMJD (Ma et al. 2023, arXiv:2301.00230) | objectives/dmjd.py |
| mfm | P43 MFM (Xie et al. 2023, arXiv:2206.07706) | objectives/mfm.py |
| selective | P64 SelectiveMAE (Wang et al. 2024, arXiv:2406.11933) | objectives/selective_mae.py |
| umd | P13 UMD (Hansen-Estruch et al. 2024, arXiv:2406.17688) | objectives/umd.py |
| mto / replace | P4 MTO (Choi et al. 2024, arXiv:2404.08330) / its replace-mode baseline | objectives/mto.py |
| hybrid | P23 Hybrid Distillation (Shi et al. 2023, arXiv:2306.15876; two teachers) | objectives/hybrid_distill.py |

Maskers: random, block, and P26 ColorMAE's red / blue / green / purple noise (Hinojosa et al. 2024,
arXiv:2407.13036). The teacher of mr-mae and maskalign is the encoder of `objective.teacher_run`, or
a plain MAE with the same settings trained first in RUN/teacher (role "teacher"); it rides along,
frozen, in the student's checkpoint. Under torchrun only rank 0 goes on after a training, so there
train the teacher as a run of its own and pass it as `objective.teacher_run`.

`hybrid` has a second teacher: a supervised ViT (the same encoder and a linear head on its mean-pooled
tokens, cross-entropy on the training labels, with the `train` settings), trained first in
RUN/classifier (role "classifier") or read from `objective.classifier_run`. The student thereby sees
the training labels through that teacher, as in the paper (its supervised teacher); the probes then
fit on the same labels. `objective.hybrid_relation=false` / `hybrid_feature=false` keep one term
alone, `hybrid_drop=false` keeps every token in every block.

    unmask train mae-digits --out runs/mae-digits          # about a minute on one free CPU core
    unmask train mae-digits objective.variant=hpm objective.masker=random --out runs/hpm
    unmask train mae-digits objective.variant=hybrid --out runs/hybrid   # MAE teacher, classifier, then student
    unmask eval runs/mae-digits
    unmask sample runs/mae-digits --n 8                    # visible patches / reconstruction / truth
    unmask train mae-digits data.source=my_digits/ --out runs/mae-mine   # your own images (docs/data.md)
    unmask train mae-digits model.cls_token=true --out runs/mae-cls      # ViTMAE's layout:
    unmask export runs/mae-cls --to hf out/mae                           # ViTMAEForPreTraining (docs/export.md)
    unmask train mae-digits model.cls_token=true model.init=out/mae --out runs/mae-more

With `data.source` the images are the user's (`data/user_images.py`, as in the `digits` recipe); the
probes use the classes of their subfolders. `data.size` is the image side the recipe reads (default 8):
every image, the embedded digits too, is resized to size x size with a box filter and quantised to
`data.levels` grey levels (default the digits' 17), and the encoder is built for that grid, so
`data.size=32 model.patch=4` gives 64 tokens (`benchmarks/mae_variants_32.py`). Without labels there
is nothing to probe: the run reports the objective on the held-out images instead (`probed.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import option, section
from ..data import digits
from ..data.user_images import quantise, resize
from ..errors import UnmaskError
from ..masking import BlockMask, ColorMask, RandomMask
from ..masking.color import COLOURS
from ..nn.mae import MAEConfig, MaskedAutoencoder, MaskedEncoder
from ..nn.vitmae_hf import load_vitmae_folder
from ..objectives.classification import PooledClassifier
from ..objectives.dmjd import DisjointMaskingJointDistillation
from ..objectives.hpm import HardPatchMining
from ..objectives.hybrid_distill import EncoderFeatures, HybridDistillation
from ..objectives.lut import UnmaskedTokenLearning
from ..objectives.mae import MaskedAutoencoding
from ..objectives.maskalign import MaskAlign
from ..objectives.mfm import MaskedFrequencyModeling
from ..objectives.mimic import MimicBeforeReconstruct
from ..objectives.mto import MaskedTokenOptimization
from ..objectives.selective_mae import SelectiveMaskedAutoencoding
from ..objectives.umd import UnifiedMaskedDiffusion
from ..train import TrainConfig
from .digits import ImageData
from .probed import AutoencoderSettings, ProbedRecipe, ProbedSettings, ProbeSet
from .run import Run

MASKERS = ("random", "block", *COLOURS)
VARIANTS = ("mae", "hpm", "lut", "mr-mae", "maskalign", "dmjd", "mfm", "selective", "umd", "mto", "replace", "hybrid")
TEACHER_VARIANTS = ("mr-mae", "maskalign", "hybrid")
OWN_MASKS = ("hpm", "mfm", "selective", "hybrid")  # variants whose masks are part of the method
NO_INIT = ("maskalign", "mfm", "mto", "replace", "hybrid")  # no drop-hidden MaskedAutoencoder that ViTMAE weights fit


@dataclass(frozen=True)
class Model(AutoencoderSettings):
    patch: int = option(2, choices=(1, 2, 4), help="patch side in pixels")
    decoder_depth: int = option(2, lo=0, help="decoder blocks")
    cls_token: bool = option(False, help="a class token before the patches, as ViTMAE has (export --to hf needs it)")
    init: str = option("", help="a ViTMAEForPreTraining folder (safetensors) to start from; needs model.cls_token=true")


@dataclass(frozen=True)
class Objective:
    variant: str = option("mae", choices=VARIANTS, help="objective of the MAE family")
    masker: str = option("random", choices=MASKERS, help="which patches to hide (colours: ColorMAE)")
    ratio: float = option(0.75, lo=0.0, hi=0.95, help="share of patches hidden")
    norm_pix: bool = option(True, help="per-patch normalised pixel targets")
    teacher_run: str = option("", help="trained mae-digits run used as teacher (mr-mae, maskalign, hybrid); "
                                       "empty: train one first, in RUN/teacher")
    classifier_run: str = option("", help="hybrid: folder of a trained supervised teacher (RUN/classifier of "
                                          "another run with these settings); empty: train one first there")
    hybrid_relation: bool = option(True, help="hybrid: imitate the MAE teacher's attention maps")
    hybrid_feature: bool = option(True, help="hybrid: regress the supervised teacher's last-layer features")
    hybrid_drop: bool = option(True, help="hybrid: drop the least-attended tokens block by block "
                                          "(false: every block reads every token)")


@dataclass(frozen=True)
class Data(ImageData):
    size: int = option(8, lo=1, help="image side in pixels: every image (the digits too) is resized to size x size; "
                                     "a multiple of model.patch")
    levels: int = option(digits.LEVELS, lo=2, hi=65536, help="grey levels the images are quantised to "
                                                             "(the digits have 17)")


@dataclass(frozen=True)
class Settings(ProbedSettings):
    train: TrainConfig = section(TrainConfig(steps=1000, batch_size=128, lr=1e-3, warmup=100))
    model: Model = section(Model())
    data: Data = section(Data())
    objective: Objective = section(Objective())


def images(split: str) -> torch.Tensor:
    """Float[M, 1, 8, 8] in [0, 1]."""
    return as_input(digits.load(split).images)


def as_input(levels: torch.Tensor, size: int = 8, n_levels: int = digits.LEVELS) -> torch.Tensor:
    """Long[M, size * size] grey levels 0..n_levels-1 -> Float[M, 1, size, size] in [0, 1]."""
    return levels.float().div(n_levels - 1).view(-1, 1, size, size)


def regrid(levels: torch.Tensor, size: int, n_levels: int) -> torch.Tensor:
    """The embedded digits' Long[M, 64] levels 0..16 -> Long[M, size * size] levels 0..n_levels-1, by
    the steps a user's image takes (box-filter resize, then quantise); the digits' own grid is returned
    as it is."""
    if (size, n_levels) == (8, digits.LEVELS):
        return levels
    grey = levels.double().div(digits.LEVELS - 1).view(-1, 8, 8).numpy()
    return torch.from_numpy(np.stack([quantise(resize(g, (size, size)), n_levels).reshape(-1) for g in grey]))


class MAEDigits(ProbedRecipe):
    name = "mae-digits"
    papers = ("MAE", "P1", "P3", "P4", "P5", "P13", "P23", "P26", "P33", "P43", "P64", "P72")
    summary = "masked autoencoder (and its variants) on 8x8 digits; linear / kNN probes vs random init and raw pixels"
    Settings = Settings
    roles = ("main", "teacher", "classifier")
    trained_prefix = "mae_"
    tasks = {"": "which digit (10 classes)"}
    raw_inputs = "raw pixels"

    def check(self) -> None:
        o, size, patch = self.settings.objective, self.settings.data.size, self.settings.model.patch
        if size % patch:
            raise UnmaskError(f"data.size={size} must be a multiple of model.patch={patch} (at least {patch})")
        if o.variant in OWN_MASKS and o.masker != "random":
            raise UnmaskError(f"objective.variant={o.variant!r} chooses its own masks; leave objective.masker=random")
        if self.settings.model.init and (o.variant in NO_INIT or not self.settings.model.cls_token):
            raise UnmaskError("model.init loads a ViTMAE (class token, hidden patches dropped): set "
                              f"model.cls_token=true and a variant other than {', '.join(NO_INIT)}")
        if o.variant == "hybrid" and self.settings.model.cls_token:
            raise UnmaskError("objective.variant=hybrid drops patch tokens and reads no class token: leave "
                              "model.cls_token=false")
        if not (o.hybrid_relation or o.hybrid_feature):
            raise UnmaskError("objective.hybrid_relation and objective.hybrid_feature are both false: keep one")

    def model_config(self) -> MAEConfig:
        m, size = self.settings.model, self.settings.data.size
        hide = "replace" if self.settings.objective.variant in ("mto", "replace") else "drop"
        return dataclasses.replace(m.mae_config(image_size=(size, size), channels=1, patch=m.patch, hide=hide),
                                   cls_token=m.cls_token)

    def masker(self):
        o = self.settings.objective
        if o.masker == "random":
            return RandomMask()
        if o.masker == "block":
            return BlockMask(min_area=2)
        return ColorMask(colour=o.masker, sigma_small=0.5, sigma_large=1.0)  # widths for a 4x4 grid

    def build(self):
        """The objective of `objective.variant`; a teacher variant gets an untrained teacher, whose
        weights `prepare` (training) or the checkpoint (loading) then supplies."""
        o = self.settings.objective
        mcfg, m, v = self.model_config(), self.masker(), o.variant
        common = {"ratio": o.ratio}
        if v == "maskalign":
            return MaskAlign(mcfg, placeholder_teacher(mcfg), m, **common)
        if v == "mfm":
            return MaskedFrequencyModeling(mcfg, ratio=0.5)
        if v == "hybrid":
            return HybridDistillation(mcfg, placeholder_teacher(mcfg), placeholder_teacher(mcfg),
                                      keep_ratios=None if o.hybrid_drop else (1.0,) * mcfg.depth,
                                      relation=o.hybrid_relation, feature=o.hybrid_feature)
        model = MaskedAutoencoder(mcfg)
        common["norm_pix"] = o.norm_pix
        if v == "hpm":
            return HardPatchMining(model, steps=self.settings.train.steps, **common)
        if v == "lut":
            return UnmaskedTokenLearning(model, m, **common)
        if v == "mr-mae":
            return MimicBeforeReconstruct(model, placeholder_teacher(mcfg), m, **common)
        if v == "dmjd":
            return DisjointMaskingJointDistillation(model, m, **common)
        if v == "selective":
            return SelectiveMaskedAutoencoding(model, **common)
        if v == "umd":
            return UnifiedMaskedDiffusion(model, m, **common)
        if v in ("mto", "replace"):
            return MaskedTokenOptimization(model, m, recalibrate=v == "mto", **common)
        return MaskedAutoencoding(model, m, **common)

    def build_role(self, role: str):
        if role == "teacher":  # a plain MAE with these settings, trained first in RUN/teacher
            return self.plain().build()
        if role == "classifier":  # hybrid's supervised teacher, trained first in RUN/classifier
            return PooledClassifier(EncoderFeatures(self.model_config()), self.settings.model.dim, self.classes())
        return super().build_role(role)

    def split(self, split: str, run: Run | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images Float[M, 1, S, S] in [0, 1], labels Long[M]) of a split, S = `data.size`: the embedded
        digits or the user's images."""
        d = self.settings.data
        if not d.source:
            return as_input(regrid(digits.load(split).images, d.size, d.levels), d.size, d.levels), \
                digits.load(split).labels
        levels, labels = d.read(run, size=(d.size, d.size), levels=d.levels).part(split)
        return as_input(levels, d.size, d.levels), labels

    def labelled(self) -> bool:
        return not self.settings.data.source or self.settings.data.read().labelled

    def classes(self) -> int:
        """How many classes the labels of the training split name (10 for the digits)."""
        return int(self.split("train")[1].max()) + 1

    def training_data(self, run: Run) -> dict:
        return {"images": self.split("train", run)[0]}

    def heldout_batch(self) -> dict:
        return {"images": self.split("test")[0]}

    def prepare(self, run: Run, objective, data: dict) -> None:
        if self.settings.objective.variant in TEACHER_VARIANTS:
            objective.teacher.load_state_dict(self.teacher(run, data).state_dict())
        if self.settings.objective.variant == "hybrid":
            objective.supervised_teacher.load_state_dict(self.classifier(run).backbone.encoder.state_dict())
        if self.settings.model.init and run.trained_step() is None:  # a resumed run keeps its checkpoint's weights
            load_vitmae_folder(objective.model, self.settings.model.init)

    def teacher(self, run: Run, data: dict) -> MaskedEncoder:
        """The teacher of mr-mae and maskalign: the encoder of `objective.teacher_run`, or of a plain
        MAE with these settings trained first in RUN/teacher."""
        path = self.settings.objective.teacher_run
        if not path:
            return self.fit(run.sub("teacher"), self.objective("teacher"), data, role="teacher").model.encoder
        from . import load_run

        loaded = load_run(Path(path), progress=run.progress)
        model = getattr(loaded.objective, "model", None)
        if loaded.recipe.name != self.name or not isinstance(model, MaskedAutoencoder):
            raise UnmaskError(f"objective.teacher_run={path} is not a mae-digits run with a pixel decoder "
                              f"(variant mae, for one)")
        if loaded.recipe.model_config() != self.model_config():
            raise UnmaskError(f"objective.teacher_run={path} has another model configuration than this run")
        return model.encoder

    def classifier(self, run: Run) -> PooledClassifier:
        """hybrid's supervised teacher: the classifier in `objective.classifier_run`, or one trained first
        in RUN/classifier on the training labels, with the `train` settings."""
        path = self.settings.objective.classifier_run
        if path:
            return self.load(Run(Path(path), progress=run.progress), role="classifier")
        if not self.labelled():
            raise UnmaskError("objective.variant=hybrid trains a supervised teacher on the labels, and these "
                              "data have none (no class subfolders)")
        images, labels = self.split("train", run)
        return self.fit(run.sub("classifier"), self.objective("classifier"), {"inputs": images, "labels": labels},
                        role="classifier")

    def probe_set(self, split: str) -> ProbeSet:
        x, labels = self.split(split)
        return ProbeSet(x, {"": labels})

    def details(self) -> str:
        m, o, d = self.settings.model, self.settings.objective, self.settings.data
        grid = f"{d.size}x{d.size}, {d.levels} grey levels"
        held_out = (f"Images: `{d.source}` at {grid}; held-out split by hash of the path "
                    f"({int(d.read(size=(d.size, d.size), levels=d.levels).held_out.sum())} images)." if d.source
                    else f"Digits at {grid}; held-out split (360 digits).")
        return (f"Patch {m.patch}, ratio {o.ratio}, norm-pix {o.norm_pix}, masker {o.masker}, variant {o.variant}. "
                f"{held_out}")

    @torch.no_grad()
    def sample(self, run: Run, objective, n: int, out: Path) -> Path:
        """Reconstructions of n held-out digits: visible patches / filled in / truth, drawn into a PNG."""
        from ..eval.figures import digit_grid
        from ..nn.patch import patchify, unpatchify
        from ..nn.visible import restore

        variant, patch = self.settings.objective.variant, self.settings.model.patch
        if not isinstance(objective, MaskedAutoencoding) or variant == "umd":
            raise UnmaskError(f"sample draws pixel reconstructions; variant {variant!r} does not make them")
        x = self.split("test")[0][:n]
        n = len(x)
        mask = objective.draw_mask(len(x), torch.Generator().manual_seed(self.settings.train.seed))
        pred = objective.model(x, mask)
        patches = patchify(x, patch)
        if objective.norm_pix:  # undo the per-patch normalisation with the true patch statistics
            hidden = patches.gather(1, pred.encoded.index.ids_hidden.unsqueeze(-1).expand_as(pred.pred))
            pred = pred._replace(pred=pred.pred * (hidden.var(-1, keepdim=True) + 1e-6).sqrt()
                                 + hidden.mean(-1, keepdim=True))
        index = pred.encoded.index
        visible = patches.gather(1, index.ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        size = self.settings.data.size
        filled = unpatchify(restore(visible, pred.pred, index), patch, 1, size, size)
        shown = unpatchify(restore(visible, torch.zeros_like(pred.pred), index), patch, 1, size, size)
        rows = torch.cat([shown, filled.clamp(0, 1), x]).view(-1, size * size) * 16
        out = self.sample_path(out)
        digit_grid(rows.numpy(), 3, len(x), out, "visible patches / reconstruction / truth",
                   ["visible", "filled", "truth"])
        return out


def placeholder_teacher(cfg: MAEConfig) -> MaskedEncoder:
    """An untrained teacher whose weights are replaced before use (a trained teacher, or the
    checkpoint's). Drawn from a forked RNG so that the student's initial weights are the same as if
    the trained teacher had been passed in."""
    with torch.random.fork_rng(devices=[]):
        return MaskedEncoder(cfg)
