"""A hybrid rule-plus-subword tokenizer for code: rules first, then BPE inside what the rules leave.

Tokens with Meaning (Bayram et al. 2025, "Tokens with Meaning: A Hybrid Tokenization Approach for
NLP", arXiv:2508.14292): segment text by rules (roots, affixes, a marker token for case) so that
tokens keep their meaning, and let BPE cover only what the rules leave. The paper does this for
Turkish words; here the words are Python identifiers and the prose of comments and docstrings.

The rules cut the text into pieces, and no token ever crosses a piece's edge:
1. blanks (`\\s+`), punctuation runs (`[^\\w\\s]+`) and words (`\\w+`) are pieces;
2. a word splits into runs of underscores, of digits and of letters; an ASCII run of letters splits
   further into lower-case runs, a capital with its lower-case tail, and all-capital runs (which
   leave their last capital to a following capitalised part: `HTTPResponse` -> `HTTP`, `Response`);
   a run of letters with a non-ASCII one stays whole;
3. case: an ASCII part that is capitalised becomes `<cap>` and its lower-case form, an all-capital
   part of two letters or more becomes `<upper>` and its lower-case form (the paper's UPPERCASE
   marker: `Name`, `NAME` and `name` share one root token);
4. affixes: a lower-case part that is not itself a root (a part seen whole `min_root_count` times
   in the training text) loses one prefix of `PREFIXES` and one suffix of `SUFFIXES` when what is
   left is a root (`isinstance` -> `is` + `instance`, `names` -> `name` + `s`); each affix has an id
   of its own, apart from the same letters met as a plain word.
So `getHTTPResponse_code2` becomes `get` `<upper>` `http` `<cap>` `response` `_` `code` `2`, and
`__init__` becomes `__` `init` `__`. A byte-level BPE (Hugging Face `tokenizers`) trained on the
pieces of the training files then encodes each piece on its own.

Ids: the code recipes' special tokens 0..9 (`data/code.py`), `<cap>` 10, `<upper>` 11, the affixes,
then the BPE tokens; `vocab_size` counts them all. Decoding is exact (byte for byte): `<cap>`
upper-cases the next ASCII letter, `<upper>` the run of ASCII lower-case letters that follows it.

    >>> tok = train_hybrid_tokenizer(texts, vocab_size=4096)          # doctest: +SKIP
    >>> tok.decode(tok.encode(text)) == text                          # doctest: +SKIP
    True
    >>> corpus = load_hybrid_corpus(length=128, vocab_size=4096)      # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

import torch

from . import code

CAP, UPPER = "<cap>", "<upper>"
PREFIXES = ("get", "set", "is", "has", "un", "re", "sub", "pre", "add", "del", "to", "in")
SUFFIXES = ("s", "es", "ed", "er", "ers", "ing", "ings", "ion", "ions", "able", "al", "ly", "ment", "ness", "or")
AFFIXES = tuple(f"{p}-" for p in PREFIXES) + tuple(f"-{s}" for s in SUFFIXES)
CAP_ID = len(code.SPECIAL)
UPPER_ID = CAP_ID + 1
AFFIX_BASE = UPPER_ID + 1
BPE_BASE = AFFIX_BASE + len(AFFIXES)
SEP = "\ue000"  # joins pieces for BPE training (a private-use character)
AFFIX_INDEX = {a: AFFIX_BASE + i for i, a in enumerate(AFFIXES)}
BY_LENGTH = (sorted(PREFIXES, key=len, reverse=True), sorted(SUFFIXES, key=len, reverse=True))

PIECE = re.compile(r"\s+|[^\w\s]+|(\w+)")  # group 1: a word
RUN = re.compile(r"_+|\d+|[^\W\d_]+")  # underscores, digits, letters
CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]+(?![a-z])|[A-Z][a-z]+|[a-z]+")
LOWER = re.compile(r"[a-z]+")


def word_parts(word: str) -> list[str]:
    """Rule 2: 'getHTTPResponse_code2' -> ['get', 'HTTP', 'Response', '_', 'code', '2']. A run of
    letters with a non-ASCII one ('École', 'naïveName') stays whole: the case rules are ASCII's."""
    out = []
    for run in RUN.findall(word):
        out += CAMEL.findall(run) if run.isascii() and run.isalpha() else [run]
    return out


def case_of(part: str) -> tuple[str | None, str]:
    """Rule 3: (marker or None, the part as the BPE sees it)."""
    if part.isascii() and part.isalpha() and part[0].isupper():
        if len(part) == 1 or part[1:].islower():
            return CAP, part.lower()  # 'Response', and a lone capital 'X'
        if part.isupper():
            return UPPER, part.lower()
    return None, part


