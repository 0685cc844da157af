"""Users' own text and code for the code recipes (`data.source=PATH`): read every document the source
holds, split them by hash, and pack them into the same chunks (`CodeSplit`) the standard library gives.

What is read, by what is there:
- a folder holding `dataset_info.json`, `state.json` or `dataset_dict.json`: a Hugging Face `datasets`
  folder written by `save_to_disk` (every split of a `DatasetDict`), one document per row;
- otherwise the files of a file, a folder (recursively, hidden ones left out) or a glob, each by its
  suffix: `.jsonl` is JSON Lines, one document per line; `.parquet` and `.arrow` are tables, one
  document per row (a single Parquet file read with pyarrow; Parquet and Arrow files found in a folder
  or glob, a data set's shards, streamed with `datasets`); every other file is one document when it
  decodes as UTF-8 and holds no NUL byte.
Rows read the column `data.text_column`.

Counted skips: "not UTF-8 text", "empty file", "not a JSON object" (a JSON Lines line), "missing
column" (a row without it, or null), "not a string", "empty text". Refused in one line naming the
file: no row with the column, a truncated or corrupt Parquet or Arrow file, no document at all.

Each document has a name: its path relative to the source's folder (a single file: its file name),
with `#ROW` for rows (0-based; JSON Lines: the line index). A document is held out when the SHA-1 of
its name falls in the lowest 10% (`code.split_of`), so the split never depends on which other
documents exist; when none falls there, the document of lowest hash is held out. A source of one
document (one text file) is split by window instead: window k by the hash of `NAME@k`.

Each split's documents are tokenised in name order and packed into one stream, each followed by
`<|endoftext|>`, then cut into windows of `length` tokens (only the stream's tail is dropped), so short
rows are not lost. A chunk's file index is the document where it starts. Word and entity ids come
from Python's `tokenize` per document (`code.token_groups`; text that is not Python gives each token
its own word) and are offset so that no two documents share one.

    text = read_documents("corpus/", column="text")        # doctest: +SKIP
    corpus = load_corpus(text, tokenizer, length=128)      # doctest: +SKIP
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import UnmaskError
from . import code
from .source import DataStats, Skips, expand, unreadable

DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
TABLE_SUFFIXES = (".parquet", ".arrow")
HELD_OUT_SHARE = 0.1
BLANK_ID = 1 << 40  # `code.token_groups` gives blank tokens word ids from here up
SNIFF_BYTES = 8192  # a NUL byte among the first ones marks a binary file without reading it all
MISSING = object()


class Document(NamedTuple):
    name: str  # what the split hashes: path relative to the source (+ `#ROW` for rows)
    text: str


@dataclass(frozen=True)
class UserText:
    documents: tuple[Document, ...]  # in name order
    stats: DataStats


def need_datasets():
    try:
        import datasets
    except ImportError:
        raise UnmaskError("reading `datasets` folders and Parquet or Arrow sets needs Hugging Face datasets; "
                          "install the data extra: pip install 'unmask[data]'") from None
    return datasets


def need_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UnmaskError("reading Parquet files needs pyarrow; install the data extra: "
                          "pip install 'unmask[data]'") from None
    return pq


# reading ------------------------------------------------------------------------------------------
def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in DATASET_MARKERS)


def read_documents(source: str, column: str = "text") -> UserText:
    """Every document of `source` (see the module docstring) and what was read and skipped."""
    path = Path(str(source)).expanduser()
    skips, docs = Skips(), []
    if is_saved_dataset(path):
        files = _saved_dataset(path, column, skips, docs)
    else:
        found = expand(source)
        root = _root(str(source))
        streamed = len(found) > 1 or not path.is_file()
        for f in found:
            rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
            suffix = f.suffix.lower()
            if suffix == ".jsonl":
                _jsonl(f, rel, column, skips, docs)
            elif suffix in TABLE_SUFFIXES:
                rows = _streamed_rows(f, column) if streamed or suffix == ".arrow" else _parquet_rows(f, column)
                for i, value in rows:
                    keep(value, f"{rel}#{i}", f"{rel}#{i}", skips, docs)
            else:
                text = text_of(f)
                if text is None:
                    skips.add(rel, "not UTF-8 text")
                elif not text.strip():
                    skips.add(rel, "empty file")
                else:
                    docs.append(Document(rel, text))
        files = len(found)
    if not docs:
        reasons = "; ".join(f"{r}: {n}" for r, n in sorted(skips.counts.items())) or "nothing to read"
        raise unreadable(source, f"no document to train on ({reasons})")
    docs.sort(key=lambda d: d.name)
    return UserText(tuple(docs), DataStats(str(source), files=files, examples=len(docs), skips=skips))


def _root(source: str) -> Path:
    """The folder document names are relative to: the folder itself, a file's folder, or the part
    of a glob before its first wildcard."""
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        parts = []
        for part in path.parts:
            if any(ch in part for ch in "*?["):
                break
            parts.append(part)
        return Path(*parts) if parts else Path(".")
    return path if path.is_dir() else path.parent


def text_of(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8 or holds a NUL byte (a binary file)."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
        if b"\x00" in head:
            return None
        data = head + f.read()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def keep(value, name: str, where: str, skips: Skips, docs: list[Document]) -> None:
    """A row's value becomes a document, or a counted skip."""
    if value is None or value is MISSING:
        skips.add(where, "missing column")
    elif not isinstance(value, str):
        skips.add(where, "not a string")
    elif not value.strip():
        skips.add(where, "empty text")
    else:
        docs.append(Document(name, value))


