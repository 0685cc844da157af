"""Recipe `digits`: one masked model over label + pixel tokens that both understands and generates
(the any-to-any idea of 4M, Mizrahi et al. 2023, P59, at the scale of 8x8 digits).

Training hides a schedule-drawn share of each segment independently (so the label is sometimes the
only thing hidden, sometimes the only thing shown), with MaskGIT's cosine schedule. The same weights
then predict the label from the pixels, draw class-conditional digits, and inpaint.

    unmask train digits --out runs/digits            # train, then evaluate
    unmask eval runs/digits                          # metrics.json, figures, report.md again
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import option
from ..data import digits
from ..eval.digits import evaluate as evaluate_digits
from ..eval.figures import digit_grid
from ..masking import RandomMask
from ..nn import MaskedTokenModel, ModelConfig
from ..objectives import MaskedTokenModeling
from ..sampling.named import NAMES, named_sampler
from ..schedules import SCHEDULES, Schedule
from ..seeding import seeded
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

NAME = "digits"
PAPERS = ("P59",)
SUMMARY = "label + pixel tokens of 8x8 digits: one model classifies, generates and inpaints"
SAMPLERS = NAMES


@dataclass(frozen=True)
class Config:
    steps: int = option(1800, lo=1, help="training steps")
    batch_size: int = option(64, lo=1, help="examples per step")
    lr: float = option(2e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(100, lo=0, help="warmup steps")
    ema: float = option(0.0, lo=0.0, hi=1.0, help="EMA decay of the weights; 0: off")
    seed: int = option(0, lo=0, help="seed of every random draw")
    dim: int = option(128, lo=8, help="Transformer width")
    depth: int = option(4, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")
    label_weight: float = option(0.25, lo=0.0, hi=1.0, help="share of the loss on the label segment")
    schedule: str = option("linear", choices=SCHEDULES, help="training mask-ratio schedule")
    sampler: str = option("maskgit", choices=SAMPLERS, help="sampler used by eval")
    sampler_steps: int = option(12, lo=1, help="MaskGIT / ancestral steps")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature")
    choice_temperature: float = option(2.0, lo=0.0, help="MaskGIT choice noise")
    n_samples: int = option(500, lo=10, help="class-conditional samples drawn by eval")
    checkpoint_every: int = option(600, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           ema=self.ema, seed=self.seed, checkpoint_every=self.checkpoint_every)

    def model_config(self) -> ModelConfig:
        return ModelConfig(digits.VOCAB_SIZE, digits.LAYOUT, dim=self.dim, depth=self.depth,
                           heads=self.heads, segment_vocab=digits.SEGMENT_VOCAB)

    def sampler_object(self):
        return named_sampler(self.sampler, self.sampler_steps, self.temperature, self.choice_temperature)


def build(cfg: Config) -> MaskedTokenModeling:
    with seeded(cfg.seed):
        model = MaskedTokenModel(cfg.model_config())
    weights = {"label": cfg.label_weight, "pixels": 1.0 - cfg.label_weight}
    return MaskedTokenModeling(model, RandomMask(), Schedule(cfg.schedule), per_segment=True, segment_weights=weights)


def run_config(cfg: Config) -> dict:
    return {"recipe": NAME, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def train(cfg: Config, run_dir: Path, progress: bool = True) -> dict:
    objective = build(cfg)
    data = {"tokens": digits.load("train").tokens}
    return evaluate(cfg, fit(objective, data, cfg.train_config(), run_dir, run_config(cfg), progress), run_dir)


def evaluate(cfg: Config, objective: MaskedTokenModeling, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    metrics, images, filled, truth = evaluate_digits(objective.model, cfg.sampler_object(),
                                                     n_samples=cfg.n_samples, seed=cfg.seed)
    write_json(run_dir / "metrics.json", metrics)
    order = torch.cat([torch.nonzero(torch.arange(len(images)) % 10 == c).squeeze(1)[:10] for c in range(10)])
    digit_grid(images[order].numpy(), 10, 10, run_dir / "samples.png",
               "class-conditional samples (row = class)", [str(c) for c in range(10)])
    k = 10
    given = truth.images[:k].clone()
    given[:, 32:] = 0  # drawn blank: the hidden half
    rows = torch.cat([given, filled[:k, 1:], truth.images[:k]])
    digit_grid(rows.numpy(), 3, k, run_dir / "inpaint.png",
               "inpainting: label and top half given / generated / truth", ["given", "generated", "truth"])
    write_report(cfg, metrics, run_dir)
    return metrics


def write_report(cfg: Config, metrics: dict, run_dir: Path) -> None:
    lines = [
        "# digits: one masked model that classifies, generates and inpaints",
        "",
        f"Recipe `digits` (P59, the 4M idea), {cfg.steps} steps, width {cfg.dim}, depth {cfg.depth}, "
        f"seed {cfg.seed}; sampler `{cfg.sampler}` with {cfg.sampler_steps} steps.",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| label accuracy (held-out, label hidden) | {metrics['label_accuracy']:.4f} | >= 0.93 |",
        f"| conditional accuracy ({cfg.n_samples} samples, logistic-regression judge) "
        f"| {metrics['conditional_accuracy']:.4f} | >= 0.85 |",
        f"| judge's own test accuracy on real digits | {metrics['classifier_test_accuracy']:.4f} | |",
        f"| novelty (not a copy of a training image) | {metrics['novelty']:.4f} | >= 0.95 |",
        f"| inpainting MSE, posterior-mean fill (label and top half given) | {metrics['inpaint_mse']:.3f} "
        f"| < class-mean fill {metrics['inpaint_mse_class_mean']:.3f} |",
        f"| inpainting MSE, mean of 16 sampled completions | {metrics['inpaint_mse_mean_of_k']:.3f} | |",
        f"| inpainting MSE, one sampled completion | {metrics['inpaint_mse_single']:.3f} | (2x posterior variance) |",
        "",
        "![class-conditional samples](samples.png)",
        "",
        "![inpainting](inpaint.png)",
        "",
    ]
    (Path(run_dir) / "report.md").write_text("\n".join(lines))


def sample(cfg: Config, objective: MaskedTokenModeling, n: int, out: Path) -> None:
    """n class-conditional samples (classes in turn), drawn into a PNG."""
    from ..eval.digits import conditional_canvas, sample_batched

    labels = torch.arange(n) % digits.CLASSES
    g = torch.Generator().manual_seed(cfg.seed)
    objective.model.eval()
    tokens, _ = sample_batched(objective.model, conditional_canvas(labels), cfg.sampler_object(), g)
    images, _ = digits.decode(tokens)
    cols = min(n, 10)
    rows = -(-n // cols)
    padded = torch.zeros(rows * cols, 64, dtype=torch.long)
    padded[:n] = images
    digit_grid(padded.numpy(), rows, cols, Path(out), f"{n} class-conditional samples")
