"""Recipe `pointmae-shapes`: masked pre-training of point clouds (Point-MAE, P52, Pang et al. 2022,
arXiv:2203.06604; Point-BERT, P60, Yu et al. 2022, arXiv:2111.14819; Point-CMAE, P58, Ren et al.
2024, arXiv:2407.05862; I2P-MAE, P7, Zhang et al. 2023, arXiv:2212.06785) on clouds of 8 parametric
shapes sampled at run time, judged by probes of the frozen encoder's features (which shape is it?)
against the same encoder at random initialisation (`probed.py`).

Each cloud (1024 points, `data/points.py`) is cut into G groups of k points (FPS centres, kNN, points
relative to the centre; grouped once, as FPS and kNN are deterministic); a mini-PointNet embeds each
group and an MLP of the centres gives the positions. Evaluation probes mean-pooled encoder features
of held-out clouds: logistic regression and kNN, with all labels and with 10 labels per class.

| objective.variant | paper | objective |
|---|---|---|
| pointmae | P52 Point-MAE: 60% of groups hidden, Chamfer-L2 on their points | objectives/point_mae.py |
| pointbert | P60 Point-BERT: 25-45% hidden, cross-entropy on their k-means codes | objectives/point_bert.py |
| pointcmae | P58 Point-CMAE: two masks, two decoders, contrast on groups hidden in both | objectives/point_cmae.py |
| i2pmae | P7 I2P-MAE: 2D-guided mask, Chamfer on hidden groups + 2D features on visible ones | objectives/i2p_mae.py |

I2P-MAE's 2D network is an MAE trained first on the glyphs (`data/image_sets.py`, another data set:
no shape label reaches it), in `RUN/image`; it reads three depth views of each cloud
(`nn/projection.py`), and its class-token attention and features, back-projected to the group
centres (`nn/view_features.py`), are computed once per cloud before pre-training.

    unmask train pointmae-shapes --out runs/pointmae          # about 2.5 minutes of one CPU core
    unmask train pointmae-shapes objective.variant=pointcmae --out runs/pointcmae   # about 4 minutes
    unmask train pointmae-shapes objective.variant=i2pmae --out runs/i2pmae
    unmask eval runs/pointmae
    unmask sample runs/pointmae --n 5                         # visible / filled in / truth
    unmask train pointmae-shapes data.source=scans/ --out runs/pointmae-mine   # your own clouds (docs/data.md)

With `data.source` the clouds are the user's (`data/user_points.py`: resampled to `data.points`,
normalised as the shapes are, classes from subfolders, a hash split); the shape settings
(`data_seed`, `train_per_class`, `test_per_class`) are then unused. Without labels there is nothing
to probe: the run reports the objective on the held-out clouds instead (`probed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import image_sets
from ..data import points as shapes
from ..data.user_points import UserClouds, read_points
from ..errors import UnmaskError
from ..eval.probe import pooled_features
from ..nn.mae import MAEConfig, MaskedAutoencoder
from ..nn.point_groups import PointGroups
from ..nn.point_mae import PointEncoder
from ..nn.point_tokenizer import PointTokenizer
from ..nn.projection import VIEW_AXES, depth_views
from ..nn.view_features import view_targets
from ..objectives.i2p_mae import I2PMAE
from ..objectives.mae import MaskedAutoencoding
from ..objectives.point_bert import PointBERT
from ..objectives.point_cmae import PointCMAE
from ..objectives.point_mae import PointMAE
from ..train import TrainConfig
from .base import memo
from .probed import AutoencoderSettings, ProbedRecipe, ProbedSettings, ProbeSet
from .run import Run

VARIANTS = ("pointmae", "pointbert", "pointcmae", "i2pmae")
IMAGE = "image"  # the role (and sub-run) of I2P-MAE's 2D network
IMAGE_SET = "glyphs"  # what the 2D network is trained on: images that are not point clouds


@dataclass(frozen=True)
class Model(AutoencoderSettings):
    pointnet_width: int = option(16, lo=1, help="mini-PointNet width w (3 -> w -> 2w, 4w -> 4w -> dim)")


@dataclass(frozen=True)
class Data:
    source: str = option("", help="your clouds: a .npy array [N, P, 3], or a folder of .npy files [P, 3] (one "
                                  "class per subfolder); empty: shapes sampled at run time")
    labels: str = option("", help="a .npy of one label (integer or string) per cloud of a .npy array source")
    data_seed: int = option(0, lo=0, help="seed of the clouds: the same clouds for every variant and train.seed, "
                                          "so runs differ only in what they learn")
    train_per_class: int = option(250, lo=10, help="training clouds per shape")
    test_per_class: int = option(100, lo=1, help="held-out clouds per shape")
    points: int = option(1024, lo=16, help="points sampled on a shape's surface per cloud")
    groups: int = option(32, lo=2, help="groups per cloud (G), the encoder's tokens: farthest-point centres, "
                                        "each with its k nearest points")
    group_size: int = option(32, lo=2, help="points per group (k)")


@dataclass(frozen=True)
class Objective:
    variant: str = option("pointmae", choices=VARIANTS, help="objective")
    ratio: float = option(0.6, lo=0.05, hi=0.95, help="share of groups hidden (pointmae, pointcmae)")
    codes: int = option(64, lo=2, help="pointbert: tokenizer codebook size")
    contrast_weight: float = option(1.0, lo=0.0, help="pointcmae: weight of the co-hidden contrast")
    image_weight: float = option(1.0, lo=0.0, help="i2pmae: weight of the 2D-feature term on visible groups "
                                                   "(0: the 2D-guided mask alone)")
    guided: bool = option(True, help="i2pmae: visible groups drawn from softmax(2D saliency); false: uniformly")
    saliency_temperature: float = option(1.0, lo=0.0, lo_open=True,
                                         help="i2pmae: the guided mask's p = softmax(saliency / temperature)")


@dataclass(frozen=True)
class ImageModel:
    """I2P-MAE's 2D network: an MAE with a class token, trained on the glyphs before pre-training."""
    steps: int = option(300, lo=1, help="i2pmae: training steps of the 2D network")
    batch_size: int = option(64, lo=1, help="i2pmae: glyphs per step of the 2D network")
    size: int = option(32, lo=8, help="i2pmae: depth-map (and glyph) size in pixels")
    patch: int = option(4, lo=1, help="i2pmae: the 2D network's patch size")
    dim: int = option(64, lo=8, help="i2pmae: the 2D network's width (2D targets: 3 views x dim)")
    depth: int = option(2, lo=1, help="i2pmae: the 2D network's blocks")


