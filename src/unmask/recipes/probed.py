"""What the masked-autoencoder recipes share: pretrain an encoder, then probe its frozen features
against the same encoder at random initialisation and, where the inputs are small enough to be
features themselves, the raw inputs.

Probes (`eval/probe.py`): logistic regression on standardised mean-pooled features (MAE's linear
probe, He et al. 2022, arXiv:2111.06377) and DINO's weighted kNN vote (Caron et al. 2021,
arXiv:2104.14294), each with all training labels and with `SHOTS` labels per class (mean and spread
over `eval.probe_draws` draws), scored on the held-out split. Metric keys are
`{features}{task}_{score}`: features `pretrained_` (or the recipe's `trained_prefix`),
`random_init_`, `pixels_`; task empty when a recipe probes one label; score `linear`, `linear_few`,
`knn`, `knn_few` (the few-shot ones with a `_std`); and per task `{task}_few_shot_gain_over_random_init`.

A recipe of this family declares its `Settings` as a `ProbedSettings` with an `objective.variant`
(its default is the plain objective whose freshly seeded encoder is the random-init baseline), and
writes `probe_set(split)` (the inputs and labels of each task) and `details()` (a sentence for the
report) besides what every `Recipe` writes.

A user's data (`data.source`) may have no labels (no class subfolders, or a single class). There is
nothing to probe then: `labelled()` says so, the probes are left out, and evaluation reports
`heldout_loss`, the training objective on the held-out examples (`heldout_batch()`, masks drawn from
`train.seed`), with a note in the report saying why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..config import option, section
from ..eval.probe import pooled_features, probe
from ..nn.mae import MAEConfig
from ..train import TrainConfig
from .base import NoSettings, Recipe, TransformerSettings
from .report import Metric, Report, Table
from .run import Run

SHOTS = 10  # labels per class of the few-shot probes
SCORES = (("linear", "linear, all labels"), ("linear_few", f"linear, {SHOTS}-shot"),
          ("knn", "kNN, all labels"), ("knn_few", f"kNN, {SHOTS}-shot"))
RANDOM_INIT, RAW = "random_init_", "pixels_"  # metric prefixes of the two baselines


@dataclass(frozen=True)
class AutoencoderSettings(TransformerSettings):
    """An encoder (the `TransformerSettings`) and the decoder that pretrains it."""
    decoder_dim: int = option(64, lo=8, help="decoder width")
    decoder_depth: int = option(2, lo=1, help="decoder blocks")

    def mae_config(self, **shape) -> MAEConfig:
        """The network of these sizes; `shape` gives the input (image_size, channels, patch, ...)."""
        return MAEConfig(dim=self.dim, depth=self.depth, heads=self.heads, decoder_dim=self.decoder_dim,
                         decoder_depth=self.decoder_depth, decoder_heads=4, cls_token=False, **shape)


@dataclass(frozen=True)
class ProbeSettings:
    """The family's `eval` section: how the frozen features are probed."""
    probe_draws: int = option(5, lo=1, help="few-shot draws averaged by eval")
    baselines: bool = option(True, help="also probe the same encoder at random init (and the raw inputs)")


@dataclass(frozen=True)
class ProbedSettings:
    """The sections of every recipe of the family, in order. A recipe's `Settings` extends it: it
    gives `train` and `model` their defaults and declares its `objective` (with `variant`) and,
    where it has settings of its data, `data`; `eval` is the family's."""
    train: TrainConfig = section(TrainConfig())
    model: AutoencoderSettings = section(AutoencoderSettings())
    data: NoSettings = section(NoSettings())
    objective: NoSettings = section(NoSettings())
    eval: ProbeSettings = section(ProbeSettings())


class ProbeSet(NamedTuple):
    inputs: object                     # what `pooled` reads: a Tensor [M, ...] or the recipe's own batch
    labels: dict[str, torch.Tensor]    # task -> Long[M]


def task_prefix(task: str) -> str:
    return f"{task}_" if task else ""


