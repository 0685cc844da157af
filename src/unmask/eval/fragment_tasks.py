"""GenMol's fragment-constrained tasks (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with
Discrete Diffusion", arXiv:2501.06158, P11, Table 2; the tasks of SAFE-GPT, Noutahi et al. 2024,
arXiv:2310.10773): linker design, motif extension and scaffold decoration, each built from a
held-out molecule, filled by the masked model after the given fragments.

The given part is written as SAFE with `safe.SAFEConverter(slicer=None)` (no further cuts, as
GenMol's linker prompt): every attachment point `[*]` becomes an open ring-closure digit that the
generated tokens must close. The canvas is the given SAFE tokens, `.`, then masks
(`molecule_design.fragment_canvas`: a length drawn from the training molecules, at least `min_new`
new tokens), then <pad>. Tasks, from each held-out molecule:

- linker design: `safe.utils.MolSlicer` cuts it into head, linker, tail; head and tail (one
  attachment point each) are given, the linker is generated;
- motif extension: the head alone (one attachment point) is given, the rest is generated;
- scaffold decoration: the Bemis-Murcko scaffold with an attachment point where each side chain was
  (`Chem.ReplaceSidechains`) is given, the side chains are generated.

Metrics (GenMol's, where `kept` means the decoded molecule holds every given fragment with each
attachment point as a wildcard atom, `safe.utils.filter_by_substructure_constraints`, the filter
GenMol applies before counting): validity = decodes (`safe_fix.decode_safe_fixed`) / samples;
kept = decodes and holds the given fragments / samples (for linker design: keeps both); uniqueness =
distinct kept / kept; quality = distinct kept with QED >= 0.6 and SA <= 4 / samples; diversity over
the distinct kept molecules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..data.molecules import MoleculeCorpus, need_chem
from .molecule_design import fill, fragment_canvas
from .molecules import generation_metrics
from .safe_fix import decode_safe_fixed

TASKS = ("linker", "motif", "scaffold")


@dataclass(frozen=True)
class DesignCase:
    task: str  # one of TASKS
    fragments: str  # the given fragments as SMILES with [*] attachment points, joined by "."
    given: list[int]  # their SAFE ids, then the id of "."
    source: str  # canonical SMILES of the held-out molecule


def given_fragments(task: str, smiles: str) -> str | None:
    """The fragments a task gives for one molecule (SMILES with [*], joined by "."), or None when
    the molecule has no such cut (no linker, no side chain)."""
    Chem, safe = need_chem()
    from rdkit import rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    mol = Chem.MolFromSmiles(smiles)
    with rdBase.BlockLogs():
        if task == "scaffold":
            core = MurckoScaffold.GetScaffoldForMol(mol)
            if core.GetNumAtoms() == 0 or core.GetNumAtoms() == mol.GetNumAtoms():
                return None
            decorated = Chem.ReplaceSidechains(mol, core)
            return _unlabelled(Chem.MolToSmiles(decorated)) if decorated is not None else None
        try:
            head, linker, tail = safe.utils.MolSlicer(require_ring_system=False)(mol)
        except Exception:  # the slicer raises on molecules it cannot cut three ways
            return None
        if head is None or linker is None or tail is None:
            return None
        parts = [head, tail] if task == "linker" else [head]
        return ".".join(_unlabelled(Chem.MolToSmiles(p)) for p in parts)


def _unlabelled(smiles: str) -> str:
    """Attachment points written as plain [*] (labels like [12*] carry no meaning here)."""
    return re.sub(r"\[\d*\*\]", "[*]", smiles)


def design_cases(corpus: MoleculeCorpus, task: str, n: int, seed: int = 0) -> list[DesignCase]:
    """Up to n cases of `task` from held-out molecules in a seeded order; molecules whose given SAFE
    does not encode or holds a token outside the vocabulary are skipped."""
    _, safe = need_chem()
    g = torch.Generator().manual_seed(seed)
    converter = safe.SAFEConverter(slicer=None, ignore_stereo=True)
    cases = []
    for i in torch.randperm(len(corpus.test), generator=g).tolist():
        source = corpus.test.smiles[i]
        fragments = given_fragments(task, source)
        if fragments is None:
            continue
        try:
            ids = corpus.vocab.encode(converter.encoder(fragments, allow_empty=True))
        except Exception:  # not encodable by safe, or a token outside the vocabulary
            continue
        if len(ids) + 1 >= corpus.length:
            continue
        cases.append(DesignCase(task, fragments, [*ids, corpus.vocab.dot_id], source))
        if len(cases) == n:
            break
    return cases


def holds_given(smiles: str | None, fragments: str) -> bool:
    """The molecule contains all given fragments at once (disjoint atoms), each [*] a wildcard atom."""
    Chem, _ = need_chem()
    if smiles is None:
        return False
    mol, query = Chem.MolFromSmiles(smiles), Chem.MolFromSmarts(fragments)
    if query is None:
        raise ValueError(f"fragments {fragments!r} do not parse as a query")
    return mol is not None and mol.HasSubstructMatch(query)


@dataclass(frozen=True)
class DesignResult:
    cases: list[DesignCase]  # one per row (each case repeated `per_case` times)
    canvas: torch.Tensor  # Long[R, N]: given ids, masks, pads
    tokens: torch.Tensor  # Long[R, N]: filled
    texts: list[str]  # the SAFE strings
    molecules: list[str | None]  # decoded by GenMol's rule
    kept: list[bool]  # decoded and holds the given fragments


@torch.no_grad()
def run_task(model, corpus: MoleculeCorpus, cases: list[DesignCase], per_case: int, temperature: float,
             randomness: float, seed: int = 0, min_new: int = 8) -> DesignResult:
    """Fill `per_case` canvases per case with GenMol's sampler and decode them."""
    g = torch.Generator().manual_seed(seed)
    rows = [c for c in cases for _ in range(per_case)]
    if not rows:
        raise ValueError("no cases to run")
    pool = corpus.train.lengths
    totals = pool[torch.randint(len(pool), (len(rows),), generator=g)]
    canvas = fragment_canvas(rows, totals, corpus.length, model.mask_id, min_new=min_new)
    tokens, _ = fill(model, canvas, temperature, randomness, g)
    texts = [corpus.vocab.decode(r) for r in tokens]
    mols = [decode_safe_fixed(t) for t in texts]
    kept = [holds_given(m, c.fragments) for m, c in zip(mols, rows, strict=True)]
    return DesignResult(rows, canvas, tokens, texts, mols, kept)


def task_metrics(molecules: list[str | None], kept: list[bool]) -> dict[str, float]:
    """validity, kept, uniqueness, quality, diversity (see the module docstring) of one task's rows."""
    n = len(molecules)
    if n == 0 or len(kept) != n:
        raise ValueError(f"need one kept flag per sample and at least one sample, got {n} and {len(kept)}")
    # the kept molecules are scored as de novo samples, the rest count as invalid
    scored = generation_metrics([m if k else None for m, k in zip(molecules, kept, strict=True)], kept, set())
    return {"validity": sum(m is not None for m in molecules) / n, "kept": scored["validity"],
            **{k: scored[k] for k in ("uniqueness", "quality", "diversity")}}