@dataclass(frozen=True)
class Settings(ProbedSettings):
    train: TrainConfig = section(TrainConfig(steps=1000, batch_size=32, lr=1e-3, warmup=50))
    model: Model = section(Model())
    data: Data = section(Data())
    objective: Objective = section(Objective())
    image_model: ImageModel = section(ImageModel())


def user_clouds(data: Data) -> UserClouds:
    """The clouds of `data.source`, read once per process."""
    return memo(("user-points", data.source, data.labels, data.points),
                lambda: read_points(data.source, points=data.points, labels=data.labels))


def grouped_clouds(split: str, per_class: int, points: int, data_seed: int, groups: int, size: int,
                   user: Data | None = None):
    """(every cloud's groups: points Float[M, G, k, 3], centres Float[M, G, 3]; labels Long[M]): the
    sampled shapes, or the clouds of `user.source`."""
    from ..nn.point_groups import group_points

    if user is not None:
        clouds = user_clouds(user).part(split)
    else:
        clouds = shapes.load(split, per_class=per_class, points=points, seed=data_seed)
    parts = [group_points(chunk, groups, size) for chunk in clouds.points.split(256)]
    return PointGroups(torch.cat([p.points for p in parts]), torch.cat([p.centres for p in parts])), clouds.labels


class PointMAEShapes(ProbedRecipe):
    name = "pointmae-shapes"
    papers = ("P52", "P58", "P60", "P7")
    summary = ("Point-MAE / Point-BERT / Point-CMAE / I2P-MAE on clouds of 8 parametric shapes; linear / kNN "
               "probes vs random init")
    Settings = Settings
    roles = ("main", IMAGE)

    @property
    def tasks(self) -> dict[str, str]:
        d = self.settings.data
        if d.source:
            return {"": f"which class of `{d.source}` ({len(user_clouds(d).classes)} classes)"}
        return {"": f"which shape ({len(shapes.SHAPES)} classes)"}

    def check(self) -> None:
        d = self.settings.data
        if d.group_size > d.points or d.groups > d.points:
            raise UnmaskError(f"data.groups={d.groups} and data.group_size={d.group_size} must not exceed "
                              f"data.points={d.points}")
        m = self.settings.image_model
        if m.size % m.patch:
            raise UnmaskError(f"image_model.size={m.size} is not divisible by image_model.patch={m.patch}")

    def model_config(self) -> MAEConfig:
        hide = "replace" if self.settings.objective.variant == "pointbert" else "drop"
        return self.settings.model.mae_config(image_size=(self.settings.data.groups,), patch=1, channels=3, hide=hide)

    def image_config(self) -> MAEConfig:
        """I2P-MAE's 2D network: one-channel images of the depth maps' size, with a class token."""
        m = self.settings.image_model
        return MAEConfig(image_size=(m.size, m.size), channels=1, patch=m.patch, dim=m.dim, depth=m.depth, heads=4,
                         decoder_dim=32, decoder_depth=1, decoder_heads=4, cls_token=True)

    def build_role(self, role: str):
        if role == IMAGE:
            return MaskedAutoencoding(MaskedAutoencoder(self.image_config()), ratio=0.75)
        return super().build_role(role)

    def build(self):
        """The objective of `objective.variant` (Point-BERT's codebook is fitted by `prepare`)."""
        o = self.settings.objective
        encoder = PointEncoder(self.model_config(), self.settings.data.group_size, self.settings.model.pointnet_width)
        if o.variant == "i2pmae":
            return I2PMAE(encoder, len(VIEW_AXES) * self.settings.image_model.dim, ratio=o.ratio,
                          image_weight=o.image_weight, temperature=o.saliency_temperature, guided=o.guided)
        if o.variant == "pointbert":
            return PointBERT(encoder, PointTokenizer(o.codes))
        if o.variant == "pointcmae":
            return PointCMAE(encoder, ratio=o.ratio, weight=o.contrast_weight)
        return PointMAE(encoder, ratio=o.ratio)

    def grouped(self, split: str) -> tuple[PointGroups, torch.Tensor]:
        """The clouds of a split, grouped: (PointGroups of M clouds, labels Long[M])."""
        d = self.settings.data
        per_class = d.train_per_class if split == "train" else d.test_per_class
        args = (split, per_class, d.points, d.data_seed, d.groups, d.group_size, d if d.source else None)
        return memo(("point-groups", *args), lambda: grouped_clouds(*args))

    def clouds(self, split: str) -> torch.Tensor:
        """Float[M, N, 3]: the clouds of a split, in the order of `grouped(split)`."""
        d = self.settings.data
        if d.source:
            return user_clouds(d).part(split).points
        per_class = d.train_per_class if split == "train" else d.test_per_class
        return memo(("point-clouds", split, per_class, d.points, d.data_seed),
                    lambda: shapes.load(split, per_class=per_class, points=d.points, seed=d.data_seed).points)

    def image_encoder(self, run: Run):
        """I2P-MAE's 2D network, trained (or resumed, or loaded) in `RUN/image` on the training glyphs,
        seeded by `train.seed`; its encoder, in eval mode."""
        m = self.settings.image_model
        glyphs = image_sets.load(IMAGE_SET, "train", m.size).images.float() / 255  # [M, 1, S, S]
        train = TrainConfig(steps=m.steps, batch_size=m.batch_size, lr=1e-3, warmup=min(20, m.steps),
                            seed=self.settings.train.seed)
        trained = self.fit(run.sub(IMAGE), self.objective(IMAGE), {"images": glyphs}, role=IMAGE, train=train)
        return trained.model.encoder.eval()

    def image_targets(self, encoder, split: str) -> dict:
        """{"saliency": Float[M, G], "image_features": Float[M, G, 3 * dim]} of every cloud of a split:
        the 2D network's class-token attention and features on its depth views, at the group centres."""
        groups, _ = self.grouped(split)
        clouds, size = self.clouds(split), self.settings.image_model.size
        parts = [view_targets(encoder, depth_views(c, size), g)
                 for c, g in zip(clouds.split(256), groups.centres.split(256), strict=True)]
        return {"saliency": torch.cat([p.saliency for p in parts]),
                "image_features": torch.cat([p.features for p in parts])}

    def labelled(self) -> bool:
        return not self.settings.data.source or user_clouds(self.settings.data).labelled

    def training_data(self, run: Run) -> dict:
        if self.settings.data.source:
            run.write_json("data.json", user_clouds(self.settings.data).to_dict())
        groups, _ = self.grouped("train")
        data = {"groups": groups.points, "centres": groups.centres}
        if self.settings.objective.variant == "i2pmae":  # the 2D network first, then its view of every cloud
            data.update(self.image_targets(self.image_encoder(run), "train"))
        return data

    def heldout_batch(self) -> dict:
        if self.settings.objective.variant == "i2pmae":
            raise UnmaskError("i2pmae on clouds without labels: the held-out loss needs the 2D network's targets, "
                              "which are not kept; use a labelled source or another variant")
        groups, _ = self.grouped("test")
        return {"groups": groups.points, "centres": groups.centres}

    def prepare(self, run: Run, objective, data: dict) -> None:
        if self.settings.objective.variant == "pointbert":  # the codebook comes from the training groups
            objective.tokenizer.fit(data["groups"], generator=torch.Generator().manual_seed(self.settings.train.seed))

    def probe_set(self, split: str) -> ProbeSet:
        groups, labels = self.grouped(split)
        return ProbeSet(groups, {"": labels})

    def pooled(self, features, inputs: PointGroups) -> torch.Tensor:
        return pooled_features(lambda idx: features(PointGroups(inputs.points[idx], inputs.centres[idx])),
                               torch.arange(len(inputs.points)), batch=self.probe_batch)

    def details(self) -> str:
        d = self.settings.data
        size = f"{d.groups} groups x {d.group_size} points of {d.points}-point clouds."
        if d.source:
            return (f"{size} Clouds: `{d.source}`, resampled and normalised; held-out split by hash of the path "
                    f"({int(user_clouds(d).held_out.sum())} clouds).")
        return f"{size} Held-out split ({d.test_per_class * len(shapes.SHAPES)} clouds of {len(shapes.SHAPES)} shapes)."

    @torch.no_grad()
    def sample(self, run: Run, objective, n: int, out: Path) -> Path:
        """Reconstructions of n held-out clouds (visible groups / with the predicted hidden groups /
        truth), drawn into a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not isinstance(objective, PointMAE):
            raise UnmaskError(f"sample draws point reconstructions; variant {self.settings.objective.variant!r} "
                              "does not make them")
        groups, _ = self.grouped("test")
        idx = torch.linspace(0, len(groups.points) - 1, n).long()  # spread over the shapes
        g = PointGroups(groups.points[idx], groups.centres[idx])
        context = {}
        if isinstance(objective, I2PMAE):  # the guided mask reads the 2D saliency of these clouds
            context = {"saliency": self.image_targets(self.load(run.sub(IMAGE), IMAGE).model.encoder.eval(),
                                                      "test")["saliency"][idx]}
        mask = objective.draw_mask(n, torch.Generator().manual_seed(self.settings.train.seed), **context)
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
        out = self.sample_path(out)
        fig.savefig(out, dpi=80)
        plt.close(fig)
        return out
