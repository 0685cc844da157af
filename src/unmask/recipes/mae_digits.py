"""Recipe `mae-digits`: a masked autoencoder (MAE, He et al. 2022) on the 8x8 digits, judged by
probes of its frozen features against the same encoder at random initialisation and raw pixels.

Each digit (grey levels / 16) is cut into 2x2 patches (a 4x4 grid of 16 tokens); 75% are hidden
by an exact-count masker and only the visible ones enter the encoder; the decoder regresses the
norm-pix targets of the hidden patches. `evaluate` probes mean-pooled encoder features on the
held-out split: logistic regression and kNN, with all labels and with 10 labels per class.

`variant` swaps the objective for one of the MAE family (same encoder, same budget), `masker` the
masks (ColorMAE's colours among them); `benchmarks/mae_variants.py` compares them all:

| variant | paper | module |
|---|---|---|
| mae | MAE | objectives/mae.py |
| hpm | P3 HPM | objectives/hpm.py |
| lut | P1 LUT | objectives/lut.py |
| mr-mae | P5 MR-MAE (teacher: a plain MAE trained first) | objectives/mimic.py |
| maskalign | P33 MaskAlign (same teacher) | objectives/maskalign.py |
| dmjd | P72 DMJD | objectives/dmjd.py |
| mfm | P43 MFM | objectives/mfm.py |
| selective | P64 SelectiveMAE | objectives/selective_mae.py |
| umd | P13 UMD | objectives/umd.py |
| mto / replace | P4 MTO / its replace-mode baseline | objectives/mto.py |

    unmask train mae-digits --out runs/mae-digits          # about a minute on one free CPU core
    unmask train mae-digits variant=hpm masker=random --out runs/hpm
    unmask eval runs/mae-digits
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..config import option
from ..data import digits
from ..errors import UnmaskError
from ..eval.probe import pooled_features, probe, probe_table
from ..masking import BlockMask, ColorMask, RandomMask
from ..masking.color import COLOURS
from ..nn.mae import MAEConfig, MaskedAutoencoder, MaskedEncoder
from ..objectives.dmjd import DisjointMaskingJointDistillation
from ..objectives.hpm import HardPatchMining
from ..objectives.lut import UnmaskedTokenLearning
from ..objectives.mae import MaskedAutoencoding
from ..objectives.maskalign import MaskAlign
from ..objectives.mfm import MaskedFrequencyModeling
from ..objectives.mimic import MimicBeforeReconstruct
from ..objectives.mto import MaskedTokenOptimization
from ..objectives.selective_mae import SelectiveMaskedAutoencoding
from ..objectives.umd import UnifiedMaskedDiffusion
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

NAME = "mae-digits"
PAPERS = ("MAE", "P1", "P3", "P4", "P5", "P13", "P26", "P33", "P43", "P64", "P72")
SUMMARY = "masked autoencoder (and its variants) on 8x8 digits; linear / kNN probes vs random init and raw pixels"
MASKERS = ("random", "block", *COLOURS)
VARIANTS = ("mae", "hpm", "lut", "mr-mae", "maskalign", "dmjd", "mfm", "selective", "umd", "mto", "replace")
TEACHER_VARIANTS = ("mr-mae", "maskalign")
OWN_MASKS = ("hpm", "mfm", "selective")  # variants whose masks are part of the method


@dataclass(frozen=True)
class Config:
    steps: int = option(1000, lo=1, help="training steps")
    batch_size: int = option(128, lo=1, help="images per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(100, lo=0, help="warmup steps")
    weight_decay: float = option(0.05, lo=0.0, help="AdamW weight decay")
    seed: int = option(0, lo=0, help="seed of every random draw")
    patch: int = option(2, choices=(1, 2, 4), help="patch side in pixels")
    dim: int = option(128, lo=8, help="encoder width")
    depth: int = option(4, lo=1, help="encoder blocks")
    heads: int = option(4, lo=1, help="encoder attention heads")
    decoder_dim: int = option(64, lo=8, help="decoder width")
    decoder_depth: int = option(2, lo=0, help="decoder blocks")
    ratio: float = option(0.75, lo=0.0, hi=0.95, help="share of patches hidden")
    norm_pix: bool = option(True, help="per-patch normalised pixel targets")
    masker: str = option("random", choices=MASKERS, help="which patches to hide (colours: ColorMAE)")
    variant: str = option("mae", choices=VARIANTS, help="objective of the MAE family")
    teacher_run: str = option("", help="trained mae-digits run used as teacher (mr-mae, maskalign); "
                                       "empty: train one first")
    probe_draws: int = option(5, lo=1, help="few-shot draws averaged by eval")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           weight_decay=self.weight_decay, seed=self.seed, checkpoint_every=self.checkpoint_every)

    def model_config(self) -> MAEConfig:
        return MAEConfig(image_size=(8, 8), channels=1, patch=self.patch, dim=self.dim, depth=self.depth,
                         heads=self.heads, decoder_dim=self.decoder_dim, decoder_depth=self.decoder_depth,
                         decoder_heads=4, cls_token=False,
                         hide="replace" if self.variant in ("mto", "replace") else "drop")


def images(split: str) -> torch.Tensor:
    """Float[M, 1, 8, 8] in [0, 1]."""
    return digits.load(split).images.float().div(digits.LEVELS - 1).view(-1, 1, 8, 8)


def masker(cfg: Config):
    if cfg.masker == "random":
        return RandomMask()
    if cfg.masker == "block":
        return BlockMask(min_area=2)
    return ColorMask(colour=cfg.masker, sigma_small=0.5, sigma_large=1.0)  # widths for a 4x4 grid


def build(cfg: Config, teacher: MaskedEncoder | None = None):
    """The objective of `cfg.variant`; a teacher variant gets `teacher` (or an untrained one, whose
    weights a checkpoint or `train` then supplies)."""
    if cfg.variant in OWN_MASKS and cfg.masker != "random":
        raise UnmaskError(f"variant {cfg.variant!r} chooses its own masks; leave masker=random")
    torch.manual_seed(cfg.seed)
    mcfg, m, v = cfg.model_config(), masker(cfg), cfg.variant
    common = {"ratio": cfg.ratio}
    if v == "maskalign":
        return MaskAlign(mcfg, teacher or MaskedEncoder(mcfg), m, **common)
    if v == "mfm":
        return MaskedFrequencyModeling(mcfg, ratio=0.5)
    model = MaskedAutoencoder(mcfg)
    common["norm_pix"] = cfg.norm_pix
    if v == "hpm":
        return HardPatchMining(model, steps=cfg.steps, **common)
    if v == "lut":
        return UnmaskedTokenLearning(model, m, **common)
    if v == "mr-mae":
        return MimicBeforeReconstruct(model, teacher or MaskedEncoder(mcfg), m, **common)
    if v == "dmjd":
        return DisjointMaskingJointDistillation(model, m, **common)
    if v == "selective":
        return SelectiveMaskedAutoencoding(model, **common)
    if v == "umd":
        return UnifiedMaskedDiffusion(model, m, **common)
    if v in ("mto", "replace"):
        return MaskedTokenOptimization(model, m, recalibrate=v == "mto", **common)
    return MaskedAutoencoding(model, m, **common)


def teacher_encoder(cfg: Config, run_dir: Path, progress: bool) -> MaskedEncoder:
    """The frozen teacher of mr-mae and maskalign: the encoder of `cfg.teacher_run`, or of a plain
    MAE trained here first (same settings, in RUN_DIR/teacher)."""
    if cfg.teacher_run:
        from . import load_run

        _, tcfg, tobj = load_run(Path(cfg.teacher_run))
        if tcfg.model_config() != cfg.model_config():
            raise UnmaskError(f"teacher_run {cfg.teacher_run} has another model configuration than this run")
        return tobj.model.encoder
    tcfg = replace(cfg, variant="mae", teacher_run="")
    tobj = build(tcfg)
    fit(tobj, {"images": images("train")}, tcfg.train_config(), Path(run_dir) / "teacher", run_config(tcfg), progress)
    return tobj.model.encoder


def run_config(cfg: Config) -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    teacher = teacher_encoder(cfg, run_dir, progress) if cfg.variant in TEACHER_VARIANTS else None
    objective = build(cfg, teacher)
    fit(objective, {"images": images("train")}, cfg.train_config(), run_dir, run_config(cfg), progress)
    return evaluate(cfg, objective, run_dir)


def probe_scores(encoder_features, cfg: Config, prefix: str) -> dict[str, float]:
    """Probe `encoder_features(images) -> Float[b, L, D]` on the fixed split."""
    train_x = pooled_features(encoder_features, images("train"))
    test_x = pooled_features(encoder_features, images("test"))
    scores = probe(train_x, digits.load("train").labels, test_x, digits.load("test").labels,
                   draws=cfg.probe_draws, seed=cfg.seed)
    return scores.as_dict(prefix)


def evaluate(cfg: Config, objective, run_dir: Path, baselines: bool = True) -> dict:
    """The objective's encoder features, and (with `baselines`) the plain MAE encoder at random
    init and raw pixels, probed alike."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    objective.eval()
    metrics = probe_scores(objective.features, cfg, "mae_")
    if baselines:
        fresh = build(replace(cfg, variant="mae")).model.eval()
        metrics.update(probe_scores(fresh.features, cfg, "random_init_"))
        metrics.update(probe_scores(lambda x: x.flatten(1).unsqueeze(1), cfg, "pixels_"))  # one 64-d token
        metrics["few_shot_gain_over_random_init"] = metrics["mae_linear_few"] - metrics["random_init_linear_few"]
    write_json(run_dir / "metrics.json", metrics)
    write_report(cfg, metrics, run_dir)
    return metrics


