"""Recipe `electra-code`: ELECTRA's replaced-token detection (Clark et al. 2020, P36) on standard-
library code: a generator a quarter of the width proposes tokens for 15% of each chunk, the
discriminator labels every token real or replaced, loss = MLM + 50 * BCE. Evaluation probes the
discriminator's frozen features (a chunk's top-level package) and scores detection on held-out code.
`benchmarks/code_report.py` sets it against `mlm-code` at equal training FLOPs.

    unmask train electra-code --out runs/electra-code
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..objectives import Electra
from . import code_runs
from .code_runs import CodeConfig

NAME = "electra-code"
PAPERS = ("P36",)
SUMMARY = "ELECTRA replaced-token detection on Python stdlib code; linear probe of frozen features"


@dataclass(frozen=True)
class Config(CodeConfig):
    disc_weight: float = option(50.0, lo=0.0, help="weight of the discriminator's loss")
    generator_share: float = option(0.25, lo=0.0, hi=1.0, lo_open=True, help="generator width / width")
    ratio: float = option(0.15, lo=0.0, hi=1.0, lo_open=True, help="share of tokens the generator fills")


def build(cfg: Config) -> Electra:
    return Electra(cfg.vocab_size, cfg.layout(), dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                   generator_share=cfg.generator_share, ratio=cfg.ratio, disc_weight=cfg.disc_weight)


def run_config(cfg: Config) -> dict:
    return code_runs.run_config(NAME, cfg)


def train(cfg: Config, run_dir: Path, progress: bool = True, tokenizer_from: Path | None = None) -> dict:
    return code_runs.train(sys.modules[__name__], cfg, run_dir, progress, tokenizer_from)


@torch.no_grad()
def evaluate(cfg: Config, objective: Electra, run_dir: Path) -> dict:
    corpus = code_runs.corpus(cfg, run_dir)
    objective.eval()
    held = code_runs.held_out(cfg, corpus)
    g = torch.Generator().manual_seed(cfg.seed)
    parts = [objective({"tokens": x}, g).metrics for x in held.split(128)]
    metrics = {f"heldout_{k}": sum(p[k] for p in parts) / len(parts)
               for k in ("gen_acc", "disc_acc", "replaced_share", "disc_loss")}
    metrics |= code_eval.package_probe(objective.features, corpus, seed=cfg.seed)
    lines = [
        f"Recipe `{NAME}`: {cfg.steps} steps of {cfg.batch_size} x {cfg.length} tokens, width {cfg.dim} "
        f"(generator {cfg.generator_share} of it), depth {cfg.depth}, discriminator weight {cfg.disc_weight}.",
        "",
        *code_runs.metric_table(metrics),
    ]
    code_runs.write_report(run_dir, metrics, "electra-code: replaced-token detection on Python code", lines)
    return metrics


def sample(cfg: Config, objective: Electra, n: int, out: Path) -> None:
    raise UnmaskError("electra-code keeps a discriminator, which does not generate; sample from mlm-code or mdlm-code")
