"""Several spellings of each training molecule: randomised SAFE strings for the masked model and
randomised SMILES for the autoregressive baseline.

A molecule has many SAFE strings: SAFE (Noutahi et al. 2024, "Gotta be SAFE", arXiv:2310.10773)
writes its fragments in any order, and its attachment numbers and each fragment's root follow the
atom order; `safe.encode(randomize=True, canonical=False, seed=...)` renumbers the atoms at random
and permutes the fragments. SMILES likewise has one string per atom order (random SMILES, Bjerrum
2017, "SMILES enumeration as data augmentation"; RDKit's `MolToRandomSmilesVect`). Training on
several spellings of the same molecules multiplies a small corpus without adding molecules. It is a
departure from GenMol (Lee et al. 2025, P11), which trains on one canonical SAFE string per molecule
of a 1.1 B-molecule corpus; here the corpus is 4,053 molecules.

`augmented_tokens` gives `copies` rows per molecule: copy 0 is the corpus's own (canonical) row, the
others are drawn with seeds that depend only on (seed, molecule, copy), so a corpus gives the same
rows on every machine. A drawn spelling longer than the row or holding a token outside the
vocabulary is replaced by the canonical row and counted.
"""

from __future__ import annotations

import torch

from . import molecules

KINDS = ("safe", "smiles")


def random_safe(smiles: str, seed: int) -> str | None:
    """One randomised SAFE string of a molecule (BRICS cuts, as the corpus); None if safe cannot cut it."""
    _, safe = molecules.need_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        try:
            return safe.encode(smiles, canonical=False, randomize=True, seed=seed, slicer="brics",
                               ignore_stereo=True, allow_empty=True)
        except Exception:  # safe raises its own and RDKit's errors for molecules it cannot cut
            return None


def random_smiles(smiles: str, n: int, seed: int) -> list[str]:
    """n randomised SMILES strings of a molecule (RDKit's random atom orders, seeded)."""
    chem, _ = molecules.need_chem()
    mol = chem.MolFromSmiles(smiles)
    return list(chem.MolToRandomSmilesVect(mol, n, randomSeed=seed)) if mol is not None and n > 0 else []


def augmented_tokens(split: molecules.MoleculeSplit, vocab: molecules.Vocabulary, length: int, copies: int,
                     kind: str, seed: int = 0) -> tuple[torch.Tensor, int]:
    """(Long[len(split) * copies, length], fallbacks): rows [i * copies, (i + 1) * copies) spell
    molecule i; the first of them is its canonical row. `fallbacks` counts drawn spellings replaced
    by the canonical row (too long, a token outside the vocabulary, or not encodable)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    canonical = split.safe_tokens if kind == "safe" else split.smiles_tokens
    rows, fallbacks = [], 0
    for i, smiles in enumerate(split.smiles):
        seeds = [(seed * 1_000_003 + i * copies + k) % 2**31 for k in range(1, copies)]
        drawn = ([random_safe(smiles, s) for s in seeds] if kind == "safe"
                 else random_smiles(smiles, copies - 1, seeds[0]) if seeds else [])
        rows.append(canonical[i].tolist())
        for text in drawn + [None] * (copies - 1 - len(drawn)):
            try:
                ids = vocab.encode(text) if text is not None else None
            except ValueError:  # a token outside the vocabulary
                ids = None
            if ids is None or len(ids) > length:
                rows.append(canonical[i].tolist())
                fallbacks += 1
            else:
                rows.append(ids + [molecules.PAD_ID] * (length - len(ids)))
    if not rows:
        return canonical.new_zeros((0, length)), 0
    return torch.tensor(rows, dtype=torch.long), fallbacks