def write_report(cfg: Config, metrics: dict, run_dir: Path) -> None:
    rows = [(f"{cfg.variant} features", "mae_"), ("same encoder, random init", "random_init_"),
            ("raw pixels", "pixels_")]
    lines = [
        "# mae-digits: probes of frozen MAE features",
        "",
        f"{cfg.steps} steps, patch {cfg.patch}, width {cfg.dim}, depth {cfg.depth}, ratio {cfg.ratio}, "
        f"norm-pix {cfg.norm_pix}, masker {cfg.masker}, variant {cfg.variant}, seed {cfg.seed}. Held-out split "
        f"(360 digits); "
        f"few-shot = 10 labels per class, mean +- std over {cfg.probe_draws} draws.",
        "",
        *probe_table(metrics, rows),
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


@torch.no_grad()
def sample(cfg: Config, objective: MaskedAutoencoding, n: int, out: Path) -> None:
    """Reconstructions of n held-out digits: visible patches / filled in / truth, drawn into a PNG."""
    from ..eval.figures import digit_grid
    from ..nn.patch import patchify, unpatchify
    from ..nn.visible import restore

    if not isinstance(objective, MaskedAutoencoding) or cfg.variant == "umd":
        raise UnmaskError(f"sample draws pixel reconstructions; variant {cfg.variant!r} does not make them")
    objective.eval()
    x = images("test")[:n]
    mask = objective.draw_mask(len(x), torch.Generator().manual_seed(cfg.seed))
    pred = objective.model(x, mask)
    patches = patchify(x, cfg.patch)
    if objective.norm_pix:  # undo the per-patch normalisation with the true patch statistics
        hidden = patches.gather(1, pred.encoded.index.ids_hidden.unsqueeze(-1).expand_as(pred.pred))
        pred = pred._replace(pred=pred.pred * (hidden.var(-1, keepdim=True) + 1e-6).sqrt()
                             + hidden.mean(-1, keepdim=True))
    index = pred.encoded.index
    visible = patches.gather(1, index.ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    filled = unpatchify(restore(visible, pred.pred, index), cfg.patch, 1, 8, 8)
    shown = unpatchify(restore(visible, torch.zeros_like(pred.pred), index), cfg.patch, 1, 8, 8)
    rows = torch.cat([shown, filled.clamp(0, 1), x]).view(-1, 64) * 16
    digit_grid(rows.numpy(), 3, n, Path(out), "visible patches / reconstruction / truth",
               ["visible", "filled", "truth"])