@functools.lru_cache(maxsize=1 << 18)
def morphemes(part: str, roots: frozenset[str]) -> tuple[str, ...]:
    """Rule 4, on a lower-case part: ('is-', 'instance'), ('name', '-s'), or (part,). Affixes come back
    as their names in AFFIXES. Suffixes alone are tried first, then each prefix, longest first."""
    if not LOWER.fullmatch(part) or part in roots:
        return (part,)
    prefixes = [""] + [p for p in BY_LENGTH[0] if part.startswith(p)]
    suffixes = [""] + [s for s in BY_LENGTH[1] if part.endswith(s)]
    for pre in prefixes:
        for suf in suffixes:
            stem = part[len(pre) : len(part) - len(suf)]
            if (pre or suf) and stem in roots:
                return ((f"{pre}-",) if pre else ()) + (stem,) + ((f"-{suf}",) if suf else ())
    return (part,)


def rule_units(text: str, roots: frozenset[str]) -> list[tuple[str, int, int]]:
    """The rules over `text`: (unit, start, end) in order, with character offsets into `text`. A unit
    is a marker (CAP, UPPER; its span is its part's), an affix name (AFFIXES) or a piece of text for
    the BPE (lower-cased where a marker precedes it)."""
    out = []
    for m in PIECE.finditer(text):
        a = m.start()
        if m.group(1) is None:  # blanks, punctuation
            out.append((m.group(), a, m.end()))
            continue
        for part in word_parts(m.group(1)):
            b = a + len(part)
            marker, seen = case_of(part)
            if marker is not None:
                out.append((marker, a, b))
            at = a
            for unit in morphemes(seen, roots):
                n = len(unit.strip("-")) if unit in AFFIX_INDEX else len(unit)
                out.append((unit, at, at + n))
                at += n
            a = b
    return out


def rule_pieces(text: str, roots: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """The character spans no token may cross: every part, affix and stem (markers excluded)."""
    return [(a, b) for unit, a, b in rule_units(text, roots) if unit not in (CAP, UPPER)]


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def find_roots(texts: list[str], min_count: int = 5, min_length: int = 3) -> frozenset[str]:
    """Lower-case ASCII parts of words seen whole at least `min_count` times (case folded by rule 3)."""
    counts = Counter()
    for text in texts:
        for word in re.findall(r"\w+", text):
            for part in word_parts(word):
                seen = case_of(part)[1]
                if len(seen) >= min_length and LOWER.fullmatch(seen):
                    counts[seen] += 1
    return frozenset(w for w, c in counts.items() if c >= min_count)


class HybridTokenizer:
    """Rules, then BPE: `encode(text) -> list[int]`, `decode(ids) -> text`, exact. The interface of
    `code.CodeTokenizer` (`vocab_size`, `eos_id`, `sentinel_ids`, `encode_with_offsets`, `save`, `load`)."""

    def __init__(self, bpe, roots: frozenset[str]):
        self.bpe, self.roots = bpe, frozenset(roots)
        self.vocab_size = BPE_BASE + bpe.get_vocab_size()
        self.eos_id = code.SPECIAL.index(code.EOS_TOKEN)
        self.sentinel_ids = tuple(code.SPECIAL.index(s) for s in code.SENTINELS)
        to_byte = {c: b for b, c in byte_alphabet().items()}
        table = [s.encode() for s in code.SPECIAL] + [b"", b""] + [a.strip("-").encode() for a in AFFIXES]
        inverse = {i: t for t, i in bpe.get_vocab().items()}
        table += [bytes(to_byte[c] for c in inverse[i]) for i in range(bpe.get_vocab_size())]
        self.token_bytes = table  # id -> the bytes it writes (markers: none)
        self._cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}

    def _piece(self, piece: str) -> tuple[list[int], list[tuple[int, int]]]:
        if piece not in self._cache:
            enc = self.bpe.encode(piece)
            self._cache[piece] = ([BPE_BASE + i for i in enc.ids], enc.offsets)
        return self._cache[piece]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's character span in `text` (a marker's span is its part's)."""
        ids, offsets = [], []
        for unit, a, b in rule_units(text, self.roots):
            if unit == CAP or unit == UPPER:
                ids.append(CAP_ID if unit == CAP else UPPER_ID)
                offsets.append((a, b))
            elif unit in AFFIX_INDEX:
                ids.append(AFFIX_INDEX[unit])
                offsets.append((a, b))
            else:
                piece_ids, piece_offsets = self._piece(unit)
                ids += piece_ids
                offsets += [(a + s, a + e) for s, e in piece_offsets]
        return ids, offsets

    def encode(self, text: str) -> list[int]:
        return self.encode_with_offsets(text)[0]

    def decode(self, ids) -> str:
        """Exact for what `encode` wrote; any id sequence decodes (bad UTF-8 becomes U+FFFD)."""
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        out = bytearray()
        cap = upper = False
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary 0..{self.vocab_size - 1}")
            if i in (CAP_ID, UPPER_ID):
                cap, upper = i == CAP_ID, i == UPPER_ID
                continue
            for byte in self.token_bytes[i]:
                lower = 0x61 <= byte <= 0x7A
                if lower and (cap or upper):
                    byte -= 0x20
                cap = False
                upper = upper and lower  # the all-capital run ends at the first byte that is not a-z
                out.append(byte)
        return out.decode("utf-8", errors="replace")

    def save(self, path: Path) -> None:
        state = {"kind": "hybrid", "roots": sorted(self.roots), "prefixes": PREFIXES, "suffixes": SUFFIXES,
                 "bpe": json.loads(self.bpe.to_str())}
        Path(path).write_text(json.dumps(state))

    @staticmethod
    def load(path: Path) -> HybridTokenizer:
        tk = code._need_tokenizers()
        state = json.loads(Path(path).read_text())
        if state.get("kind") != "hybrid":
            raise ValueError(f"{path} is not a hybrid tokenizer file (no \"kind\": \"hybrid\")")
        if tuple(state["prefixes"]) != PREFIXES or tuple(state["suffixes"]) != SUFFIXES:
            raise ValueError(f"{path} was written with other affix lists than this version's")
        return HybridTokenizer(tk.Tokenizer.from_str(json.dumps(state["bpe"])), frozenset(state["roots"]))


