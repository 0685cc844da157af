"""Metrics of generated molecules, as GenMol (Lee et al. 2025, P11) reports them, computed offline
with RDKit alone.

- a generated string is **valid** when it decodes to a molecule: a SAFE string through
  `safe.decode` (unpaired attachment points dropped), a SMILES string through RDKit; the molecule is
  its largest component (GenMol's rule). It is **whole** when RDKit reads the string itself as one
  connected molecule with nothing dropped (a SAFE string is a SMILES string, so one rule serves both);
- validity = valid / samples; uniqueness = distinct valid / valid; novelty = distinct valid not in the
  training set / distinct valid;
- quality = distinct valid molecules with QED >= 0.6 and SA <= 4 / samples. QED is RDKit's
  (Bickerton et al. 2012); SA is the synthetic accessibility score of Ertl and Schuffenhauer (2009)
  from the copy RDKit ships in `RDConfig.RDContribDir/SA_Score/sascorer.py`;
- diversity = mean Tanimoto distance (1 - similarity) over the pairs of a list, on Morgan
  fingerprints of radius 2 and 2,048 bits without chirality (TDC's `diversity`); GenMol passes the
  distinct valid molecules.
"""

from __future__ import annotations

import math
from functools import lru_cache

from ..data.molecules import canonical_smiles, need_chem

QED_MIN = 0.6
SA_MAX = 4.0


def decode_safe(text: str) -> str | None:
    """Canonical SMILES of the molecule a SAFE string decodes to (largest component), or None."""
    _, safe = need_chem()
    if not text:
        return None
    smiles = safe.decode(text, canonical=True, fix=True, ignore_errors=True)
    return canonical_smiles(smiles) if smiles else None


def decode_smiles(text: str) -> str | None:
    """Canonical SMILES of the largest component of a SMILES string, or None."""
    return canonical_smiles(text) if text else None


def is_whole(text: str) -> bool:
    """RDKit reads `text` as exactly one connected molecule."""
    Chem, _ = need_chem()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text) if text else None
    return mol is not None and mol.GetNumAtoms() > 0 and len(Chem.GetMolFrags(mol)) == 1


def _mol(smiles: str):
    Chem, _ = need_chem()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot read {smiles!r}")
    return mol


def qed(smiles: str) -> float:
    from rdkit.Chem import QED

    return float(QED.qed(_mol(smiles)))


@lru_cache(maxsize=1)
def _sascorer():
    import importlib.util
    import os

    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    spec = importlib.util.spec_from_file_location("sascorer", path)
    if spec is None or not os.path.exists(path):
        raise FileNotFoundError(f"RDKit's SA score is not at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sa_score(smiles: str) -> float:
    """Synthetic accessibility, 1 (easy) .. 10 (hard)."""
    return float(_sascorer().calculateScore(_mol(smiles)))


@lru_cache(maxsize=1)
def _morgan():
    need_chem()
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def fingerprint(smiles: str):
    """Morgan radius 2, 2,048 bits (an RDKit ExplicitBitVect)."""
    return _morgan().GetFingerprint(_mol(smiles))


def tanimoto(a: str, b: str) -> float:
    from rdkit import DataStructs

    return float(DataStructs.TanimotoSimilarity(fingerprint(a), fingerprint(b)))


def diversity(smiles: list[str]) -> float:
    """Mean Tanimoto distance over the unordered pairs of the list; nan with fewer than 2 molecules."""
    from rdkit import DataStructs

    if len(smiles) < 2:
        return math.nan
    fps = [fingerprint(s) for s in smiles]
    total = 0.0
    for i in range(len(fps) - 1):
        total += sum(1.0 - s for s in DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1 :]))
    return total / (len(fps) * (len(fps) - 1) / 2)


def holds_fragments(smiles: str, fragments: list[str]) -> bool:
    """Each SAFE fragment (attachment points removed) is a substructure of the molecule."""
    Chem, safe = need_chem()
    mol = _mol(smiles)
    for fragment in fragments:
        core = safe.decode(fragment, fix=True, ignore_errors=True)
        query = Chem.MolFromSmiles(core) if core else None
        if query is None:
            raise ValueError(f"fragment {fragment!r} does not decode")
        if not mol.HasSubstructMatch(query):
            return False
    return True


def generation_metrics(molecules: list[str | None], whole: list[bool], training: set[str]) -> dict:
    """molecules: the canonical SMILES of each sample or None (invalid); whole: each sample's
    `is_whole`; training: canonical SMILES of the training set. Returns validity, whole_validity,
    uniqueness, novelty, quality, diversity and the mean QED and SA of the distinct valid ones."""
    n = len(molecules)
    if n == 0 or len(whole) != n:
        raise ValueError(f"need one whole flag per sample and at least one sample, got {n} and {len(whole)}")
    valid = [m for m in molecules if m is not None]
    distinct = sorted(set(valid))
    scores = {m: (qed(m), sa_score(m)) for m in distinct}
    good = sum(q >= QED_MIN and s <= SA_MAX for q, s in scores.values())
    return {
        "validity": len(valid) / n,
        "whole_validity": sum(whole) / n,
        "uniqueness": len(distinct) / len(valid) if valid else math.nan,
        "novelty": sum(m not in training for m in distinct) / len(distinct) if distinct else math.nan,
        "quality": good / n,
        "diversity": diversity(distinct),
        "mean_qed": _mean([q for q, _ in scores.values()]),
        "mean_sa": _mean([s for _, s in scores.values()]),
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan
