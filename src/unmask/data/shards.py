"""Token shards: a corpus larger than memory tokenised once into flat binary files that training
memory-maps and reads by window (`windows.py`), in the layout nanoGPT's `train.bin` and Megatron's
`.bin` files use.

    unmask prepare corpus/ --tokenizer tokenizer.json --out shards/

    shards/
      index.json            format, dtype, vocabulary, tokenizer digest, per split: shards, tokens, documents
      tokenizer.json        a byte-identical copy of the tokenizer the shards were made with
      train_00000.bin ...   uint16 tokens (vocabulary <= 65,536), else uint32, little-endian, no header
      test_00000.bin ...    the held-out documents, the same way

Each file of the source is one document; its tokens are followed by the tokenizer's end-of-text
(separator) id, so the concatenation of a split's shards is the token stream `doc0 SEP doc1 SEP ...`.
A shard holds at most `shard_mb` MiB; a document that does not fit goes on in the next shard. A file
goes to the held-out split `test` when the SHA-1 of its path relative to the source (the rule of
`code.split_of`, as for `data.source` text) falls in the lowest `test_share`, so the split never
depends on which other files exist; when none falls there, the file of lowest hash is held out (a
source of one file is refused unless `test_share` is 0). Files are read one at a time (a single file
must fit in memory) and tokenised in batches of a few MiB, so memory stays flat whatever the corpus.

Writing is atomic: shards go into a hidden folder beside `out`, `index.json` is written last and the
folder is renamed to `out` only then, so a killed prepare leaves no shard set at all. Reading checks
each shard's size against its token count (cheap, every time); `verify` also recomputes each shard's
SHA-256 (`unmask prepare --verify SHARDS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnmaskError
from .code import _need_tokenizers, split_of
from .source import Skips, expand

FORMAT, VERSION = "unmask-token-shards", 1
INDEX = "index.json"
TOKENIZER = "tokenizer.json"
SPLITS = ("train", "test")
SEPARATORS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")  # tried in this order
BATCH_BYTES = 4 << 20  # text tokenised per batch: enough for the tokenizer's threads, small beside memory
HASH_BLOCK = 16 << 20  # bytes hashed per read when verifying


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32; little-endian either way."""
    if not 1 <= vocab_size <= 2**32:
        raise UnmaskError(f"a vocabulary of {vocab_size} tokens cannot be stored in shards")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (the tokenizer digest of index.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _damaged(folder: Path, why: str) -> UnmaskError:
    return UnmaskError(f"shard set {folder} is damaged: {why}; prepare it again")


# writing ------------------------------------------------------------------------------------------
class ShardWriter:
    """Writes documents (token id arrays) into the shards of a split; `close()` writes index.json and
    puts the set in place atomically. As a context manager, an exception removes what was written.

        with ShardWriter(out, vocab_size=8192, separator_id=0, tokenizer=path) as w:
            w.add("train", ids)               # one document: its ids, then the separator
        # out/ now holds the shards and index.json
    """

    def __init__(self, out: Path, *, vocab_size: int, separator_id: int, tokenizer: Path,
                 shard_mb: float = 256, meta: dict | None = None):
        self.out = Path(out)
        if self.out.exists():
            raise UnmaskError(f"{self.out} already exists; give a new --out folder or remove it")
        if not 0 <= separator_id < vocab_size:
            raise UnmaskError(f"separator id {separator_id} is not a token of a {vocab_size}-token vocabulary")
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = int(shard_mb * 2**20) // self.dtype.itemsize
        if self.shard_tokens < 1:
            raise UnmaskError(f"shard size {shard_mb} MiB holds no token")
        self.vocab_size, self.separator_id = vocab_size, separator_id
        self.meta = dict(meta or {})
        self.tmp = self.out.with_name(f".{self.out.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)  # what a killed prepare left
        self.tmp.mkdir(parents=True)
        shutil.copyfile(tokenizer, self.tmp / TOKENIZER)
        self.tokenizer_sha256 = file_digest(self.tmp / TOKENIZER)
        self.splits = {s: {"documents": 0, "tokens": 0, "shards": []} for s in SPLITS}
        self._open: dict[str, tuple] = {}  # split -> (file, hasher, tokens in it)
        self._sep = np.array([separator_id], dtype=self.dtype)

    def add(self, split: str, ids) -> None:
        """One document: `ids` (ints < vocab_size), then the separator."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise UnmaskError(f"a document holds token ids outside 0..{self.vocab_size - 1}")
        self._write(split, ids.astype(self.dtype, copy=False))
        self._write(split, self._sep)
        self.splits[split]["documents"] += 1

    def _write(self, split: str, ids: np.ndarray) -> None:
        while ids.size:
            if split not in self._open:
                name = f"{split}_{len(self.splits[split]['shards']):05d}.bin"
                self._open[split] = (open(self.tmp / name, "wb"), hashlib.sha256(), 0, name)
            f, h, n, name = self._open[split]
            part = ids[: self.shard_tokens - n]
            data = part.tobytes()
            f.write(data)
            h.update(data)
            self._open[split] = (f, h, n + part.size, name)
            self.splits[split]["tokens"] += part.size
            ids = ids[part.size :]
            if n + part.size == self.shard_tokens:
                self._close_shard(split)

    def _close_shard(self, split: str) -> None:
        f, h, n, name = self._open.pop(split)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self.splits[split]["shards"].append({"file": name, "tokens": n, "sha256": h.hexdigest()})

    def close(self) -> Path:
        """Finish the last shards, write index.json, rename the folder to `out`; returns `out`."""
        for split in list(self._open):
            self._close_shard(split)
        if self.splits["train"]["tokens"] == 0:
            raise UnmaskError("no document went to the training split; give more files or a lower --test-share")
        index = {"format": FORMAT, "version": VERSION, "dtype": self.dtype.name, "vocab_size": self.vocab_size,
                 "separator_id": self.separator_id, "tokenizer_sha256": self.tokenizer_sha256,
                 "total_tokens": sum(s["tokens"] for s in self.splits.values()), **self.meta,
                 "splits": self.splits}
        path = self.tmp / INDEX
        path.write_text(json.dumps(index, indent=1))
        with open(path) as f:
            os.fsync(f.fileno())
        self.tmp.rename(self.out)
        return self.out

    def abort(self) -> None:
        for f, *_ in self._open.values():
            f.close()
        self._open.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self.abort()


def find_separator(tokenizer, name: str = "") -> int:
    """The id of `name`, or of the first end-of-text token of `SEPARATORS` the tokenizer has."""
    for token in (name,) if name else SEPARATORS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    if name:
        raise UnmaskError(f"the tokenizer has no token {name!r}; name one it has with --separator")
    raise UnmaskError(f"the tokenizer has no end-of-text token ({', '.join(SEPARATORS)}); name one with --separator")


def held_out_files(files: list[Path], root: Path, test_share: float) -> set[Path]:
    """The files of the held-out split: SHA-1 of the path relative to `root` in the lowest `test_share`,
    or else the one of lowest hash; none when `test_share` is 0."""
    if not test_share:
        return set()
    if len(files) < 2:
        raise UnmaskError(f"{len(files)} file cannot be split into training and held-out documents; give "
                          "several files (split a large one) or --test-share 0")
    names = {f: (f.relative_to(root) if f.is_relative_to(root) else Path(f.name)).as_posix() for f in files}
    test = {f for f, name in names.items() if split_of(name, test_share) == "test"}
    return test or {min(files, key=lambda f: hashlib.sha1(names[f].encode()).digest())}


def _documents(files: list[Path], test: set[Path], skips: Skips) -> Iterator[list[tuple[str, str, int]]]:
    """Batches of (split, text, bytes read), about BATCH_BYTES of text each, reading one file at a time."""
    batch, size = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            skips.add(path, "not UTF-8 text")
            continue
        if not text:
            skips.add(path, "empty file")
            continue
        batch.append(("test" if path in test else "train", text, path.stat().st_size))
        size += len(text)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def prepare(source: str | Path, tokenizer: Path, out: Path, *, shard_mb: float = 256, test_share: float = 0.01,
            separator: str = "", suffixes: tuple[str, ...] | None = None, progress: bool = True) -> dict:
    """Tokenise the files `source` names (a file, folder or glob; `source.expand`) with the
    `tokenizers` file `tokenizer` into a shard set at `out`; returns its index. Token ids are the
    tokenizer's `encode(text, add_special_tokens=False).ids`: no per-document specials but the separator."""
    if not 0 <= test_share < 1:
        raise UnmaskError(f"--test-share must lie in [0, 1), got {test_share}")
    tokenizer = Path(tokenizer)
    if not tokenizer.is_file():
        raise UnmaskError(f"--tokenizer {tokenizer} is not a file; give a tokenizer.json")
    tk = _need_tokenizers()
    try:
        tok = tk.Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # the tokenizers library raises its own exception types
        raise UnmaskError(f"{tokenizer} is not a tokenizers file: {str(e).splitlines()[0]}") from None
    files = expand(source, suffixes)
    root = Path(source) if Path(source).is_dir() else Path(os.path.commonpath([f.parent for f in files]))
    test, skips = held_out_files(files, root, test_share), Skips()
    meta = {"source": str(source), "test_share": test_share, "files": len(files)}
    from tqdm.auto import tqdm

    with ShardWriter(out, vocab_size=tok.get_vocab_size(), separator_id=find_separator(tok, separator),
                     tokenizer=tokenizer, shard_mb=shard_mb, meta=meta) as writer, \
            tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="prepare",
                 disable=not progress, leave=False) as bar:
        for batch in _documents(files, test, skips):
            encoded = tok.encode_batch_fast([text for _, text, _ in batch], add_special_tokens=False)
            for (split, _, size), enc in zip(batch, encoded, strict=True):
                writer.add(split, np.asarray(enc.ids, dtype=np.int64))
                bar.update(size)
        if test_share and not writer.splits["test"]["documents"]:
            raise UnmaskError("no held-out document could be read (the held-out files were empty or not UTF-8); "
                              "give a larger --test-share")
        writer.meta["skipped"] = skips.to_dict()
        writer.close()
    return read_index(out)


# reading ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    path: Path
    tokens: int
    sha256: str


@dataclass(frozen=True)
class ShardSet:
    """A prepared shard set, its index checked and each shard's size matched to its token count."""
    folder: Path
    index: dict
    dtype: np.dtype
    splits: dict[str, tuple[Shard, ...]]

    @property
    def vocab_size(self) -> int:
        return self.index["vocab_size"]

    @property
    def tokenizer_sha256(self) -> str:
        return self.index["tokenizer_sha256"]

    def tokens(self, split: str) -> int:
        return sum(s.tokens for s in self.splits[split])


def is_shard_set(path: str | Path) -> bool:
    """True when `path` is a folder holding an index.json of this format (whatever its state)."""
    index = Path(path).expanduser() / INDEX
    if not str(path) or not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_index(folder: str | Path) -> dict:
    folder = Path(folder).expanduser()
    path = folder / INDEX
    if not path.is_file():
        what = "no such folder" if not folder.exists() else f"it holds no {INDEX}"
        raise UnmaskError(f"{folder} is not a shard set ({what}); make one with `unmask prepare`")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(folder, f"{INDEX} is not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UnmaskError(f"{path} is not the index of an unmask shard set")
    if index.get("version") != VERSION:
        raise UnmaskError(f"{path} is of shard format version {index.get('version')}; this unmask reads {VERSION}")
    return index


def open_shards(folder: str | Path) -> ShardSet:
    """The shard set at `folder`: its index read and every shard's byte size checked (no read of the
    tokens). A missing index, a missing or truncated shard is a one-line UnmaskError."""
    folder = Path(folder).expanduser()
    index = read_index(folder)
    try:
        dtype = np.dtype(index["dtype"]).newbyteorder("<")
        if dtype != token_dtype(index["vocab_size"]):
            raise _damaged(folder, f"dtype {index['dtype']} does not fit {index['vocab_size']} tokens")
        splits = {name: tuple(Shard(folder / s["file"], int(s["tokens"]), s["sha256"])
                              for s in index["splits"][name]["shards"]) for name in SPLITS}
    except (KeyError, TypeError, ValueError) as e:
        raise _damaged(folder, f"{INDEX} lacks or garbles {e}") from None
    for shard in (s for split in splits.values() for s in split):
        want = shard.tokens * dtype.itemsize
        try:
            have = shard.path.stat().st_size
        except FileNotFoundError:
            raise _damaged(folder, f"{shard.path.name} is missing") from None
        if have != want:
            raise _damaged(folder, f"{shard.path.name} holds {have} bytes, {INDEX} says {want}")
    return ShardSet(folder, index, dtype, splits)


def verify(folder: str | Path) -> ShardSet:
    """`open_shards`, then every shard's SHA-256 recomputed and compared with the index."""
    shards = open_shards(folder)
    for shard in (s for split in shards.splits.values() for s in split):
        if file_digest(shard.path) != shard.sha256:
            raise _damaged(shards.folder, f"{shard.path.name} does not match its checksum")
    return shards


def check_tokenizer(shards: ShardSet, tokenizer: Path) -> None:
    """Refuse a tokenizer other than the one the shards were made with (compared by digest)."""
    if file_digest(tokenizer) != shards.tokenizer_sha256:
        raise UnmaskError(f"{tokenizer} is not the tokenizer shard set {shards.folder} was made with "
                          f"(digest {shards.tokenizer_sha256[:12]}); use its {TOKENIZER} or prepare the shards again")