def train_hybrid_tokenizer(texts: list[str], vocab_size: int = 8192, min_root_count: int = 5) -> HybridTokenizer:
    """Roots, then a byte-level BPE of `vocab_size - BPE_BASE` tokens trained on the rules' pieces of
    `texts`, so the whole vocabulary holds exactly `vocab_size` ids."""
    tk = code._need_tokenizers()
    from tokenizers import models, pre_tokenizers, trainers

    least = BPE_BASE + 256
    if vocab_size < least:
        raise ValueError(f"vocab_size must be at least {least} (specials, markers, affixes, bytes), got {vocab_size}")
    roots = find_roots(texts, min_root_count)
    bpe = tk.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(SEP, behavior="removed"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - BPE_BASE, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def pieces():
        for text in texts:
            yield SEP.join(u for u, _, _ in rule_units(text, roots) if u not in (CAP, UPPER) and u not in AFFIX_INDEX)

    bpe.train_from_iterator(pieces(), trainer=trainer)
    # encoding feeds one piece at a time, which may itself hold SEP: no split there
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer = HybridTokenizer(bpe, roots)
    if tokenizer.vocab_size != vocab_size:
        raise ValueError(f"the training text gives only {tokenizer.vocab_size} tokens, fewer than vocab_size="
                         f"{vocab_size}; give more text or a smaller vocabulary")
    return tokenizer


def load_hybrid_corpus(length: int = 128, vocab_size: int = 8192, tokenizer_path: Path | None = None,
                       max_file_bytes: int = 100_000, test_share: float = 0.1,
                       root: Path | None = None) -> code.CodeCorpus:
    """`code.load_corpus` with the hybrid tokenizer: the same files, split and chunking; the tokenizer
    is read from `tokenizer_path` when that file exists, else trained on the training files (and saved
    there when a path is given)."""
    if length < 2:
        raise ValueError(f"chunk length must be >= 2, got {length}")
    root = Path(root) if root is not None else code.stdlib_root()
    files = code.stdlib_files(max_file_bytes, root)
    train_files = [f for f in files if code.split_of(f, test_share) == "train"]
    test_files = [f for f in files if code.split_of(f, test_share) == "test"]
    if tokenizer_path is not None and Path(tokenizer_path).exists():
        tokenizer = HybridTokenizer.load(tokenizer_path)
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"{tokenizer_path} has {tokenizer.vocab_size} tokens, asked for {vocab_size}")
    else:
        texts = [t for t in (code.read_source(root / f) for f in train_files) if t is not None]
        tokenizer = train_hybrid_tokenizer(texts, vocab_size)
        if tokenizer_path is not None:
            Path(tokenizer_path).parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tokenizer_path)
    return code.CodeCorpus(tokenizer, code._split(tokenizer, root, train_files, length),
                           code._split(tokenizer, root, test_files, length), root)
