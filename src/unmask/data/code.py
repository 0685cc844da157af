"""Python source code: the standard library's own `.py` files as a corpus of fixed-length chunks.

The corpus is the installed standard library (`sysconfig.get_paths()["stdlib"]`) without
site-packages, test suites, generated tables (encodings, pydoc_data) and the bundled IDE and
converters (idlelib, lib2to3, turtledemo, tkinter); files over `max_file_bytes` are skipped. Each file
goes to the held-out split when the SHA-1 of its path (relative to the stdlib) falls in the lowest
`test_share` of the hash range, so the split never depends on which other files exist.

Tokens are a byte-level BPE (Hugging Face `tokenizers`, the `text` extra) trained on the training
files only and saved as `tokenizer.json` in the run folder; decoding is lossless. Special tokens come
first: `<|endoftext|>`, `<eos>` and the CM3 sentinels `<mask:0>`... (P17). Each file is cut into
non-overlapping windows of `length` tokens (a file's tail shorter than a window is dropped).

With every chunk come, per token, two ids found with Python's own `tokenize` (whole-word and entity
masking read them): `word_ids`, the Python lexical token (identifier, operator, number...) that holds
the BPE token's first non-blank character (inside comments and strings: the blank-separated piece),
and `entity_ids`, the same id where that lexical token is an identifier (a NAME that is not a
keyword), else -1. Blank tokens get ids of their own.

    >>> corpus = load_corpus(length=128)                    # doctest: +SKIP
    >>> corpus.train.tokens.shape                           # doctest: +SKIP
    torch.Size([..., 128])
"""

from __future__ import annotations

import hashlib
import io
import keyword
import re
import sysconfig
import tokenize as pytokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..layout import Layout

SPECIAL = ("<|endoftext|>", "<eos>") + tuple(f"<mask:{i}>" for i in range(8))
EOS_TOKEN = "<eos>"
SENTINELS = tuple(f"<mask:{i}>" for i in range(8))
EXCLUDED_DIRS = frozenset({
    "site-packages", "test", "tests", "idle_test", "idlelib", "lib2to3", "turtledemo", "tkinter",
    "encodings", "pydoc_data", "ensurepip", "__pycache__", "lib-dynload",
})


def layout(length: int) -> Layout:
    return Layout.seq(length, name="code")


def _need_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "code data needs Hugging Face `tokenizers`; install the text extra: pip install 'unmask[text]'"
        ) from None
    return tokenizers


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_file_bytes: int = 100_000, root: Path | None = None) -> list[Path]:
    """Sorted relative paths of the corpus files."""
    root = Path(root) if root is not None else stdlib_root()
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in EXCLUDED_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        if path.stat().st_size > max_file_bytes or path.stat().st_size == 0:
            continue
        out.append(rel)
    return sorted(out)


def split_of(rel_path: Path | str, test_share: float = 0.1) -> str:
    """'test' when the path's SHA-1, read as a number in [0, 1), is below `test_share`."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must lie in (0, 1), got {test_share}")
    digest = hashlib.sha1(Path(rel_path).as_posix().encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_share else "train"


def package_of(rel_path: Path | str) -> str:
    """The top-level package a file belongs to, or '' for a top-level module."""
    parts = Path(rel_path).parts
    return parts[0] if len(parts) > 1 else ""


def read_source(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


# tokenizer ----------------------------------------------------------------------------------------
class CodeTokenizer:
    """A byte-level BPE: `encode(text) -> list[int]`, `decode(ids) -> text`, lossless."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        if [tokenizer.token_to_id(s) for s in SPECIAL] != list(range(len(SPECIAL))):
            raise ValueError(f"a code tokenizer holds the special tokens {SPECIAL} as ids 0..{len(SPECIAL) - 1}")
        self.vocab_size = tokenizer.get_vocab_size()
        self.eos_id = tokenizer.token_to_id(EOS_TOKEN)
        self.sentinel_ids = tuple(tokenizer.token_to_id(s) for s in SENTINELS)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer.encode(text)
        return enc.ids, enc.offsets

    def decode(self, ids) -> str:
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @staticmethod
    def load(path: Path) -> CodeTokenizer:
        tk = _need_tokenizers()
        return CodeTokenizer(tk.Tokenizer.from_file(str(path)))


def train_tokenizer(texts: list[str], vocab_size: int = 8192) -> CodeTokenizer:
    """Byte-level BPE trained on `texts` (no normaliser, no prefix space: decoding is exact)."""
    tk = _need_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL)} (bytes + specials), got {vocab_size}")
    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return CodeTokenizer(tok)


