"""Function bodies of `eval/code.py`'s infilling cases put to two more uses (benchmarks/infill_code.py):
- training rows that hide or move exactly a body, for models that learn to fill bodies: masked
  diffusion with everything but the body as prompt (MDLM, Sahoo et al. 2024, arXiv:2406.07524; LLaDA's SFT
  masking, Nie et al. 2025, arXiv:2502.09992) and CM3 with the body as its one span (Aghajanyan et al.
  2022, "CM3: A Causal Masked Multimodal Model of the Internet", arXiv:2201.07520, P17);
- the same cases under another tokenizer, so models with different vocabularies fill the same bodies.
"""

from __future__ import annotations

import torch

from ..data.code import CodeCorpus
from ..masking.cm3 import cm3_transform
from .code import InfillCase, infill_cases, original_text, window_of


def same_functions(cases: list[InfillCase], source: CodeCorpus, corpus: CodeCorpus, length: int) -> list[InfillCase]:
    """The functions of `cases` (found in `source`, e.g. with another tokenizer) as cases of `corpus`:
    the same file, name and body text, so corpora with different vocabularies fill the same bodies
    (their token counts differ). A ValueError names a function `corpus` cannot hold in a window."""
    out = []
    for c in cases:
        found = infill_cases(corpus, length, 10**9, 1, length // 2, (c.path,), 10**9)
        text = original_text(c, source)
        match = [d for d in found if d.name == c.name and original_text(d, corpus) == text]
        if not match:
            raise ValueError(f"{c.path}: `def {c.name}` has no body of at most {length // 2} tokens in this corpus")
        out.append(match[0])
    return out


def body_windows(cases: list[InfillCase], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows for a masked model that fills bodies: (tokens Long[M, length], body Bool[M, length]),
    each case's window (`window_of`, true body length) and True exactly on its body tokens. Given as
    `prompt = ~body`, a masked diffusion objective hides only body tokens (LLaDA's SFT masking)."""
    tokens, body = [], torch.zeros(len(cases), length, dtype=torch.bool)
    for r, c in enumerate(cases):
        lo, hi = window_of(c, length, c.hidden[1] - c.hidden[0])
        tokens.append(torch.tensor(c.ids[lo:hi]))
        body[r, c.hidden[0] - lo : c.hidden[1] - lo] = True
    return torch.stack(tokens), body


def cm3_body_rows(cases: list[InfillCase], length: int, sentinel: int, eos: int, spare: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Long[M, length]: each case's window rewritten by CM3 with its body as the one span
    (`cm3_transform`): source with <mask:0> for the body, then <mask:0> body <eos>, which fits `length`
    whole (a random CM3 span near the end is cut by truncation; a body never is).

    The window holds `length - 3 - r` tokens and the row ends in r more <eos>, r uniform in 0..`spare`
    for each row (drawn from `generator`). With r = 0 always, the first <eos> of every body row sits
    at the last place, so a causal model learns to stop by position: given a shorter window at test
    time it writes on to the end (the true length plus the difference) instead of stopping after the
    body. `spare` should cover the room a test window leaves."""
    if spare < 0:
        raise ValueError(f"spare must be >= 0, got {spare}")
    rows = []
    for c in cases:
        r = int(torch.randint(spare + 1, (), generator=generator)) if spare else 0
        lo, hi = window_of(c, length - 3 - r, c.hidden[1] - c.hidden[0])
        span = (c.hidden[0] - lo, c.hidden[1] - lo)
        row = cm3_transform(torch.tensor(c.ids[lo:hi]), [span], (sentinel,), eos)
        rows.append(torch.cat([row, row.new_full((r,), eos)]))
    return torch.stack(rows)
