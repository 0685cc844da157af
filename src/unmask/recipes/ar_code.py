"""Recipe `ar-code`: the autoregressive baseline on standard-library code, on the same Transformer
with a causal attention mask (same parameters as `mdlm-code`), scored by its exact held-out NLL in
bits per token. Two options from the catalogue: `meap=true` hides 15% of the inputs (MEAP, P12;
scored also by in-context identifier recall) and `cm3=true` trains on CM3's causally masked rewrites
(P17), which lets the left-to-right model infill function bodies.

    unmask train ar-code --out runs/ar-code
    unmask train ar-code cm3=true --out runs/ar-cm3
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
from ..masking import CausalMasking, MeapMask
from ..nn import CausalTokenModel
from ..objectives import NextTokenPrediction
from ..train.checkpoint import write_json
from . import code_runs
from .code_runs import CodeConfig

NAME = "ar-code"
PAPERS = ("P12", "P17")
SUMMARY = "next-token prediction on Python stdlib code (same Transformer, causal); MEAP and CM3 options"
BOS = SPECIAL.index("<|endoftext|>")
EOS = SPECIAL.index("<eos>")
SENTINELS = tuple(SPECIAL.index(f"<mask:{i}>") for i in range(8))


@dataclass(frozen=True)
class Config(CodeConfig):
    meap: bool = option(False, help="MEAP: hide a share of the inputs, targets stay clean")
    meap_ratio: float = option(0.15, lo=0.0, hi=1.0, help="MEAP's share of hidden inputs")
    cm3: bool = option(False, help="CM3: train on causally masked rewrites (spans moved to the end)")
    cm3_lambda: float = option(1.0, lo=0.0, help="Poisson mean of the CM3 span count")
    infill_cases: int = option(40, lo=1, help="function bodies filled by eval (cm3 only)")
    temperature: float = option(1.0, lo=0.0, help="sampling temperature")


def build(cfg: Config) -> NextTokenPrediction:
    transform = CausalMasking(SENTINELS, EOS, lam=cfg.cm3_lambda) if cfg.cm3 else None
    return NextTokenPrediction(CausalTokenModel(cfg.model_config()), bos_id=BOS,
                               input_masker=MeapMask() if cfg.meap else None, ratio=cfg.meap_ratio,
                               transform=transform)


def run_config(cfg: Config) -> dict:
    return code_runs.run_config(NAME, cfg)


def train(cfg: Config, run_dir: Path, progress: bool = True, tokenizer_from: Path | None = None) -> dict:
    return code_runs.train(sys.modules[__name__], cfg, run_dir, progress, tokenizer_from)


def evaluate(cfg: Config, objective: NextTokenPrediction, run_dir: Path) -> dict:
    corpus = code_runs.corpus(cfg, run_dir)
    objective.eval()
    metrics = {"heldout_nll_bits": code_eval.ar_bits(objective, code_runs.held_out(cfg, corpus))}
    metrics |= code_eval.repeat_accuracy(objective, corpus.test, cfg.eval_chunks)
    lines = []
    if cfg.cm3:
        cases = code_eval.infill_cases(corpus, cfg.length, cfg.infill_cases)
        res = code_eval.cm3_infill(objective.model, cases, corpus, cfg.length, BOS, seed=cfg.seed,
                                   temperature=cfg.temperature)
        bodies = res.bodies
        metrics |= {"infill_cases": len(cases), "infill_parse_cm3": res.share}
        write_json(Path(run_dir) / "infill.json", [{"path": c.path, "name": c.name, "cm3": b, "cm3_parses": ok,
                                                    "signature": c.signature(corpus.tokenizer)}
                                                   for c, b, ok in zip(cases, bodies, res.parsed, strict=True)])
        for case, body in list(zip(cases, bodies, strict=True))[:3]:
            lines += ["", f"`{case.path}`, `def {case.name}`:", "", "```python",
                      case.signature(corpus.tokenizer) + body, "```"]
    head = [f"Recipe `{NAME}` (meap={cfg.meap}, cm3={cfg.cm3}): {cfg.steps} steps of {cfg.batch_size} x "
            f"{cfg.length} tokens, width {cfg.dim}, depth {cfg.depth}, seed {cfg.seed}.", ""]
    code_runs.write_report(run_dir, metrics, "ar-code: next-token prediction on Python code",
                           head + code_runs.metric_table(metrics) + lines)
    return metrics


def sample(cfg: Config, objective: NextTokenPrediction, n: int, out: Path) -> Path:
    """n chunks drawn left to right from the start token, written as text to `out` with suffix `.txt`."""
    if n < 1:
        raise UnmaskError(f"n must be >= 1, got {n}")
    tokenizer = code_runs.tokenizer_beside(out)
    g = torch.Generator().manual_seed(cfg.seed)
    prefix = torch.full((n, 1), BOS)
    rows = code_eval.left_to_right(objective.model.eval(), prefix, cfg.length, g, cfg.temperature)
    path = Path(out).with_suffix(".txt")
    path.write_text("\n\n# ----\n\n".join(tokenizer.decode(r) for r in rows))
    return path
