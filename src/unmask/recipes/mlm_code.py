"""Recipe `mlm-code`: BERT's masked language model on standard-library code (Devlin et al. 2019):
15% of each chunk hidden (an exact count), 80/10/10 input corruption, logits only at the hidden
places. The masker is a setting, so one line swaps BERT's random tokens for whole identifiers,
SpanBERT's geometric spans, ERNIE-Gram's n-grams (P73) or entity masking (P19); `emd=true` adds
DeBERTa's enhanced mask decoder (P10).

    unmask train mlm-code --out runs/mlm-code                  # train, then evaluate
    unmask train mlm-code masker=entity --out runs/mlm-entity
    unmask eval runs/mlm-code
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option
from ..data.code import SPECIAL
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..masking import BertCorruption, EntityMask, NGramMask, RandomMask, SpanMask, WholeWordMask
from ..nn import EMDConfig, EMDMaskedTokenModel, MaskedTokenModel
from ..objectives import MaskedTokenModeling
from ..sampling import MaskGITSampler
from . import code_runs
from .code_runs import CodeConfig

NAME = "mlm-code"
PAPERS = ("P10", "P19", "P55", "P73")
SUMMARY = "BERT-style MLM on Python stdlib code; maskers: random, whole-word, span, n-gram, entity"
MASKERS = {"random": RandomMask, "whole-word": WholeWordMask, "span": SpanMask, "ngram": NGramMask,
           "entity": EntityMask}


@dataclass(frozen=True)
class Config(CodeConfig):
    masker: str = option("random", choices=tuple(MASKERS), help="which tokens to hide")
    ratio: float = option(0.15, lo=0.0, hi=1.0, lo_open=True, help="share of tokens hidden")
    corruption: str = option("bert", choices=("bert", "mask"), help="80/10/10 or all mask tokens")
    emd: bool = option(False, help="DeBERTa's enhanced mask decoder")
    emd_layers: int = option(2, lo=1, help="EMD passes of the shared last block")

    def model_config(self):
        base = super().model_config()
        return EMDConfig(**base.__dict__, emd_layers=self.emd_layers) if self.emd else base


def build(cfg: Config) -> MaskedTokenModeling:
    mc = cfg.model_config()
    model = EMDMaskedTokenModel(mc) if cfg.emd else MaskedTokenModel(mc)
    corruption = BertCorruption(random_range=(len(SPECIAL), cfg.vocab_size)) if cfg.corruption == "bert" else None
    return MaskedTokenModeling(model, MASKERS[cfg.masker](), ratio=cfg.ratio, corruption=corruption)


def run_config(cfg: Config) -> dict:
    return code_runs.run_config(NAME, cfg)


def train(cfg: Config, run_dir: Path, progress: bool = True, tokenizer_from: Path | None = None) -> dict:
    return code_runs.train(sys.modules[__name__], cfg, run_dir, progress, tokenizer_from)


def evaluate(cfg: Config, objective: MaskedTokenModeling, run_dir: Path) -> dict:
    corpus = code_runs.corpus(cfg, run_dir)
    model = objective.model.eval()
    sub = corpus.test.head(cfg.eval_chunks)
    metrics = {"heldout_accuracy": code_eval.hidden_accuracy(model, sub, RandomMask(), 0.15, cfg.seed)}
    if cfg.masker != "random":
        metrics["heldout_accuracy_own_masker"] = code_eval.hidden_accuracy(model, sub, objective.masker,
                                                                           cfg.ratio, cfg.seed)
    metrics |= code_eval.package_probe(model.features, corpus, seed=cfg.seed)
    lines = [
        f"Recipe `{NAME}`: masker `{cfg.masker}`, ratio {cfg.ratio}, corruption `{cfg.corruption}`, "
        f"EMD {cfg.emd}; {cfg.steps} steps of {cfg.batch_size} x {cfg.length} tokens, width {cfg.dim}, "
        f"depth {cfg.depth}, seed {cfg.seed}.",
        "",
        *code_runs.metric_table(metrics),
    ]
    code_runs.write_report(run_dir, metrics, "mlm-code: masked language model on Python code", lines)
    return metrics


def sample(cfg: Config, objective: MaskedTokenModeling, n: int, out: Path) -> Path:
    """n unconditional chunks drawn with MaskGIT from an all-hidden canvas, written as text to `out`
    with the suffix `.txt`."""
    if n < 1:
        raise UnmaskError(f"n must be >= 1, got {n}")
    tokenizer = code_runs.tokenizer_beside(out)
    canvas = torch.full((n, cfg.length), cfg.vocab_size)
    g = torch.Generator().manual_seed(cfg.seed)
    from ..sampling import generate

    tokens = generate(objective.model.eval(), canvas, MaskGITSampler(16), mask_id=cfg.vocab_size, generator=g).tokens
    text = "\n\n# ----\n\n".join(tokenizer.decode(row) for row in tokens)
    path = Path(out).with_suffix(".txt")
    path.write_text(text)
    return path
