"""Users' own molecules for the `genmol` recipe (`data.source=PATH`): SMILES read from `.smi` and `.csv`
files (a file, or a folder or glob of them), checked one by one with RDKit and safe-mol.

Formats:
- `.csv`: a header row and a column of SMILES named by `data.smiles_column` (default `smiles`);
- `.smi` (and any other single file named directly): one SMILES a line, optionally followed by
  blanks and a name; blank lines are passed over.

Each SMILES goes through the steps of the bundled molecules (`molecules.canonical_smiles`: largest
component, no stereo or isotopes; `molecules.encode_safe`: cut at BRICS bonds). Counted skips, with
the line (`FILE:LINE`): an empty value ("missing SMILES"), a SMILES RDKit rejects ("invalid
SMILES"), one safe-mol cannot write as SAFE ("no SAFE form"). Refused in one line naming the file: a
`.csv` without the column, a file that is not UTF-8, a file with no valid SMILES at all (most often
the wrong column or not a SMILES file). Duplicates are kept here and counted by `build_corpus`, which
also holds out 10% by the hash of the canonical SMILES.

    mols = read_molecules("library.csv", column="smiles")   # doctest: +SKIP
    corpus = molecules.build_corpus(list(mols.smiles))      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .molecules import canonical_smiles, encode_safe, need_chem
from .source import DataStats, Skips, expand, unreadable

SUFFIXES = (".smi", ".csv")


@dataclass(frozen=True)
class UserMolecules:
    smiles: tuple[str, ...]  # canonical SMILES of every valid molecule, in file order (duplicates kept)
    stats: DataStats


def read_molecules(source: str, column: str = "smiles") -> UserMolecules:
    """The valid molecules of `source` and what was read and skipped (see the module docstring)."""
    need_chem()
    files = expand(source, SUFFIXES)
    skips, kept = Skips(), []
    for path in files:
        before, counted = len(kept), skips.counts.copy()
        for where, value in (_csv_rows(path, column) if path.suffix.lower() == ".csv" else _smi_rows(path)):
            if not value:
                skips.add(where, "missing SMILES")
                continue
            canonical = canonical_smiles(value)
            if canonical is None:
                skips.add(where, "invalid SMILES")
            elif encode_safe(canonical) is None:
                skips.add(where, "no SAFE form")
            else:
                kept.append(canonical)
        if len(kept) == before:
            reasons = "; ".join(f"{r}: {n}" for r, n in sorted((skips.counts - counted).items()))
            raise unreadable(path, f"no valid SMILES in it ({reasons or 'no rows'})")
    return UserMolecules(tuple(kept), DataStats(str(source), files=len(files), examples=len(kept), skips=skips))


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise unreadable(path, "not UTF-8 text") from None


def _smi_rows(path: Path):
    """(FILE:LINE, SMILES) of a .smi file: the first blank-separated field of each non-blank line."""
    for i, line in enumerate(_text(path).splitlines()):
        if line.strip():
            yield f"{path.name}:{i + 1}", line.split()[0]


def _csv_rows(path: Path, column: str):
    """(FILE:LINE, value) of a .csv file's `column`; the header is line 1."""
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    names = reader.fieldnames or []
    if column not in names:
        shown = ", ".join(names) or "none"
        raise unreadable(path, f"no column {column!r} (columns: {shown}); set data.smiles_column")
    for row in reader:
        yield f"{path.name}:{reader.line_num}", (row.get(column) or "").strip()
