"""What the four code recipes (`mlm-code`, `electra-code`, `mdlm-code`, `ar-code`) share: `CodeRecipe`,
with the settings sections they all have (training budget, network size, the corpus's data settings,
held-out evaluation), the run's corpus (its tokenizer trained once and kept as `tokenizer.json` in the
run folder, or copied there from `data.tokenizer`, so that several runs share one), the held-out
split, the package probe and text samples.

The shared defaults (width 128, depth 4, windows of 128 tokens, 8,192 BPE tokens, batch 32, 400
steps) take a few minutes per recipe on two idle CPU cores.

    unmask train mlm-code --out runs/mlm-code
    unmask train mdlm-code data.tokenizer=runs/mlm-code/tokenizer.json --out runs/mdlm-code
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import code
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..nn import ModelConfig
from ..sampling import generate
from ..train import TrainConfig
from .base import Recipe, TransformerSettings, memo
from .report import Metric
from .run import Run


@dataclass(frozen=True)
class CodeData:
    length: int = option(128, lo=16, help="tokens per chunk")
    vocab_size: int = option(8192, lo=266, help="BPE tokens (bytes, merges and specials)")
    tokenizer: str = option("", help="a tokenizer.json copied into the run (runs that share one compare "
                                     "fairly); empty: train one on the training files")


@dataclass(frozen=True)
class CodeEval:
    chunks: int = option(512, lo=1, help="held-out chunks scored by eval")


@dataclass(frozen=True)
class InfillEval(CodeEval):
    infill_cases: int = option(40, lo=1, help="function bodies filled by eval (ar-code: with objective.cm3 only)")


@dataclass(frozen=True)
class CodeSettings:
    """The sections every code recipe has; each recipe adds `objective` and `sampler` (and may widen
    `model` or `eval`)."""
    train: TrainConfig = section(TrainConfig(steps=400, batch_size=32, lr=1e-3, warmup=40, log_every=25))
    model: TransformerSettings = section(TransformerSettings())
    data: CodeData = section(CodeData())
    eval: CodeEval = section(CodeEval())


@dataclass(frozen=True)
class InfillSettings(CodeSettings):
    """The sections of the recipes that fill function bodies (mdlm-code, ar-code)."""
    eval: InfillEval = section(InfillEval())


# the linear probe of frozen features (mlm-code, electra-code)
PROBE_ROWS = (
    Metric("probe_accuracy", "linear probe of frozen features: a chunk's top-level package", "probe_majority",
           "higher"),
    Metric("probe_majority", "share of the most frequent package (majority baseline)"),
    Metric("probe_classes", "packages probed"),
    Metric("probe_test_chunks", "held-out chunks probed"),
)
SEPARATOR = "\n\n# ----\n\n"  # between chunks in a text file of samples


class CodeRecipe(Recipe):
    sample_suffix = ".txt"
    upgrades = {**Recipe.upgrades, "eval_chunks": "eval.chunks"}

    def model_config(self) -> ModelConfig:
        m, d = self.settings.model, self.settings.data
        return ModelConfig(d.vocab_size, code.layout(d.length), dim=m.dim, depth=m.depth, heads=m.heads)

    def setup(self) -> str:
        d = self.settings.data
        return (f"{super().setup()} Chunks of {d.length} tokens of the standard library's code, byte-level BPE "
                f"of {d.vocab_size} tokens; held-out scores on the first {self.settings.eval.chunks} held-out chunks.")

    # the corpus --------------------------------------------------------------------------------
    def corpus(self, run: Run) -> code.CodeCorpus:
        """The run's corpus, its tokenizer read from the run folder: copied there from
        `data.tokenizer` first, or trained on the training files and saved there when missing. Loaded
        once per process for each tokenizer and data settings (BPE training is deterministic, so runs
        that train their own tokenizer with equal settings share one corpus too)."""
        d = self.settings.data
        path = run.file("tokenizer.json")
        if not path.exists() and d.tokenizer:
            source = Path(d.tokenizer)
            if not source.is_file():
                raise UnmaskError(f"data.tokenizer={d.tokenizer!r} is not a file; give a tokenizer.json")
            self._check_vocab(source)
            shutil.copyfile(source, path)
        if not path.exists():
            root = code.stdlib_root()
            texts = [code.read_source(root / f) for f in code.stdlib_files() if code.split_of(f) == "train"]
            code.train_tokenizer([t for t in texts if t is not None], d.vocab_size).save(path)
        return memo(self._corpus_key(path), lambda: self._load(path))

    def _corpus_key(self, path: Path) -> tuple:
        """What a corpus depends on: the tokenizer's bytes and the data settings (not where the
        tokenizer was copied from)."""
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        return ("code-corpus", digest, dataclasses.replace(self.settings.data, tokenizer=""))

    def _check_vocab(self, path: Path) -> None:
        size = code.CodeTokenizer.load(path).vocab_size
        if size != self.settings.data.vocab_size:
            raise UnmaskError(f"{path} holds {size} tokens; data.vocab_size is {self.settings.data.vocab_size}")

    def _load(self, path: Path) -> code.CodeCorpus:
        self._check_vocab(path)
        return code.load_corpus(self.settings.data.length, self.settings.data.vocab_size, tokenizer_path=path)

    def tokenizer(self, run: Run) -> code.CodeTokenizer:
        if not run.has("tokenizer.json"):
            raise UnmaskError(f"{run.folder}/tokenizer.json is missing; the run folder is incomplete")
        return code.CodeTokenizer.load(run.folder / "tokenizer.json")

    def training_data(self, run: Run) -> dict:
        return self.corpus(run).train.data()

    def held_out(self, corpus: code.CodeCorpus) -> code.CodeSplit:
        """The first `eval.chunks` chunks of the test split, in a fixed order."""
        return corpus.test.head(self.settings.eval.chunks)

    def probe(self, features, corpus: code.CodeCorpus) -> dict:
        return code_eval.package_probe(features, corpus, seed=self.settings.train.seed)

    # evaluation with examples --------------------------------------------------------------------
    def evaluate(self, run: Run, objective) -> dict:
        """As `Recipe.evaluate`; the report also shows the first infilled function bodies that
        `measure` wrote to `infill.json` (mdlm-code, ar-code with CM3)."""
        objective.eval()
        metrics = self.measure(run, objective)
        report = self.report(metrics)
        if run.has("infill.json"):
            report = dataclasses.replace(report, notes=report.notes + infill_notes(run.read_json("infill.json")))
        run.write_results(metrics, report)
        return metrics

    # samples -------------------------------------------------------------------------------------
    def denoiser(self, objective):
        """What fills hidden tokens: tokens Long[B, N] (mask id V allowed) -> logits Float[B, N, V]."""
        return objective.model

    @torch.no_grad()
    def sample(self, run: Run, objective, n: int, out: Path) -> Path:
        """n chunks drawn by the `sampler` settings from an all-hidden canvas, written as text."""
        d = self.settings.data
        canvas = torch.full((n, d.length), d.vocab_size)  # [n, L], every token hidden
        g = torch.Generator().manual_seed(self.settings.train.seed)
        tokens = generate(self.denoiser(objective.eval()), canvas, self.settings.sampler.build(),
                          mask_id=d.vocab_size, generator=g).tokens
        return self.write_chunks(run, tokens, out)

    def write_chunks(self, run: Run, rows, out: Path) -> Path:
        """Token rows decoded with the run's tokenizer into `out` (suffix `.txt`), separated by a comment."""
        if len(rows) < 1:
            raise UnmaskError("n must be >= 1")
        tokenizer = self.tokenizer(run)
        path = self.sample_path(out)
        path.write_text(SEPARATOR.join(tokenizer.decode(r) for r in rows))
        return path


