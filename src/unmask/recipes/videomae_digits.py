"""Recipe `videomae-digits`: VideoMAE on moving digits (Tong et al. 2022), with VideoMAE V2's dual
masking (P65) and CrossVideoMAE's video-frame alignment (P57) as variants, judged by probes of the
frozen encoder against the same encoder at random initialisation and raw pixels.

Clips of 8 frames of 32 x 32 (`data/video.py`: one 16 x 16 digit moving and bouncing) are cut into
tubelets of 2 frames x 4 x 4 pixels, a 4 x 8 x 8 grid of 256 tokens; a tube mask hides 90% of them
(the same 58 of 64 places in each time slice) and the encoder reads the other 24. `evaluate`
probes mean-pooled encoder features of held-out clips (made from the 360 held-out digits) on two
tasks: which digit moves (10 classes) and where it moves (8 directions), with logistic regression
and kNN, with all labels and with 10 labels per class.

| variant | paper | objective |
|---|---|---|
| videomae | VideoMAE: tube mask, decoder fills every hidden place | objectives/videomae.py |
| v2 | P65 VideoMAE V2: + running-cell decoder mask (`decoder_ratio`) | objectives/videomae.py |
| crossvideo | P57 CrossVideoMAE: + video / sampled-frame contrastive alignment | objectives/cross_video.py |

    unmask train videomae-digits --out runs/videomae          # about 4 minutes on one free CPU core
    unmask train videomae-digits variant=v2 --out runs/videomae-v2
    unmask eval runs/videomae
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from ..config import option
from ..data.video import DIRECTION_NAMES, moving_digits
from ..eval.probe import pooled_features, probe, probe_table
from ..nn.mae import MAEConfig, MaskedAutoencoder
from ..objectives.cross_video import CrossVideoMAE
from ..objectives.videomae import VideoMaskedAutoencoding
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

NAME = "videomae-digits"
PAPERS = ("P65", "P57")
SUMMARY = "VideoMAE (tube masks; V2 dual masking, CrossVideoMAE variants) on moving digits; probes vs random init"
VARIANTS = ("videomae", "v2", "crossvideo")
FRAMES, SIZE, PATCH, TUBELET = 8, 32, 4, 2
PROBE_SEED = 0  # the probe clips are the same for every run
TASKS = {"digit": 10, "direction": len(DIRECTION_NAMES)}


@dataclass(frozen=True)
class Config:
    steps: int = option(600, lo=1, help="training steps")
    batch_size: int = option(64, lo=1, help="clips per step")
    lr: float = option(1.5e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(50, lo=0, help="warmup steps")
    weight_decay: float = option(0.05, lo=0.0, help="AdamW weight decay")
    seed: int = option(0, lo=0, help="seed of every random draw (training clips included)")
    dim: int = option(128, lo=8, help="encoder width")
    depth: int = option(4, lo=1, help="encoder blocks")
    heads: int = option(4, lo=1, help="encoder attention heads")
    decoder_dim: int = option(64, lo=8, help="decoder width")
    decoder_depth: int = option(2, lo=1, help="decoder blocks")
    ratio: float = option(0.9, lo=0.0, hi=0.95, help="share of tubelets hidden from the encoder (tube mask)")
    norm_pix: bool = option(False, help="per-tubelet normalised targets, as VideoMAE (off here: docs/video.md)")
    decoder_ratio: float = option(0.5, lo=0.25, hi=0.75, help="v2: share of places the decoder skips (running cell)")
    cross_weight: float = option(0.1, lo=0.0, help="crossvideo: weight of the video-frame alignment")
    variant: str = option("videomae", choices=VARIANTS, help="objective")
    clips_per_digit: int = option(2, lo=1, hi=8, help="training clips made from each training digit")
    probe_draws: int = option(5, lo=1, help="few-shot draws averaged by eval")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           weight_decay=self.weight_decay, seed=self.seed, checkpoint_every=self.checkpoint_every)

    def model_config(self) -> MAEConfig:
        return MAEConfig(image_size=(FRAMES, SIZE, SIZE), channels=1, patch=PATCH, tubelet=TUBELET, dim=self.dim,
                         depth=self.depth, heads=self.heads, decoder_dim=self.decoder_dim,
                         decoder_depth=self.decoder_depth, decoder_heads=4, cls_token=False)


def training_clips(cfg: Config) -> torch.Tensor:
    """Float[M, 1, 8, 32, 32]: `clips_per_digit` clips of each training digit, drawn with the run's seed."""
    return moving_digits("train", clips_per_digit=cfg.clips_per_digit, frames=FRAMES, size=SIZE, seed=cfg.seed).videos


