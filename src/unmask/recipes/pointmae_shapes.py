"""Recipe `pointmae-shapes`: masked pre-training of point clouds (Point-MAE, P52; Point-BERT, P60;
Point-CMAE, P58) on clouds of 8 parametric shapes sampled at run time, judged by probes of the frozen
encoder's features (which shape is it?) against the same encoder at random initialisation.

Each cloud (1024 points, `data/points.py`) is cut into G groups of k points (FPS centres, kNN, points
relative to the centre; grouped once, as FPS and kNN are deterministic); a mini-PointNet embeds each
group and an MLP of the centres gives the positions. `evaluate` probes mean-pooled encoder features
of held-out clouds: logistic regression and kNN, with all labels and with 10 labels per class.

| variant | paper | objective |
|---|---|---|
| pointmae | P52 Point-MAE: 60% of groups hidden, Chamfer-L2 on their points | objectives/point_mae.py |
| pointbert | P60 Point-BERT: 25-45% hidden, cross-entropy on their k-means codes | objectives/point_bert.py |
| pointcmae | P58 Point-CMAE: two masks, two decoders, contrast on groups hidden in both | objectives/point_cmae.py |

    unmask train pointmae-shapes --out runs/pointmae          # about 2.5 minutes of one CPU core
    unmask train pointmae-shapes variant=pointcmae --out runs/pointcmae   # about 4 minutes
    unmask eval runs/pointmae
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from ..config import option
from ..data import points as shapes
from ..errors import UnmaskError
from ..eval.probe import pooled_features, probe, probe_table
from ..nn.mae import MAEConfig
from ..nn.point_groups import PointGroups
from ..nn.point_mae import PointEncoder
from ..nn.point_tokenizer import PointTokenizer
from ..objectives.point_bert import PointBERT
from ..objectives.point_cmae import PointCMAE
from ..objectives.point_mae import PointMAE
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

NAME = "pointmae-shapes"
PAPERS = ("P52", "P58", "P60")
SUMMARY = "Point-MAE / Point-BERT / Point-CMAE on clouds of 8 parametric shapes; linear / kNN probes vs random init"
VARIANTS = ("pointmae", "pointbert", "pointcmae")


@dataclass(frozen=True)
class Config:
    steps: int = option(1000, lo=1, help="training steps")
    batch_size: int = option(32, lo=1, help="clouds per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(50, lo=0, help="warmup steps")
    weight_decay: float = option(0.05, lo=0.0, help="AdamW weight decay")
    seed: int = option(0, lo=0, help="seed of weights, masks, batches and probe draws")
    data_seed: int = option(0, lo=0, help="seed of the clouds (the same for every variant and seed)")
    train_per_class: int = option(250, lo=10, help="training clouds per shape")
    test_per_class: int = option(100, lo=1, help="held-out clouds per shape")
    points: int = option(1024, lo=16, help="points per cloud")
    groups: int = option(32, lo=2, help="groups per cloud (G)")
    group_size: int = option(32, lo=2, help="points per group (k)")
    pointnet_width: int = option(16, lo=1, help="mini-PointNet width w (3 -> w -> 2w, 4w -> 4w -> dim)")
    dim: int = option(128, lo=8, help="encoder width")
    depth: int = option(4, lo=1, help="encoder blocks")
    heads: int = option(4, lo=1, help="encoder attention heads")
    decoder_dim: int = option(64, lo=8, help="decoder width")
    decoder_depth: int = option(2, lo=1, help="decoder blocks")
    ratio: float = option(0.6, lo=0.05, hi=0.95, help="share of groups hidden (pointmae, pointcmae)")
    variant: str = option("pointmae", choices=VARIANTS, help="objective")
    codes: int = option(64, lo=2, help="pointbert: tokenizer codebook size")
    contrast_weight: float = option(1.0, lo=0.0, help="pointcmae: weight of the co-hidden contrast")
    probe_draws: int = option(5, lo=1, help="few-shot draws averaged by eval")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           weight_decay=self.weight_decay, seed=self.seed, checkpoint_every=self.checkpoint_every)

    def model_config(self) -> MAEConfig:
        return MAEConfig(image_size=(self.groups,), patch=1, channels=3, dim=self.dim, depth=self.depth,
                         heads=self.heads, decoder_dim=self.decoder_dim, decoder_depth=self.decoder_depth,
                         decoder_heads=4, cls_token=False, hide="replace" if self.variant == "pointbert" else "drop")


@lru_cache(maxsize=4)
def _grouped(split: str, per_class: int, points: int, data_seed: int, groups: int, size: int):
    from ..nn.point_groups import group_points

    clouds = shapes.load(split, per_class=per_class, points=points, seed=data_seed)
    parts = [group_points(chunk, groups, size) for chunk in clouds.points.split(256)]
    return PointGroups(torch.cat([p.points for p in parts]), torch.cat([p.centres for p in parts])), clouds.labels


def grouped(cfg: Config, split: str) -> tuple[PointGroups, torch.Tensor]:
    """(every cloud's groups: points Float[M, G, k, 3], centres Float[M, G, 3]; labels Long[M])."""
    if cfg.group_size > cfg.points or cfg.groups > cfg.points:
        raise UnmaskError(f"groups={cfg.groups} and group_size={cfg.group_size} must not exceed points={cfg.points}")
    per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
    return _grouped(split, per_class, cfg.points, cfg.data_seed, cfg.groups, cfg.group_size)


def build(cfg: Config):
    """The objective of `cfg.variant` (Point-BERT's tokenizer is fitted by `train`)."""
    torch.manual_seed(cfg.seed)
    encoder = PointEncoder(cfg.model_config(), cfg.group_size, cfg.pointnet_width)
    if cfg.variant == "pointbert":
        return PointBERT(encoder, PointTokenizer(cfg.codes))
    if cfg.variant == "pointcmae":
        return PointCMAE(encoder, ratio=cfg.ratio, weight=cfg.contrast_weight)
    return PointMAE(encoder, ratio=cfg.ratio)


def run_config(cfg: Config) -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    objective = build(cfg)
    groups, _ = grouped(cfg, "train")
    if cfg.variant == "pointbert":  # the codebook comes from the training groups, before pre-training
        objective.tokenizer.fit(groups.points, generator=torch.Generator().manual_seed(cfg.seed))
    fit(objective, {"groups": groups.points, "centres": groups.centres}, cfg.train_config(), run_dir,
        run_config(cfg), progress=progress)
    return evaluate(cfg, objective, run_dir)


def probe_scores(features, cfg: Config, prefix: str) -> dict[str, float]:
    """Probe `features(PointGroups of b clouds) -> Float[b, G, D]` on the held-out clouds."""
    (train_g, train_y), (test_g, test_y) = grouped(cfg, "train"), grouped(cfg, "test")

    def pooled(g: PointGroups) -> torch.Tensor:
        return pooled_features(lambda idx: features(PointGroups(g.points[idx], g.centres[idx])),
                               torch.arange(len(g.points)))

    scores = probe(pooled(train_g), train_y, pooled(test_g), test_y, draws=cfg.probe_draws, seed=cfg.seed)
    return scores.as_dict(prefix)


def evaluate(cfg: Config, objective, run_dir: Path, baselines: bool = True) -> dict:
    """The objective's encoder features and (with `baselines`) the same encoder at random init."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    objective.eval()
    metrics = probe_scores(objective.features, cfg, "pretrained_")
    if baselines:
        fresh = build(replace(cfg, variant="pointmae")).eval()
        metrics.update(probe_scores(fresh.features, cfg, "random_init_"))
        metrics["few_shot_gain_over_random_init"] = metrics["pretrained_linear_few"] - metrics["random_init_linear_few"]
    write_json(run_dir / "metrics.json", metrics)
    write_report(cfg, metrics, run_dir)
    return metrics


def write_report(cfg: Config, metrics: dict, run_dir: Path) -> None:
    lines = [
        f"# {NAME}: probes of frozen {cfg.variant} features",
        "",
        f"{cfg.steps} steps of {cfg.batch_size} clouds, {cfg.groups} groups x {cfg.group_size} points, width "
        f"{cfg.dim}, depth {cfg.depth}, seed {cfg.seed}. Held-out split ({cfg.test_per_class * len(shapes.SHAPES)} "
        f"clouds of {len(shapes.SHAPES)} shapes); few-shot = 10 labels per class, mean +- std over "
        f"{cfg.probe_draws} draws.",
        "",
        *probe_table(metrics, [(f"{cfg.variant}, pretrained", "pretrained_"),
                               ("same encoder, random init", "random_init_")]),
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


@torch.no_grad()
def sample(cfg: Config, objective, n: int, out: Path) -> None:
    """Reconstructions of n held-out clouds (visible groups / with the predicted hidden groups /
    truth), drawn into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(objective, PointMAE):
        raise UnmaskError(f"sample draws point reconstructions; variant {cfg.variant!r} does not make them")
    objective.eval()
    groups, _ = grouped(cfg, "test")
    idx = torch.linspace(0, len(groups.points) - 1, n).long()  # spread over the shapes
    g = PointGroups(groups.points[idx], groups.centres[idx])
    mask = objective.draw_mask(n, torch.Generator().manual_seed(cfg.seed))
    rec = objective.reconstruction(g, mask)
    whole = g.points + g.centres.unsqueeze(2)  # [n, G, k, 3]
    hidden = rec.encoded.index.ids_hidden
    filled = rec.decoded.points + g.centres.gather(1, hidden.unsqueeze(-1).expand(-1, -1, 3)).unsqueeze(2)
    fig = plt.figure(figsize=(3 * n, 9))
    for i in range(n):
        views = [whole[i][~mask[i]], torch.cat([whole[i][~mask[i]], filled[i]]), whole[i]]
        for row, (cloud, title) in enumerate(zip(views, ("visible", "filled in", "truth"), strict=True)):
            ax = fig.add_subplot(3, n, row * n + i + 1, projection="3d")
            xyz = cloud.reshape(-1, 3).numpy()
            ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], s=1)
            ax.set_axis_off()
            ax.set_title(title, fontsize=8)
    fig.savefig(Path(out), dpi=80)
    plt.close(fig)