# python lexical groups ----------------------------------------------------------------------------
def python_groups(text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per character: (group id, is identifier), from Python's `tokenize`; blanks are -1.

    Returns (Int64[len(text)], Bool[len(text)]), or None if the text does not tokenize.
    """
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    group = np.full(len(text), -1, dtype=np.int64)
    ident = np.zeros(len(text), dtype=bool)
    try:
        tokens = list(pytokenize.generate_tokens(io.StringIO(text).readline))
    except (pytokenize.TokenError, SyntaxError, IndentationError):
        return None
    next_id = 0
    for tok in tokens:
        if tok.type in (pytokenize.ENDMARKER, pytokenize.DEDENT, pytokenize.INDENT) or not tok.string.strip():
            continue
        (r0, c0), (r1, c1) = tok.start, tok.end
        a = line_starts[r0 - 1] + c0
        b = line_starts[r1 - 1] + c1
        if tok.type in (pytokenize.COMMENT, pytokenize.STRING):
            # prose inside comments and strings: one word per blank-separated piece, not one per literal
            for m in re.finditer(r"\S+", text[a:b]):
                group[a + m.start() : a + m.end()] = next_id
                next_id += 1
            continue
        group[a:b] = next_id
        ident[a:b] = tok.type == pytokenize.NAME and not keyword.iskeyword(tok.string)
        next_id += 1
    return group, ident


def token_groups(text: str, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per BPE token: (word id, entity id); see the module docstring. Int64[T] each."""
    found = python_groups(text)
    n = len(offsets)
    words = np.empty(n, dtype=np.int64)
    entities = np.full(n, -1, dtype=np.int64)
    blank_id = 1 << 40  # blank tokens get ids far above any lexical token's index
    for j, (a, b) in enumerate(offsets):
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        if found is None or lead == len(piece):
            words[j] = blank_id + j
            continue
        g = int(found[0][a + lead])
        words[j] = g if g >= 0 else blank_id + j
        if g >= 0 and found[1][a + lead]:
            entities[j] = g
    return words, entities


# chunks -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeSplit:
    tokens: torch.Tensor  # Long[M, L]
    word_ids: torch.Tensor  # Long[M, L]: Python lexical token per BPE token
    entity_ids: torch.Tensor  # Long[M, L]: identifier id, -1 elsewhere
    file_index: torch.Tensor  # Long[M]: index into `files`
    start: torch.Tensor  # Long[M]: first token of the chunk within its file
    files: tuple[str, ...]  # relative paths

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def head(self, n: int) -> CodeSplit:
        """The first n chunks."""
        return CodeSplit(self.tokens[:n], self.word_ids[:n], self.entity_ids[:n], self.file_index[:n],
                         self.start[:n], self.files)

    def packages(self) -> list[str]:
        return [package_of(self.files[i]) for i in self.file_index.tolist()]

    def data(self) -> dict[str, torch.Tensor]:
        """What the trainer batches: tokens and the ids maskers read."""
        return {"tokens": self.tokens, "word_ids": self.word_ids, "entity_ids": self.entity_ids}


@dataclass(frozen=True)
class CodeCorpus:
    tokenizer: CodeTokenizer
    train: CodeSplit
    test: CodeSplit
    root: Path

    def source(self, rel_path: str) -> str:
        return read_source(self.root / rel_path)


def chunk_file(ids: list[int], words: np.ndarray, entities: np.ndarray, length: int):
    """Non-overlapping windows of `length`; returns (tokens, words, entities, starts) arrays."""
    n = len(ids) // length
    if n == 0:
        return None
    cut = n * length
    starts = np.arange(n) * length
    return (np.asarray(ids[:cut]).reshape(n, length), words[:cut].reshape(n, length),
            entities[:cut].reshape(n, length), starts)


def _split(tokenizer: CodeTokenizer, root: Path, files: list[Path], length: int) -> CodeSplit:
    toks, words, ents, fidx, starts, names = [], [], [], [], [], []
    for path in files:
        text = read_source(root / path)
        if text is None:
            continue
        ids, offsets = tokenizer.encode_with_offsets(text)
        w, e = token_groups(text, offsets)
        pieces = chunk_file(ids, w, e, length)
        names.append(path.as_posix())
        if pieces is None:
            continue
        t, w, e, s = pieces
        toks.append(t)
        words.append(w)
        ents.append(e)
        starts.append(s)
        fidx.append(np.full(len(s), len(names) - 1))
    if not toks:
        raise ValueError(f"no file of {len(files)} holds a chunk of {length} tokens")

    def cat(xs):
        return torch.from_numpy(np.concatenate(xs)).long()

    return CodeSplit(cat(toks), cat(words), cat(ents), cat(fidx), cat(starts), tuple(names))


def load_corpus(
    length: int = 128,
    vocab_size: int = 8192,
    tokenizer_path: Path | None = None,
    max_file_bytes: int = 100_000,
    test_share: float = 0.1,
    root: Path | None = None,
) -> CodeCorpus:
    """The chunked corpus. The tokenizer is read from `tokenizer_path` if that file exists, else it
    is trained on the training files and saved there (when a path is given)."""
    if length < 2:
        raise ValueError(f"chunk length must be >= 2, got {length}")
    root = Path(root) if root is not None else stdlib_root()
    files = stdlib_files(max_file_bytes, root)
    train_files = [f for f in files if split_of(f, test_share) == "train"]
    test_files = [f for f in files if split_of(f, test_share) == "test"]
    if tokenizer_path is not None and Path(tokenizer_path).exists():
        tokenizer = CodeTokenizer.load(tokenizer_path)
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"{tokenizer_path} has {tokenizer.vocab_size} tokens, the config asks for {vocab_size}")
    else:
        texts = [t for t in (read_source(root / f) for f in train_files) if t is not None]
        tokenizer = train_tokenizer(texts, vocab_size)
        if tokenizer_path is not None:
            Path(tokenizer_path).parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tokenizer_path)
    return CodeCorpus(tokenizer, _split(tokenizer, root, train_files, length),
                      _split(tokenizer, root, test_files, length), root)
