"""What every recipe is: a `Recipe` holds typed, nested settings and binds data, objective,
evaluation and sampling; the loop around them (seeded weights, training with the one Trainer,
writing metrics and the report, loading a trained run) is written here once.

A recipe file declares its `Settings` (sections `train`, `model`, `data`, `sampler`, `eval`, and its
own, each a frozen dataclass of `option`s) and writes only what makes it that recipe:

    build()                       -> the objective (an nn.Module that owns the networks)
    model_config()                -> what identifies the network (checked when a run is loaded)
    training_data(run)            -> {name: Tensor[M, ...]}, the rows the trainer draws batches from
    measure(run, objective)       -> {metric: value}, figures written into the run folder
    report(metrics)               -> the `Report` (metric rows with baselines, figures, set-up)
    sample(run, objective, n, out)-> the file written (suffix `sample_suffix`); a recipe with
                                     `takes_prompt` also takes `prompt=` (`unmask sample --prompt`)

Settings on the command line are dotted keys (`train.steps=100 model.dim=64 sampler.name=ancestral`);
`unmask recipes NAME` prints the tree with defaults, ranges and help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple, TypeVar

import torch
from torch import nn

from ..config import apply_overrides, from_dict, option, to_dict, validate
from ..errors import UnmaskError
from ..sampling.named import NAMES, named_sampler
from ..seeding import seeded
from ..train import TrainConfig, board, fit
from ..train.lock import hold
from .memory import check_fits
from .report import Report, all_metrics
from .run import Run

T = TypeVar("T")


@dataclass(frozen=True)
class TransformerSettings:
    """The network's size; a recipe's `model` section extends it."""
    dim: int = option(128, lo=8, help="Transformer width")
    depth: int = option(4, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")


@dataclass(frozen=True)
class SamplerSettings:
    """A sampler by name (MaskGIT's confidence order, MDLM's ancestral steps, first-hitting)."""
    name: str = option("maskgit", choices=NAMES, help="sampler used by eval and sample")
    steps: int = option(12, lo=1, help="MaskGIT / ancestral steps (first-hitting takes one per token)")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature")
    choice_temperature: float = option(1.0, lo=0.0, help="MaskGIT choice noise")

    def build(self):
        return named_sampler(self.name, self.steps, self.temperature, self.choice_temperature)


@dataclass(frozen=True)
class NoSettings:
    """A section a recipe does not use."""


class Recipe:
    name: ClassVar[str]
    papers: ClassVar[tuple[str, ...]]
    summary: ClassVar[str]
    Settings: ClassVar[type]
    sample_suffix: ClassVar[str] = ".png"
    takes_prompt: ClassVar[bool] = False  # whether `sample` draws for a text prompt (`unmask sample --prompt`)
    roles: ClassVar[tuple[str, ...]] = ("main",)
    # flat keys of older runs -> dotted keys, where the names differ (the rest keep their names)
    upgrades: ClassVar[dict[str, str]] = {"sampler": "sampler.name", "sampler_steps": "sampler.steps"}

    def __init__(self, settings=None):
        self.settings = self.Settings() if settings is None else settings
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"{self.name} takes {self.Settings.__name__}, got {type(self.settings).__name__}")
        validate(self.settings)
        self.check()
        check_fits(self.settings, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"

    # what each recipe writes ---------------------------------------------------------------
    def check(self) -> None:
        """Refuse settings that are each allowed but do not go together (an UnmaskError)."""

    def build(self) -> nn.Module:
        raise NotImplementedError

    def build_role(self, role: str) -> nn.Module:
        """The objective of a model trained beside the main one (a baseline in `RUN/ar`); the main
        one is `build()`. A recipe with such models names them in `roles` and overrides this."""
        if role != "main":
            raise UnmaskError(f"recipe {self.name!r} trains no {role!r} model (roles: {', '.join(self.roles)})")
        return self.build()

    def model_config(self):
        raise NotImplementedError

    def training_data(self, run: Run) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prepare(self, run: Run, objective: nn.Module, data: dict) -> None:
        """Before training: what the objective needs beyond its seeded weights (a teacher, a codebook)."""

    def measure(self, run: Run, objective: nn.Module) -> dict:
        raise NotImplementedError

    def report(self, metrics: dict) -> Report:
        return Report(f"{self.name}", self.setup(), (all_metrics(metrics),))

    def sample(self, run: Run, objective: nn.Module, n: int, out: Path, prompt: str | None = None) -> Path:
        raise UnmaskError(f"recipe {self.name!r} does not sample")

    # shared --------------------------------------------------------------------------------
    def sample_path(self, out: Path) -> Path:
        """Where `sample` writes: `out` with the recipe's suffix, its folder made."""
        out = Path(out).with_suffix(self.sample_suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def with_overrides(self, overrides: list[str], sections: tuple[str, ...] | None = None) -> Recipe:
        """The same recipe with dotted `key=value` changes (only under `sections`, if given)."""
        return type(self)(apply_overrides(self.settings, overrides, sections))

    def setup(self) -> str:
        """One sentence on the budget and size, for reports."""
        t, s = self.settings.train, self.settings
        size = getattr(s, "model", None)
        shape = ""
        if isinstance(size, TransformerSettings):
            shape = f", width {size.dim}, depth {size.depth}"
        done = getattr(self, "trained_steps", None)
        steps = f"{t.steps}" if done in (None, t.steps) else f"{done} of {t.steps} (stopped early)"
        return (f"Recipe `{self.name}` ({', '.join(self.papers)}): {steps} steps of {t.batch_size} examples"
                f"{shape}, seed {t.seed}.")

    def objective(self, role: str = "main") -> nn.Module:
        """The objective with its initial weights drawn from the seed, leaving global RNG state as it was."""
        with seeded(self.settings.train.seed):
            return self.build_role(role)

    def model_dict(self) -> dict:
        config = self.model_config()
        return config.to_dict() if hasattr(config, "to_dict") else to_dict(config)

    def run_config(self, role: str = "main") -> dict:
        """What a checkpoint's config.json records: the recipe, its settings and the model."""
        return {"recipe": self.name, "role": role, "settings": to_dict(self.settings), "model": self.model_dict()}

    def fit(self, run: Run, objective: nn.Module, data: dict, role: str = "main",
            train: TrainConfig | None = None) -> nn.Module:
        """Train `objective` on `data` in `run` with the one Trainer (resuming what is there)."""
        return fit(objective, data, train or self.settings.train, run.folder, self.run_config(role), run.progress,
                   run.changes)

    def train(self, run: Run) -> dict:
        """Train, then evaluate. Under torchrun only rank 0 returns from `fit` and evaluates."""
        objective, data = self.objective(), self.training_data(run)
        self.prepare(run, objective, data)
        return self.evaluate(run, self.fit(run, objective, data))

    def evaluate(self, run: Run, objective: nn.Module) -> dict:
        """Measure, then write metrics.json and report.md into the run (and TensorBoard events with
        `train.log=tensorboard`). The report gives the steps the evaluated checkpoint was trained for."""
        objective.eval()
        with hold(run.folder):
            metrics = self.measure(run, objective)
            self.trained_steps = run.trained_step()
            report = self.report(metrics)
            run.write_results(metrics, report)
            if self.settings.train.log == "tensorboard":
                board.write_results(run.folder, self.trained_steps or 0, metrics, report.figures)
        return metrics

    def load(self, run: Run, role: str = "main") -> nn.Module:
        """The objective with the weights to evaluate (EMA ones when kept) of `run`'s newest checkpoint."""
        from ..train.checkpoint import find_checkpoint, load_checkpoint

        ckpt = find_checkpoint(run.folder)
        tensors, config, _ = load_checkpoint(ckpt)
        return self.restore(ckpt, tensors, config, role)

    def restore(self, ckpt: Path, tensors: dict, config: dict, role: str = "main") -> nn.Module:
        """The objective with the weights of a loaded checkpoint, once its recipe and model are checked."""
        if config.get("recipe") != self.name or config.get("role", "main") != role:
            raise UnmaskError(f"{ckpt} holds {config.get('recipe')!r} ({config.get('role', 'main')}), "
                              f"not {self.name!r} ({role})")
        if config.get("model") != self.model_dict():
            raise UnmaskError(f"{ckpt} holds a model that recipe {self.name!r} does not build from these settings")
        objective = self.objective(role)
        try:
            objective.load_state_dict(tensors.get("ema", tensors["model"]))
        except RuntimeError as e:
            raise UnmaskError(f"weights in {ckpt} do not fit the model: {str(e).splitlines()[0]}") from None
        return objective.eval()

    @classmethod
    def settings_from(cls, config: dict, where: Path):
        """The settings recorded in a checkpoint's config.json; older runs' flat settings are upgraded."""
        if "settings" in config:
            return from_dict(cls.Settings, config["settings"], "")
        if "config" not in config:
            raise UnmaskError(f"{where}/config.json records no settings")
        return from_dict(cls.Settings, upgrade_flat(cls, config["config"], where), "")


_MEMO: dict[tuple, object] = {}


def memo(key: tuple, make: Callable[[], T]) -> T:
    """The one in-process cache of what recipes load (corpora, tokenised data): `make()` once per
    `key`, which must name everything the result depends on (settings, a tokenizer's digest)."""
    if key not in _MEMO:
        _MEMO[key] = make()
    return _MEMO[key]


class Loaded(NamedTuple):
    recipe: Recipe
    objective: nn.Module
    run: Run


def upgrade_flat(cls: type[Recipe], flat: dict, where: Path) -> dict:
    """Nest the flat settings of a run written before settings had sections: each key goes to the
    one dotted key whose last part is its name (or to `cls.upgrades[key]`). Logged as a warning."""
    import warnings

    from ..config import keys

    known = keys(cls.Settings())
    nested: dict = {}
    for key, value in flat.items():
        leaves = [k for k in known if k.rsplit(".", 1)[-1] == key]  # sections in order: train first
        target = cls.upgrades.get(key) or (leaves[0] if leaves else None)
        if target is None:
            raise UnmaskError(f"{where}/config.json: setting {key!r} of an older run has no place in "
                              f"recipe {cls.name!r} now")
        *path, leaf = target.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    warnings.warn(f"{where}: settings of an older run upgraded to sections", stacklevel=2)
    return nested