def _no_column(path, column: str, names) -> UnmaskError:
    shown = ", ".join(sorted(map(str, names))) or "none"
    return unreadable(path, f"no column {column!r} (columns: {shown}); set data.text_column")


def _jsonl(path: Path, rel: str, column: str, skips: Skips, docs: list[Document]) -> None:
    text = text_of(path)
    if text is None:
        skips.add(rel, "not UTF-8 text")
        return
    if not text.strip():
        skips.add(rel, "empty file")
        return
    fields: set[str] = set()
    objects = 0
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            skips.add(f"{rel}:{i + 1}", "not a JSON object")
            continue
        objects += 1
        fields |= row.keys()
        keep(row.get(column, MISSING), f"{rel}#{i}", f"{rel}:{i + 1}", skips, docs)
    if objects == 0:
        raise unreadable(path, "no line is a JSON object; is it JSON Lines?")
    if column not in fields:
        raise _no_column(path, column, fields)


def _parquet_rows(path: Path, column: str):
    """(row index, value) of one Parquet file, read by pyarrow one batch at a time."""
    pq = need_pyarrow()
    import pyarrow as pa

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise unreadable(path, f"not a readable Parquet file, truncated or corrupt? ({_first_line(e)})") from None
    if column not in table.schema_arrow.names:
        raise _no_column(path, column, table.schema_arrow.names)
    i = 0
    try:
        for batch in table.iter_batches(columns=[column]):
            for value in batch.column(0).to_pylist():
                yield i, value
                i += 1
    except (pa.ArrowException, OSError) as e:
        raise unreadable(path, f"Parquet file breaks off at row {i}: {_first_line(e)}") from None


def _streamed_rows(path: Path, column: str):
    """(row index, value) of one Parquet or Arrow file, streamed by `datasets`."""
    datasets = need_datasets()
    kind = path.suffix.lower().lstrip(".")
    i = 0
    with quiet(datasets):
        try:
            ds = datasets.load_dataset(kind, data_files=[str(path)], streaming=True, split="train")
            if ds.features is not None and column not in ds.features:
                raise _no_column(path, column, ds.features)
            for row in ds:
                yield i, row.get(column, MISSING)
                i += 1
        except UnmaskError:
            raise
        except Exception as e:  # datasets and pyarrow raise many types for a file they cannot read
            raise unreadable(path, f"not a readable {kind} file at row {i}, truncated or corrupt? "
                                   f"({_first_line(e)})") from None


def _saved_dataset(path: Path, column: str, skips: Skips, docs: list[Document]) -> int:
    """Rows of a `save_to_disk` folder into `docs`; returns the number of Arrow files it holds."""
    datasets = need_datasets()
    with quiet(datasets):
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # a folder save_to_disk did not finish, or of another datasets version
            raise unreadable(path, f"not a readable `datasets` folder ({_first_line(e)})") from None
    parts = sorted(ds.items()) if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    files = set()
    for split, part in parts:
        if column not in part.column_names:
            raise _no_column(f"{path} {split}".rstrip(), column, part.column_names)
        files |= {c["filename"] for c in part.cache_files}
        i = 0
        for batch in part.select_columns([column]).iter(batch_size=1024):
            for value in batch[column]:
                keep(value, f"{split}#{i}", f"{split}#{i}", skips, docs)
                i += 1
    return len(files)


@contextlib.contextmanager
def quiet(datasets):
    """No progress bars or log lines from `datasets` inside the block; its settings restored after."""
    level = datasets.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# split, tokenizer, chunks ------------------------------------------------------------------------
def split_documents(docs, share: float = HELD_OUT_SHARE) -> tuple[list[Document], list[Document]]:
    """(training, held-out) documents by the hash of their names; the lowest hash is held out when
    the share leaves none."""
    test = [d for d in docs if code.split_of(d.name, share) == "test"]
    if not test and len(docs) > 1:
        test = [min(docs, key=lambda d: _hash(d.name))]
    held = {d.name for d in test}
    return [d for d in docs if d.name not in held], test


def _hash(name: str) -> bytes:
    return hashlib.sha1(Path(name).as_posix().encode()).digest()