@lru_cache(maxsize=2)
def probe_clips(split: str):
    """The fixed probe clips of a split: one per digit, seeded by PROBE_SEED."""
    return moving_digits(split, frames=FRAMES, size=SIZE, seed=PROBE_SEED)


def build(cfg: Config):
    torch.manual_seed(cfg.seed)
    model = MaskedAutoencoder(cfg.model_config())
    if cfg.variant == "crossvideo":
        return CrossVideoMAE(model, ratio=cfg.ratio, norm_pix=cfg.norm_pix, weight=cfg.cross_weight)
    decoder_ratio = cfg.decoder_ratio if cfg.variant == "v2" else 0.0
    return VideoMaskedAutoencoding(model, ratio=cfg.ratio, norm_pix=cfg.norm_pix, decoder_ratio=decoder_ratio)


def run_config(cfg: Config) -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    objective = build(cfg)
    fit(objective, {"videos": training_clips(cfg)}, cfg.train_config(), run_dir, run_config(cfg), progress)
    return evaluate(cfg, objective, run_dir)


def probe_scores(encoder_features, cfg: Config, prefix: str) -> dict[str, float]:
    """Probe `encoder_features(videos) -> Float[b, L, D]` on both tasks: keys PREFIX{task}_{score}."""
    train, test = probe_clips("train"), probe_clips("test")
    train_x = pooled_features(encoder_features, train.videos, batch=128)
    test_x = pooled_features(encoder_features, test.videos, batch=128)
    out = {}
    for task in TASKS:
        scores = probe(train_x, getattr(train, task)[:, 0], test_x, getattr(test, task)[:, 0],
                       draws=cfg.probe_draws, seed=cfg.seed)
        out.update(scores.as_dict(f"{prefix}{task}_"))
    return out


def evaluate(cfg: Config, objective, run_dir: Path, baselines: bool = True) -> dict:
    """The objective's encoder features, and (with `baselines`) the same encoder at random init and
    raw pixels, probed alike."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    objective.eval()
    metrics = probe_scores(objective.features, cfg, "pretrained_")
    if baselines:
        fresh = build(replace(cfg, variant="videomae")).model.eval()
        metrics.update(probe_scores(fresh.features, cfg, "random_init_"))
        metrics.update(probe_scores(lambda x: x.flatten(1).unsqueeze(1), cfg, "pixels_"))  # one 8192-d token
        for task in TASKS:
            metrics[f"{task}_few_shot_gain_over_random_init"] = (metrics[f"pretrained_{task}_linear_few"]
                                                                 - metrics[f"random_init_{task}_linear_few"])
    write_json(run_dir / "metrics.json", metrics)
    write_report(cfg, metrics, run_dir)
    return metrics


def write_report(cfg: Config, metrics: dict, run_dir: Path) -> None:
    rows = [(f"{cfg.variant} features", "pretrained_"), ("same encoder, random init", "random_init_"),
            ("raw pixels", "pixels_")]
    lines = [
        "# videomae-digits: probes of frozen features",
        "",
        f"{cfg.steps} steps of {cfg.batch_size} clips, width {cfg.dim}, depth {cfg.depth}, tube ratio {cfg.ratio}, "
        f"variant {cfg.variant}" + (f" (decoder ratio {cfg.decoder_ratio})" if cfg.variant == "v2" else "")
        + f", seed {cfg.seed}. Held-out clips of the 360 held-out digits; few-shot = 10 labels per class, "
        f"mean +- std over {cfg.probe_draws} draws.",
        "",
    ]
    for task in TASKS:
        lines += [f"Task: {task}.", "", *probe_table(metrics, [(label, f"{p}{task}_") for label, p in rows]), ""]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


@torch.no_grad()
def sample(cfg: Config, objective: VideoMaskedAutoencoding, n: int, out: Path) -> None:
    """Reconstructions of n held-out clips under one tube mask: for each clip, rows of visible
    tubelets / filled in / truth, frames left to right, drawn into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..nn.patch import unpatchify_video
    from ..nn.visible import gather_tokens, restore

    objective.eval()
    x = probe_clips("test").videos[:n]
    mask = objective.draw_mask(len(x), torch.Generator().manual_seed(cfg.seed))
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
    fig.suptitle(f"{cfg.variant}: tube mask {cfg.ratio} (grey = hidden) / reconstruction / truth", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(out), dpi=90)
    plt.close(fig)