def infill_examples(cases, corpus: code.CodeCorpus, bodies: dict[str, list[str]],
                    parsed: dict[str, list[bool]]) -> list[dict]:
    """Per infilling case: where it is, its signature and original body, and each filler's body and
    whether the whole file parsed with it (what `infill.json` holds)."""
    return [{"path": c.path, "name": c.name, "signature": c.signature(corpus.tokenizer),
             "original": code_eval.original_text(c, corpus),
             **{name: filled[i] for name, filled in bodies.items()},
             **{f"{name}_parses": flags[i] for name, flags in parsed.items()}} for i, c in enumerate(cases)]


def infill_notes(examples: list[dict], k: int = 3) -> tuple[str, ...]:
    """Markdown of the first k infilled bodies: the original, then each filler's."""
    lines = ["## Infilled function bodies"]
    for ex in examples[:k]:
        fillers = [key.removesuffix("_parses") for key in ex if key.endswith("_parses")]
        lines += ["", f"`{ex['path']}`, `def {ex['name']}`; original:", "", "```python",
                  ex["signature"] + ex["original"], "```"]
        for name in fillers:
            verdict = "file parses" if ex[f"{name}_parses"] else "file does not parse"
            lines += ["", f"{name} ({verdict}):", "", "```python", ex["signature"] + ex[name], "```"]
    return ("\n".join(lines),)