def training_texts(text: UserText) -> list[str]:
    """What the run's tokenizer is trained on: the training documents (one document: all of it)."""
    if len(text.documents) == 1:
        return [text.documents[0].text]
    return [d.text for d in split_documents(text.documents)[0]]


def train_run_tokenizer(text: UserText, vocab_size: int) -> code.CodeTokenizer:
    """The byte-level BPE of the code recipes, trained on the training text; it must reach `vocab_size`."""
    tokenizer = code.train_tokenizer(training_texts(text), vocab_size)
    if tokenizer.vocab_size != vocab_size:
        raise UnmaskError(f"the training text of {text.stats.source} yields only {tokenizer.vocab_size} BPE "
                          f"tokens; set data.vocab_size={tokenizer.vocab_size} (or less)")
    return tokenizer


@dataclass(frozen=True)
class UserCorpus(code.CodeCorpus):
    """A `CodeCorpus` of the user's documents, with what was read (`stats`, for `RUN/data.json`)."""
    stats: DataStats | None = None
    held_out_texts: dict[str, str] = field(default_factory=dict)

    def source(self, rel_path: str) -> str | None:
        """A held-out document's text when it is Python that parses (infilling hides function
        bodies), else None."""
        text = self.held_out_texts.get(rel_path)
        return text if text is not None and _parses(text) else None


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def pack(tokenizer: code.CodeTokenizer, docs: list[Document], length: int) -> code.CodeSplit | None:
    """The documents as one stream (each followed by `<|endoftext|>`) cut into windows of `length`;
    None when the stream is shorter than one window."""
    end = tokenizer.tokenizer.token_to_id("<|endoftext|>")
    ids, words, entities, doc_of, within = [], [], [], [], []
    base = pos = 0  # word ids and tokens taken by earlier documents
    for k, doc in enumerate(docs):
        t, offsets = tokenizer.encode_with_offsets(doc.text)
        w, e = code.token_groups(doc.text, offsets)
        lexical = w < BLANK_ID
        n = len(t) + 1
        blanks = BLANK_ID + np.arange(pos, pos + n)
        ids.append(np.asarray(t + [end], dtype=np.int64))
        words.append(np.where(np.append(lexical, False), np.append(w, 0) + base, blanks))
        entities.append(np.append(np.where(e >= 0, e + base, -1), -1))
        doc_of.append(np.full(n, k))
        within.append(np.arange(n))
        base += int(w[lexical].max()) + 1 if lexical.any() else 0
        pos += n
    windows = pos // length
    if windows == 0:
        return None
    cut = windows * length

    def rows(parts) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts)[:cut].reshape(windows, length)).long()

    starts = np.arange(windows) * length
    return code.CodeSplit(rows(ids), rows(words), rows(entities),
                          torch.from_numpy(np.concatenate(doc_of)[starts]).long(),
                          torch.from_numpy(np.concatenate(within)[starts]).long(), tuple(d.name for d in docs))


def _rows(split: code.CodeSplit, keep_rows: list[int]) -> code.CodeSplit:
    i = torch.tensor(keep_rows, dtype=torch.long)
    return code.CodeSplit(split.tokens[i], split.word_ids[i], split.entity_ids[i], split.file_index[i],
                          split.start[i], split.files)


def load_corpus(text: UserText, tokenizer: code.CodeTokenizer, length: int) -> UserCorpus:
    """The user's documents as a corpus of chunks of `length` tokens (see the module docstring)."""
    too_short = (f"in {text.stats.source} hold less than one window of data.length={length} tokens; "
                 "give more text or a smaller data.length")
    if len(text.documents) == 1:  # one document: split by window
        doc = text.documents[0]
        whole = pack(tokenizer, [doc], length)
        if whole is None or len(whole) < 2:
            raise UnmaskError(f"{doc.name} holds fewer than two windows of data.length={length} tokens, one "
                              "to train on and one held out; give more text or a smaller data.length")
        names = [f"{doc.name}@{k}" for k in range(len(whole))]
        test = [k for k, name in enumerate(names) if code.split_of(name, HELD_OUT_SHARE) == "test"]
        test = test or [min(range(len(names)), key=lambda k: _hash(names[k]))]
        train = [k for k in range(len(names)) if k not in test]
        return UserCorpus(tokenizer, _rows(whole, train), _rows(whole, test), Path(text.stats.source), text.stats)
    train_docs, test_docs = split_documents(text.documents)
    train, test = pack(tokenizer, train_docs, length), pack(tokenizer, test_docs, length)
    if train is None:
        raise UnmaskError(f"the {len(train_docs)} training documents {too_short}")
    if test is None:
        raise UnmaskError(f"the {len(test_docs)} held-out documents (10% by the hash of their names) {too_short}")
    return UserCorpus(tokenizer, train, test, Path(text.stats.source), text.stats,
                      {d.name: d.text for d in test_docs})