class ProbedRecipe(Recipe):
    trained_prefix: ClassVar[str] = "pretrained_"   # metric keys of the trained encoder's probes
    tasks: ClassVar[dict[str, str]] = {"": ""}      # task -> what it asks; "" one task, unprefixed keys
    raw_inputs: ClassVar[str] = ""                  # label of the raw-input baseline (`RAW`); "": none
    probe_batch: ClassVar[int] = 256                # inputs per forward pass of the probes

    # what each recipe of the family writes ------------------------------------------------------
    def probe_set(self, split: str) -> ProbeSet:
        """The inputs and labels probed ('train': fitted on, 'test': scored on)."""
        raise NotImplementedError

    def details(self) -> str:
        """A sentence for the report: the recipe's own settings and its held-out set."""
        return ""

    def labelled(self) -> bool:
        """Whether there are labels to probe (the embedded data always have them)."""
        return True

    def heldout_batch(self) -> dict[str, torch.Tensor]:
        """The held-out examples as one training batch: what `heldout_loss` scores without labels."""
        raise NotImplementedError

    def pooled(self, features, inputs) -> torch.Tensor:
        """Float[M, D]: `features(batch) -> Float[b, L, D]` mean-pooled over tokens."""
        return pooled_features(features, inputs, batch=self.probe_batch)

    # shared -------------------------------------------------------------------------------------
    def plain(self) -> ProbedRecipe:
        """This recipe with the plain objective (the default `objective.variant`): its freshly seeded
        encoder is the random-init baseline."""
        o = self.settings.objective
        plain = dataclasses.replace(o, variant=type(o)().variant)
        return self if plain == o else type(self)(dataclasses.replace(self.settings, objective=plain))

    def probe_scores(self, features, prefix: str) -> dict[str, float]:
        """Every task's probe scores of `features(batch) -> Float[b, L, D]`, keys `{prefix}{task}_{score}`."""
        train, test = self.probe_set("train"), self.probe_set("test")
        train_x, test_x = self.pooled(features, train.inputs), self.pooled(features, test.inputs)
        out = {}
        for task in self.tasks:
            scores = probe(train_x, train.labels[task], test_x, test.labels[task], shots=SHOTS,
                           draws=self.settings.eval.probe_draws, seed=self.settings.train.seed)
            out.update(scores.as_dict(prefix + task_prefix(task)))
        return out

    @torch.no_grad()
    def heldout_loss(self, objective: nn.Module) -> float:
        """The objective's loss on the held-out examples, `probe_batch` at a time, weighted by size."""
        g = torch.Generator().manual_seed(self.settings.train.seed)
        batch = self.heldout_batch()
        n = len(next(iter(batch.values())))
        total = 0.0
        for start in range(0, n, self.probe_batch):
            chunk = {k: v[start : start + self.probe_batch] for k, v in batch.items()}
            total += float(objective(chunk, g).loss) * len(next(iter(chunk.values())))
        return total / n

    def measure(self, run: Run, objective: nn.Module) -> dict:
        if not self.labelled():
            return {"heldout_loss": self.heldout_loss(objective)}
        metrics = self.probe_scores(objective.features, self.trained_prefix)
        if not self.settings.eval.baselines:
            return metrics
        metrics.update(self.probe_scores(self.plain().objective().eval().features, RANDOM_INIT))
        if self.raw_inputs:  # each input flattened into one token
            metrics.update(self.probe_scores(lambda x: x.flatten(1).unsqueeze(1), RAW))
        for task in self.tasks:
            t = task_prefix(task)
            metrics[f"{t}few_shot_gain_over_random_init"] = (metrics[f"{self.trained_prefix}{t}linear_few"]
                                                             - metrics[f"{RANDOM_INIT}{t}linear_few"])
        return metrics

    def probe_rows(self, task: str) -> tuple[Metric, ...]:
        """The rows of one task: the trained encoder's scores (against random init), then the baselines'."""
        t = task_prefix(task)
        features = [(self.trained_prefix, f"{self.settings.objective.variant}, pretrained"),
                    (RANDOM_INIT, "same encoder, random init")]
        if self.raw_inputs:
            features.append((RAW, self.raw_inputs))
        rows = []
        for prefix, label in features:
            for score, what in SCORES:
                key = f"{prefix}{t}{score}"
                base = f"{RANDOM_INIT}{t}{score}" if prefix == self.trained_prefix else None
                rows.append(Metric(key, f"{label}: {what}", base, "higher" if base else "",
                                   f"{key}_std" if score.endswith("_few") else None))
        gain = Metric(f"{t}few_shot_gain_over_random_init", f"{SHOTS}-shot linear, pretrained - random init",
                      0.0, "higher")
        return (*rows, gain)

    def report(self, metrics: dict) -> Report:
        s = self.settings
        setup = (f"{self.setup()} {self.details()} Few-shot = {SHOTS} labels per class, mean +- std over "
                 f"{s.eval.probe_draws} draws.")
        if "heldout_loss" in metrics:
            loss = Table((Metric("heldout_loss", "training objective on the held-out examples", better="lower"),))
            note = ("The data carry no labels (no class subfolders, or a single class), so there is nothing to "
                    "probe: the probes and their baselines are left out, and the table gives the training "
                    "objective on the held-out examples instead.")
            return Report(f"{self.name}: {s.objective.variant} on data without labels", setup, (loss,), notes=(note,))
        tables = tuple(Table(self.probe_rows(task), f"Task: {what}") for task, what in self.tasks.items())
        return Report(f"{self.name}: probes of frozen {s.objective.variant} features", setup, tables)
