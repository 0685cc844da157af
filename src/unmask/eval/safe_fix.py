"""GenMol's lenient SAFE decoding (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete
Diffusion", arXiv:2501.06158, P11): a generated SAFE string counts as a molecule when the fragments
that decode on their own, joined again, decode to one; the molecule is the largest component.

`eval.molecules.decode_safe` reads the whole string at once (unpaired attachment points dropped), so
one broken fragment (an unclosed ring, an impossible valence) makes the whole sample invalid.
GenMol's `safe_to_smiles(fix=True)` first drops every fragment that `safe.decode` cannot read alone,
then decodes the rest; its de novo validity (1.000 in the paper) is counted this way. Both rules
are reported side by side: `validity` (whole string) and `genmol_validity` (this rule).
"""

from __future__ import annotations

from ..data.molecules import DOT, canonical_smiles, need_chem


def decode_safe_fixed(text: str) -> str | None:
    """Canonical SMILES of the largest component of the fragments of `text` that decode alone, or
    None when none does."""
    _, safe = need_chem()
    from rdkit import rdBase

    if not text:
        return None
    with rdBase.BlockLogs():
        kept = [f for f in text.split(DOT) if f and safe.decode(f, ignore_errors=True) is not None]
        smiles = safe.decode(DOT.join(kept), canonical=True, ignore_errors=True) if kept else None
    return canonical_smiles(smiles) if smiles else None
