"""Attachment tokens for SAFE strings: GenMol V2's "bracket SAFE" (Lee et al. 2025, GenMol, P11;
the V2 release of its code, `use_bracket_safe`).

In a SAFE string the bond between two fragments is a pair of ring-closure digits, one in each
fragment, and the same digits also close rings inside a fragment: in `c13ccc(O)cc1.CC2=O.N23` the
`1`s close a ring and the `2`s and `3`s join fragments. A model must tell the two roles apart from
context. Bracket SAFE writes each digit that joins two fragments as its own token `<n>`:
`c1<3>ccc(O)cc1.CC<2>=O.N<2><3>`, so "this is where the fragment attaches" is a token.

`bracket(tokens)` finds the roles as SMILES does, left to right: a ring number opens, the next use
of the same number closes it (numbers are reused after closing). A pair whose two ends lie in
different `.`-separated fragments is an attachment, and so is a number left open at the end (a
fragment given in a prompt, whose partner the model must write). `unbracket(text)` makes the
string SMILES again: `<n>` becomes ring closure number 50 + n, which no ring inside a fragment uses
(SAFE numbers rings from 1, and the vocabulary holds ring numbers up to 11), so attachment pairs and
rings never close each other.
"""

from __future__ import annotations

import re

DOT = "."
ATTACHMENT = re.compile(r"<([0-9]+)>")
OFFSET = 50


def ring_number(token: str) -> int | None:
    """The ring-closure number of a token (`1`, `%10`, `%(123)`), else None."""
    if token.isdigit() and len(token) == 1:
        return int(token)
    if token.startswith("%("):
        return int(token[2:-1])
    if token.startswith("%") and token[1:].isdigit():
        return int(token[1:])
    return None


def bracket(tokens: list[str]) -> list[str]:
    """SAFE tokens -> the same tokens with every ring closure that joins two fragments, or is left
    open, written as `<n>`; ring closures inside one fragment stay as they are."""
    fragment = 0
    opened: dict[int, tuple[int, int]] = {}  # ring number -> (token index, fragment)
    joins: set[int] = set()
    for i, token in enumerate(tokens):
        if token == DOT:
            fragment += 1
            continue
        n = ring_number(token)
        if n is None:
            continue
        if n in opened:
            j, where = opened.pop(n)
            if where != fragment:
                joins |= {i, j}
        else:
            opened[n] = (i, fragment)
    joins |= {i for i, _ in opened.values()}
    return [f"<{ring_number(t)}>" if i in joins else t for i, t in enumerate(tokens)]


def ring_token(n: int) -> str:
    return str(n) if n < 10 else f"%{n}" if n < 100 else f"%({n})"


def unbracket(text: str) -> str:
    """Attachment tokens `<n>` -> ring closures numbered 50 + n; other text unchanged."""
    return ATTACHMENT.sub(lambda m: ring_token(OFFSET + int(m[1])), text)
