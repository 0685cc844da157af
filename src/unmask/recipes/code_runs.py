"""What the four code recipes (`mlm-code`, `electra-code`, `mdlm-code`, `ar-code`) share: the base
config, the corpus of a run (its tokenizer trained once and kept as `tokenizer.json` in the run
folder), training with the one Trainer, and the report file.

The shared defaults (width 128, depth 4, windows of 128 tokens, 8,192 BPE tokens, batch 32, 400
steps) take a few minutes per recipe on two idle CPU cores.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import option
from ..data import code
from ..errors import UnmaskError
from ..layout import Layout
from ..nn import ModelConfig
from ..train import TrainConfig, fit
from ..train.checkpoint import write_json

_CORPORA: dict[tuple, code.CodeCorpus] = {}


@dataclass(frozen=True)
class CodeConfig:
    steps: int = option(400, lo=1, help="training steps")
    batch_size: int = option(32, lo=1, help="chunks per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    warmup: int = option(40, lo=0, help="warmup steps")
    seed: int = option(0, lo=0, help="seed of every random draw")
    length: int = option(128, lo=16, help="tokens per chunk")
    vocab_size: int = option(8192, lo=266, help="BPE tokens (bytes, merges and specials)")
    dim: int = option(128, lo=8, help="Transformer width")
    depth: int = option(4, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")
    eval_chunks: int = option(512, lo=1, help="held-out chunks scored by eval")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           seed=self.seed, checkpoint_every=self.checkpoint_every, log_every=25)

    def layout(self) -> Layout:
        return code.layout(self.length)

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.vocab_size, self.layout(), dim=self.dim, depth=self.depth, heads=self.heads)


def corpus(cfg: CodeConfig, run_dir: Path, tokenizer_from: Path | None = None) -> code.CodeCorpus:
    """The run's corpus. `tokenizer_from` (a tokenizer.json) is copied into the run folder first, so
    several runs can share one tokenizer; otherwise the run's own is read, or trained and saved."""
    path = Path(run_dir) / "tokenizer.json"
    if tokenizer_from is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tokenizer_from, path)
    if not path.exists():
        made = code.load_corpus(cfg.length, cfg.vocab_size, tokenizer_path=path)  # trains and saves
        _CORPORA[(cfg.length, cfg.vocab_size, hashlib.sha1(path.read_bytes()).hexdigest())] = made
        return made
    key = (cfg.length, cfg.vocab_size, hashlib.sha1(path.read_bytes()).hexdigest())
    if key not in _CORPORA:
        _CORPORA[key] = code.load_corpus(cfg.length, cfg.vocab_size, tokenizer_path=path)
    return _CORPORA[key]


def tokenizer_beside(out: Path) -> code.CodeTokenizer:
    """The tokenizer of the run folder that `out` is written into."""
    path = Path(out).parent / "tokenizer.json"
    if not path.exists():
        raise UnmaskError(f"no tokenizer.json beside {out}; write samples into the run folder")
    return code.CodeTokenizer.load(path)


def run_config(name: str, cfg: CodeConfig) -> dict:
    return {"recipe": name, "config": asdict(cfg), "model": cfg.model_config().to_dict()}


def train(recipe, cfg: CodeConfig, run_dir: Path, progress: bool = True, tokenizer_from: Path | None = None) -> dict:
    """What `train` is for every code recipe module: its corpus, `recipe.build(cfg)` trained by the one
    Trainer on the training chunks, then `recipe.evaluate` with the weights to evaluate."""
    corpus_ = corpus(cfg, run_dir, tokenizer_from)
    objective = fit(recipe.build(cfg), corpus_.train.data(), cfg.train_config(), run_dir,
                    run_config(recipe.NAME, cfg), progress)
    return recipe.evaluate(cfg, objective, run_dir)


def held_out(cfg: CodeConfig, corpus_: code.CodeCorpus):
    """The first `eval_chunks` chunks of the test split, in a fixed order."""
    return corpus_.test.tokens[: cfg.eval_chunks]


def metric_table(metrics: dict) -> list[str]:
    """A two-column Markdown table of the metrics, floats to 4 decimals."""
    return ["| metric | value |", "|---|---|",
            *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]]


def write_report(run_dir: Path, metrics: dict, title: str, lines: list[str]) -> None:
    write_json(Path(run_dir) / "metrics.json", metrics)
    (Path(run_dir) / "report.md").write_text("\n".join([f"# {title}", "", *lines, ""]))
