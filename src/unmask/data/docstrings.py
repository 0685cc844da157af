"""(docstring, body) pairs of the standard library's functions and classes: a retrieval task on
code, find a function's body from its docstring (RetroMAE v2 / DupMAE, P27, is measured on it).

Each function, method and class of the corpus files of `data/code.py` (the same files, the same
split by the SHA-1 of the path) that has a docstring (`ast.get_docstring`) gives one pair: the
docstring, cleaned as `inspect.cleandoc` does, and the source of its body statements after the
docstring, dedented. Bodies shorter than `min_body_chars` (a lone `pass` or `...`) are left out. The
order is the sorted file order, then `ast.walk`'s, so the pairs are the same on every run.

Texts become fixed-length rows `[CLS] t1 .. tn [PAD] ..` (`encode_texts`): [CLS] is the code
tokenizer's `<|endoftext|>` and padding its `<eos>`, two special tokens that never occur in the
texts; every id below `len(SPECIAL)` is special, the rest are ordinary tokens.

    >>> pairs = load_pairs()                                 # doctest: +SKIP
    >>> len(pairs.train), len(pairs.test)                    # doctest: +SKIP
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from ..layout import Layout
from .code import SPECIAL, CodeTokenizer, read_source, split_of, stdlib_files, stdlib_root

CLS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<eos>"
FIRST_ORDINARY = len(SPECIAL)  # ids below are special tokens


@dataclass(frozen=True)
class Pair:
    docstring: str
    body: str
    file: str  # relative path
    name: str  # qualified by its enclosing classes and functions


@dataclass(frozen=True)
class DocstringPairs:
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]


def layout(length: int) -> Layout:
    return Layout.seq(length, name="text")


def body_source(node: ast.AST, source: str) -> str:
    """The dedented source of a def's or class's statements after its docstring ('' if none)."""
    rest = node.body[1:]  # body[0] is the docstring
    if not rest:
        return ""
    lines = source.splitlines(keepends=True)
    # a decorated def starts at its first decorator, above its own line
    first = min([rest[0].lineno] + [d.lineno for d in getattr(rest[0], "decorator_list", ())]) - 1
    text = "".join(lines[first:rest[-1].end_lineno])
    return textwrap.dedent(text).strip("\n")


def file_pairs(source: str, rel_path: str, min_body_chars: int = 20) -> list[Pair]:
    """The pairs of one file's source ([] when it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names: dict[ast.AST, str] = {}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        name = names.get(node, node.name)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[child] = f"{name}.{child.name}"
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            continue
        body = body_source(node, source)
        if len(body) >= min_body_chars:
            out.append(Pair(doc, body, rel_path, name))
    return out


def load_pairs(test_share: float = 0.1, max_file_bytes: int = 100_000, min_body_chars: int = 20,
               root: Path | None = None) -> DocstringPairs:
    """The pairs of the training and the held-out files (`data/code.py`'s split)."""
    root = Path(root) if root is not None else stdlib_root()
    split: dict[str, list[Pair]] = {"train": [], "test": []}
    for rel in stdlib_files(max_file_bytes, root):
        text = read_source(root / rel)
        if text is not None:
            split[split_of(rel, test_share)].extend(file_pairs(text, rel.as_posix(), min_body_chars))
    return DocstringPairs(tuple(split["train"]), tuple(split["test"]))


def encode_texts(tokenizer: CodeTokenizer, texts: list[str], length: int) -> torch.Tensor:
    """Long[M, length]: [CLS], the text's first length - 1 tokens, then padding."""
    if length < 2:
        raise ValueError(f"length must be >= 2 ([CLS] and one token), got {length}")
    cls_id, pad_id = tokenizer.tokenizer.token_to_id(CLS_TOKEN), tokenizer.tokenizer.token_to_id(PAD_TOKEN)
    out = torch.full((len(texts), length), pad_id, dtype=torch.long)
    out[:, 0] = cls_id
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)[: length - 1]
        out[i, 1 : 1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def special_ids(tokenizer: CodeTokenizer) -> tuple[int, int]:
    """(cls_id, pad_id) of `encode_texts`."""
    return tokenizer.tokenizer.token_to_id(CLS_TOKEN), tokenizer.tokenizer.token_to_id(PAD_TOKEN)
