"""What the four code recipes (`mlm-code`, `electra-code`, `mdlm-code`, `ar-code`) share: `CodeRecipe`,
with the settings sections they all have (training budget, network size, the corpus's data settings,
held-out evaluation), the run's corpus (its tokenizer trained once and kept as `tokenizer.json` in the
run folder, or copied there from `data.tokenizer`, so that several runs share one), the held-out
split, the package probe and text samples.

The shared defaults (width 128, depth 4, windows of 128 tokens, 8,192 BPE tokens, batch 32, 400
steps) take a few minutes per recipe on two idle CPU cores.

    unmask train mlm-code --out runs/mlm-code
    unmask train mdlm-code data.tokenizer=runs/mlm-code/tokenizer.json --out runs/mdlm-code
    unmask train mlm-code data.source=my_repo/ data.vocab_size=4096  # your own text (data/user_text.py)
    unmask train mlm-code data.source=shards/ data.vocab_size=4096   # a shard set: read by window from disk
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import option, section
from ..data import code, shards, user_text, windows
from ..data.tokenizer_train import load_code_tokenizer, tokenizer_file
from ..errors import UnmaskError
from ..eval import code as code_eval
from ..nn import ModelConfig
from ..sampling import generate
from ..train import TrainConfig, distributed
from ..train.trainer import batch_indices
from .base import Recipe, TransformerSettings, memo
from .report import Metric
from .run import Run


@dataclass(frozen=True)
class CodeData:
    length: int = option(128, lo=16, help="tokens per chunk")
    vocab_size: int = option(8192, lo=len(code.SPECIAL) + 1, help="tokens (BPE: bytes, merges and specials, at "
                                                                   "least 266; any size with data.tokenizer)")
    tokenizer: str = option("", help="a tokenizer.json, or a model folder holding one, copied into the run "
                                     "(runs that share one compare fairly); empty: train one on the training files")
    source: str = option("", help="your own text: a file, folder, glob, .jsonl, .parquet or `datasets` folder, "
                                  "or a shard set made by `unmask prepare` (docs/data.md); empty: the standard "
                                  "library's code")
    text_column: str = option("text", help="the column of rows (.jsonl, .parquet, `datasets`) that holds the text")


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
READ_WORKERS = 2  # threads that read a shard set's windows ahead of each step


class CodeRecipe(Recipe):
    sample_suffix = ".txt"
    upgrades = {**Recipe.upgrades, "eval_chunks": "eval.chunks"}

    def model_config(self) -> ModelConfig:
        m, d = self.settings.model, self.settings.data
        return ModelConfig(d.vocab_size, code.layout(d.length), dim=m.dim, depth=m.depth, heads=m.heads)

    def setup(self) -> str:
        d = self.settings.data
        if shards.is_shard_set(d.source):
            return (f"{super().setup()} Windows of {d.length} tokens of the shard set `{d.source}`, {d.vocab_size} "
                    f"tokens; held-out scores on its first {self.settings.eval.chunks} held-out windows; no package "
                    "probe and no infilling (shards hold tokens, not files).")
        if d.source:
            return (f"{super().setup()} Chunks of {d.length} tokens of `{d.source}` (documents packed, 10% held "
                    f"out by the hash of their names), {d.vocab_size} tokens; held-out scores on the first "
                    f"{self.settings.eval.chunks} held-out chunks. Your data has no package labels, so the "
                    "package probe is skipped; infilling reads the held-out documents that are Python.")
        return (f"{super().setup()} Chunks of {d.length} tokens of the standard library's code, byte-level BPE "
                f"of {d.vocab_size} tokens; held-out scores on the first {self.settings.eval.chunks} held-out chunks.")

    # the corpus --------------------------------------------------------------------------------
    def corpus(self, run: Run) -> code.CodeCorpus:
        """The run's corpus, its tokenizer read from the run folder: copied there from
        `data.tokenizer` first, or trained on the training files and saved there when missing. Loaded
        once per process for each tokenizer and data settings (BPE training is deterministic, so runs
        that train their own tokenizer with equal settings share one corpus too). With `data.source`,
        the files are the user's and what was read and skipped is written to `data.json`."""
        d = self.settings.data
        path = run.file("tokenizer.json")
        if not path.exists() and d.tokenizer:
            source = tokenizer_file(d.tokenizer)
            self._check_vocab(source)
            shutil.copyfile(source, path)
        if shards.is_shard_set(d.source):
            return self._shard_corpus(run, path)
        least = 256 + len(code.SPECIAL)
        if not path.exists() and d.vocab_size < least:
            raise UnmaskError(f"data.vocab_size={d.vocab_size} is too small for the byte-level BPE a run trains: "
                              f"give at least {least}, or a smaller tokenizer with data.tokenizer")
        if d.source:
            if not path.exists():
                user_text.train_run_tokenizer(self.user_documents(), d.vocab_size).save(path)
            corpus = memo(self._corpus_key(path), lambda: self._load(path))
            run.write_json("data.json", corpus.stats.to_dict())
            return corpus
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

    def _shard_corpus(self, run: Run, path: Path) -> windows.ShardCorpus:
        """`data.source` is a shard set (`unmask prepare`): the run takes its tokenizer.json when it has
        none and refuses another one; training windows are read from disk, the first `eval.chunks`
        windows of the held-out split are kept in memory."""
        d, chunks = self.settings.data, self.settings.eval.chunks
        found = shards.open_shards(d.source)
        if not path.exists():
            shutil.copyfile(found.folder / shards.TOKENIZER, path)
        shards.check_tokenizer(found, path)
        self._check_vocab(path)
        key = ("shard-corpus", str(found.folder.resolve()), json.dumps(found.index, sort_keys=True), d.length, chunks)
        corpus = memo(key, lambda: windows.open_corpus(found.folder, load_code_tokenizer(path), d.length, chunks))
        skipped = found.index.get("skipped", {})  # what prepare skipped, as `DataStats.to_dict` writes it
        run.write_json("data.json", {"source": d.source, "files": found.index.get("files", 0),
                                     "examples": len(corpus.windows), "skipped_by_reason": skipped,
                                     "skipped": sum(v["count"] for v in skipped.values())})
        return corpus

    def user_documents(self) -> user_text.UserText:
        """The documents of `data.source`, read once per process."""
        d = self.settings.data
        return memo(("user-text", d.source, d.text_column), lambda: user_text.read_documents(d.source, d.text_column))

    def _check_vocab(self, path: Path) -> None:
        size = load_code_tokenizer(path).vocab_size
        if size != self.settings.data.vocab_size:
            raise UnmaskError(f"{path} holds {size} tokens; data.vocab_size is {self.settings.data.vocab_size}")

    def _load(self, path: Path) -> code.CodeCorpus:
        self._check_vocab(path)
        if self.settings.data.source:
            return user_text.load_corpus(self.user_documents(), load_code_tokenizer(path), self.settings.data.length)
        return code.load_corpus(self.settings.data.length, self.settings.data.vocab_size, tokenizer_path=path)

    def tokenizer(self, run: Run) -> code.CodeTokenizer:
        if not run.has("tokenizer.json"):
            raise UnmaskError(f"{run.folder}/tokenizer.json is missing; the run folder is incomplete")
        return code.CodeTokenizer.load(run.folder / "tokenizer.json")

    def training_data(self, run: Run) -> dict:
        corpus = self.corpus(run)
        if isinstance(corpus, windows.ShardCorpus):  # read by window: this process's rows, ahead of each step
            t = self.settings.train
            plan = functools.partial(step_rows, len(corpus.windows), t, world=distributed.world_size(),
                                     rank=distributed.rank())
            return {"tokens": windows.WindowLoader(corpus.windows, plan, workers=READ_WORKERS, steps=t.steps)}
        return corpus.train.data()

    def prepare(self, run: Run, objective, data: dict) -> None:
        """Refuse a masker that reads what the data lacks (shards hold tokens, no word ids)."""
        masker = getattr(objective, "masker", None)
        key = getattr(masker, "context_key", None)
        if key is not None and key not in data:
            raise UnmaskError(f"the masker {type(masker).__name__} reads `{key}`, which a shard set does not hold; "
                              "train on shards with objective.masker=random or span")

    def held_out(self, corpus: code.CodeCorpus) -> code.CodeSplit:
        """The first `eval.chunks` chunks of the test split, in a fixed order."""
        return corpus.test.head(self.settings.eval.chunks)

    def probe(self, features, corpus: code.CodeCorpus) -> dict:
        """The package probe; none on the user's data (no package labels, see `setup`)."""
        if self.settings.data.source:
            return {}
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


def step_rows(n: int, train: TrainConfig, step: int, world: int, rank: int) -> list[torch.Tensor]:
    """The rows of `n` that process `rank` of `world` reads at `step`, one Long[m] per micro-batch in
    the order it reads them: the trainer's own rule (`batch_indices`, then `micro_batches`), which is
    what lets a loader read them ahead."""
    size, micro = distributed.micro_batches(train.batch_size, train.micro_batch, world, rank)
    idx = batch_indices(n, train.batch_size, train.seed, step)
    return [idx[j * size : (j + 1) * size] for j in micro]


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
