"""Recipe `ett`: end-to-end vision tokenizer tuning (ETT, Wang et al. 2025, arXiv:2505.10562;
`objectives/ett.py`) on the glyphs (`data/image_sets.py`: 111 characters x 12 DejaVu faces, held-out
faces per character), with glyph classification from tokens as the downstream task.

A VQ tokenizer (van den Oord et al. 2017, arXiv:1711.00937) is trained first on the training glyphs
(`RUN/tokenizer`, `recipes/image_tokens.py`). From it, with the same classifier weights, two models
train for `train.steps` steps each on the same batches:

- frozen (`RUN/frozen`): the tokenizer fixed, the classifier reads its code embeddings;
- ETT (the main run): tokenizer and classifier trained together, loss = cross-entropy +
  `ett.recon_weight` x the tokenizer's own loss (reconstruction MSE + VQ codebook/commitment).

Evaluation gives, for both, the held-out accuracy and the held-out reconstruction MSE of the tokenizer
they end with (the frozen one's is the starting tokenizer's).

Classification rather than masked token prediction: with tokens as the target, tuning the tokenizer
for the downstream loss can make the task easier by making the tokens predictable (fewer codes in use)
without making them better, and the two runs would be scored on different token sets; a label is a
target the tokenizer cannot move. The defaults (tokenizer 600 steps, then 400 steps per classifier)
took 12 to 20 wall-minutes on one thread of a busy 2-core machine; docs/papers.md has the figures.

    unmask train ett --out runs/ett
    unmask train ett train.seed=1 --out runs/ett-1
    unmask sample runs/ett --n 16            # held-out glyphs, frozen and ETT reconstructions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import image_sets
from ..eval.tokenizer import measure_tokenizer
from ..objectives.ett import TokenClassifier, TokenizerTuning
from ..train import TrainConfig
from .base import Recipe, TransformerSettings
from .image_tokens import ROLE, TokenizerSettings, tokenizer_objective, train_tokenizer
from .report import Metric, Report, Table
from .run import Run

FROZEN = "frozen"
SET = "glyphs"


@dataclass(frozen=True)
class Ett:
    recon_weight: float = option(1.0, lo=0.0, help="w: weight of the tokenizer's reconstruction loss in ETT")
    frozen: bool = option(True, help="also train the frozen-tokenizer baseline (RUN/frozen)")


@dataclass(frozen=True)
class Eval:
    batch_size: int = option(256, lo=1, help="held-out images per forward pass")


@dataclass(frozen=True)
class ClassifierModel:
    """What identifies the network of a run: the tokenizer's config and the classifier's size."""
    tokenizer: dict
    dim: int
    depth: int
    heads: int
    classes: int


@dataclass(frozen=True)
class Settings:
    train: TrainConfig = section(TrainConfig(steps=400, batch_size=64, lr=1e-3, warmup=20, log_every=50),
                                 help="each classifier's training (ETT and frozen); the tokenizer's is `tokenizer`")
    model: TransformerSettings = section(TransformerSettings(dim=64, depth=2, heads=4))
    tokenizer: TokenizerSettings = section(TokenizerSettings(quantizer="vq", codes=64, code_dim=8, width=32,
                                                             steps=600), help="the VQ tokenizer trained first")
    ett: Ett = section(Ett())
    eval: Eval = section(Eval())


class ETT(Recipe):
    name = "ett"
    papers = ("P53",)
    summary = "end-to-end tokenizer tuning: glyph classification from VQ code embeddings, frozen vs tuned tokenizer"
    Settings = Settings
    roles = ("main", FROZEN, ROLE)

    def glyphs(self, split: str) -> image_sets.ImageSet:
        return image_sets.load(SET, split)

    def model_config(self) -> ClassifierModel:
        m, t = self.settings.model, self.settings.tokenizer
        return ClassifierModel(t.config(32, 1).to_dict(), m.dim, m.depth, m.heads, len(self.glyphs("train").classes))

    def build_role(self, role: str):
        if role == ROLE:
            return tokenizer_objective(self.settings.tokenizer, 32, 1)
        if role not in ("main", FROZEN):
            return super().build_role(role)
        m = self.settings.model
        tokenizer = tokenizer_objective(self.settings.tokenizer, 32, 1).tokenizer
        h, w = tokenizer.grid
        classifier = TokenClassifier(tokenizer.config.embed_dim, h * w, len(self.glyphs("train").classes),
                                     m.dim, m.depth, m.heads)
        return TokenizerTuning(tokenizer, classifier, self.settings.ett.recon_weight, tune=role == "main")

    def build(self) -> TokenizerTuning:
        return self.build_role("main")

    def training_data(self, run: Run) -> dict:
        g = self.glyphs("train")
        return {"images": g.images, "labels": g.labels}

    def prepare(self, run: Run, objective: TokenizerTuning, data: dict) -> None:
        """Both models start from the trained tokenizer."""
        tokenizer = train_tokenizer(self, run, data["images"])
        objective.tokenizer.load_state_dict(tokenizer.state_dict())

    def train(self, run: Run) -> dict:
        data = self.training_data(run)
        if self.settings.ett.frozen:
            frozen = self.objective(FROZEN)
            self.prepare(run, frozen, data)
            self.fit(run.sub(FROZEN), frozen, data, role=FROZEN)
        objective = self.objective()
        self.prepare(run, objective, data)
        return self.evaluate(run, self.fit(run, objective, data))

    def scores(self, objective: TokenizerTuning, test: image_sets.ImageSet) -> dict:
        """Held-out accuracy and the tokenizer's held-out reconstruction error."""
        objective.eval()
        with torch.inference_mode():
            predicted = torch.cat([objective.logits(chunk).argmax(-1).cpu()
                                   for chunk in test.images.split(self.settings.eval.batch_size)])
        return {"accuracy": (predicted == test.labels).float().mean().item(),
                "mse": measure_tokenizer(objective.tokenizer, test.images)["mse"]}

    def measure(self, run: Run, objective: TokenizerTuning) -> dict:
        test = self.glyphs("test")
        metrics: dict = {"train_images": len(self.glyphs("train")), "test_images": len(test),
                         "classes": len(test.classes)}
        metrics.update({f"{k}_ett": v for k, v in self.scores(objective, test).items()})
        if run.sub(FROZEN).trained_step() is not None:
            frozen = self.load(run.sub(FROZEN), FROZEN)
            metrics.update({f"{k}_frozen": v for k, v in self.scores(frozen, test).items()})
        return metrics

    def report(self, metrics: dict) -> Report:
        rows = (Metric("accuracy_ett", "held-out accuracy, ETT", "accuracy_frozen", "higher"),
                Metric("accuracy_frozen", "held-out accuracy, frozen tokenizer"),
                Metric("mse_ett", "held-out reconstruction MSE, ETT tokenizer", "mse_frozen", "lower"),
                Metric("mse_frozen", "held-out reconstruction MSE, frozen (starting) tokenizer"))
        t = self.settings.tokenizer
        text = (f"{metrics.get('test_images')} held-out glyphs of {metrics.get('classes')} characters; VQ tokenizer "
                f"of {t.codes} codes trained {t.steps} steps first; w = {self.settings.ett.recon_weight}.")
        return Report("ett", self.setup(), (Table(rows, "Frozen vs end-to-end tuned tokenizer", text),))

    def sample(self, run: Run, objective: TokenizerTuning, n: int, out: Path) -> Path:
        """A PNG: held-out glyphs (first row), the frozen tokenizer's reconstructions (when trained), the
        ETT tokenizer's."""
        from ..data.image_sets import save_grid

        images = self.glyphs("test").images[:n]
        rows = [images]
        tokenizers = [objective.tokenizer]
        if run.sub(FROZEN).trained_step() is not None:
            tokenizers.insert(0, self.load(run.sub(FROZEN), FROZEN).tokenizer)
        with torch.inference_mode():
            for tokenizer in tokenizers:
                recon = tokenizer.eval().decode(tokenizer.encode(images)).cpu()
                rows.append((recon.clamp(0, 1) * 255).round().to(torch.uint8))
        path = self.sample_path(out)
        save_grid(torch.cat(rows), path, columns=len(images))
        return path
