"""Long source files of the standard library as documents of sentence blocks, for SMITH (Yang et
al. 2020, "Beyond 512 Tokens: Siamese Multi-depth Transformer-based Hierarchical Encoder for
Long-Form Document Matching", arXiv:2004.12297): a document is cut into blocks that each hold as
many whole lines as fit a token budget, as SMITH fills each block greedily with whole sentences.

Lines play the part of sentences. Each line is tokenised on its own with the corpus's byte-level BPE
(`data/code.py`, the `text` extra), so no token crosses a line and decoding a block's tokens gives
its lines back exactly. A line longer than the budget is cut into pieces of the budget (SMITH splits
an over-long sentence the same way). `cut_blocks` keeps every token once, in order.

Training documents are runs of `blocks` consecutive blocks from the training files (non-overlapping,
the tail shorter than a document dropped). The matching task pairs, in each held-out file, a query
with its continuation: `file_halves` (the file's first half against its second half; the first
`blocks` blocks of each) and `window_halves` (every run of 2 x `blocks` blocks cut in two), so a
model that encodes documents must find each query's other half among all the held-out halves.

Documents are stored as Long[M, K, L] (K blocks of up to L tokens), -1 marking padding.

    >>> corpus = load_long_files(block_length=32, blocks=8)     # doctest: +SKIP
    >>> corpus.train.shape                                      # doctest: +SKIP
    torch.Size([..., 8, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .code import CodeTokenizer, read_source, split_of, stdlib_files, stdlib_root, train_tokenizer

PAD = -1


def cut_blocks(lines: list[list[int]], budget: int) -> list[list[int]]:
    """Greedy blocks of whole lines: a line joins the open block while the block stays within
    `budget` tokens, else it opens a new one; a line longer than `budget` becomes pieces of `budget`
    (its last piece may open the next block's run). Empty lines carry no tokens and vanish.
    Concatenating the blocks gives the concatenated lines back."""
    if budget < 1:
        raise ValueError(f"a block's token budget must be >= 1, got {budget}")
    blocks: list[list[int]] = []
    current: list[int] = []
    for line in lines:
        pieces = [line[i:i + budget] for i in range(0, len(line), budget)]
        for piece in pieces:
            if current and len(current) + len(piece) > budget:
                blocks.append(current)
                current = []
            current = current + piece
    if current:
        blocks.append(current)
    return blocks


def encode_lines(tokenizer: CodeTokenizer, text: str) -> list[list[int]]:
    """The text's lines (with their line ends), each tokenised on its own."""
    return [tokenizer.encode(line) for line in text.splitlines(keepends=True)]


def pack(docs: list[list[list[int]]], blocks: int, block_length: int) -> torch.Tensor:
    """Documents (lists of up to `blocks` blocks of up to `block_length` ids) -> Long[M, K, L],
    padded with -1."""
    out = torch.full((len(docs), blocks, block_length), PAD, dtype=torch.long)
    for i, doc in enumerate(docs):
        if not 0 < len(doc) <= blocks:
            raise ValueError(f"document {i} has {len(doc)} blocks; a document holds 1 to {blocks}")
        for k, block in enumerate(doc):
            out[i, k, :len(block)] = torch.tensor(block, dtype=torch.long)
    return out


@dataclass(frozen=True)
class MatchingPairs:
    queries: torch.Tensor  # Long[P, K, L]: the first halves
    answers: torch.Tensor  # Long[P, K, L]: the second halves, answers[i] continues queries[i]
    files: tuple[str, ...]  # the file of each pair


@dataclass(frozen=True)
class LongFiles:
    tokenizer: CodeTokenizer
    train: torch.Tensor  # Long[M, K, L] training documents
    file_halves: MatchingPairs
    window_halves: MatchingPairs


def _windows(blocks_of_file: list[list[int]], size: int) -> list[list[list[int]]]:
    return [blocks_of_file[i:i + size] for i in range(0, len(blocks_of_file) - size + 1, size)]


def load_long_files(block_length: int = 32, blocks: int = 8, vocab_size: int = 4096,
                    tokenizer_path: Path | None = None, min_file_bytes: int = 4096,
                    max_file_bytes: int = 100_000, test_share: float = 0.1,
                    root: Path | None = None) -> LongFiles:
    """The standard library's files of at least `min_file_bytes` as block documents (see the module
    docstring). The tokenizer is read from `tokenizer_path` when that file exists, else trained on
    the training files (all sizes) and saved there."""
    if blocks < 1 or block_length < 1:
        raise ValueError(f"blocks and block_length must be >= 1, got {blocks} and {block_length}")
    root = Path(root) if root is not None else stdlib_root()
    files = stdlib_files(max_file_bytes, root)
    train_files = [f for f in files if split_of(f, test_share) == "train"]
    if tokenizer_path is not None and Path(tokenizer_path).exists():
        tokenizer = CodeTokenizer.load(tokenizer_path)
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"{tokenizer_path} has {tokenizer.vocab_size} tokens, the config asks for {vocab_size}")
    else:
        tokenizer = train_tokenizer([t for t in (read_source(root / f) for f in train_files) if t], vocab_size)
        if tokenizer_path is not None:
            Path(tokenizer_path).parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tokenizer_path)
    train_docs: list[list[list[int]]] = []
    halves: dict[str, tuple[list, list, list]] = {"file": ([], [], []), "window": ([], [], [])}
    for rel in files:
        if (root / rel).stat().st_size < min_file_bytes:
            continue
        text = read_source(root / rel)
        if text is None:
            continue
        cut = cut_blocks(encode_lines(tokenizer, text), block_length)
        if split_of(rel, test_share) == "train":
            train_docs += _windows(cut, blocks)
            continue
        mid = len(cut) // 2
        if mid:
            queries, answers, names = halves["file"]
            queries.append(cut[:mid][:blocks])
            answers.append(cut[mid:][:blocks])
            names.append(rel.as_posix())
        for window in _windows(cut, 2 * blocks):
            queries, answers, names = halves["window"]
            queries.append(window[:blocks])
            answers.append(window[blocks:])
            names.append(rel.as_posix())
    if not train_docs or not halves["file"][0]:
        raise ValueError(f"no training document or no held-out file of >= {min_file_bytes} bytes under {root}")

    def pairs(kind: str) -> MatchingPairs:
        q, a, names = halves[kind]
        return MatchingPairs(pack(q, blocks, block_length), pack(a, blocks, block_length), tuple(names))

    return LongFiles(tokenizer, pack(train_docs, blocks, block_length), pairs("file"), pairs("window"))
