"""GenMol's three design tasks (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete
Diffusion", P11) with a masked denoiser over SAFE tokens (`data/molecules.py`), and de novo samples
of the autoregressive SMILES baseline.

Decoding is GenMol's confidence sampler (`sampling.genmol.GenMolSampler`): at each step every hidden
token is drawn from softmax(logits / temperature), its confidence is the log-probability of the drawn
token plus Gumbel noise scaled by `randomness` and annealed to zero, and the most confident hidden
token of each row is committed, one per step.

- de novo (`denovo`): a length L is drawn from the training molecules' SAFE lengths; the canvas is L
  mask tokens, then <pad> to the row length (pads are given, as in training);
- fragment-constrained (`fragment_completion`): the first fragments of a held-out molecule, each
  followed by `.`, are given; masks follow them up to a drawn length (at least `min_new`); the given
  tokens never change (the `generate` loop guarantees it) and the decoded molecule is checked for
  every given fragment;
- fragment remasking (`lead_optimisation`): one fragment of the current molecule, chosen uniformly, is
  replaced by U{5..15} mask tokens and regenerated; of each round's proposals the one with the highest
  QED among those with Tanimoto similarity >= `min_similarity` to the start molecule replaces the
  current molecule when it raises QED.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.molecules import PAD_ID, MoleculeCorpus, encode_safe, fragment_spans
from ..sampling import generate
from ..sampling.genmol import GenMolSampler
from .code import left_to_right
from .molecules import decode_safe, holds_fragments, qed, tanimoto

REMASK_RANGE = (5, 15)  # GenMol: U{5..15} mask tokens replace the chosen fragment


def fill(model, canvas: torch.Tensor, temperature: float, randomness: float,
         generator: torch.Generator | None = None, batch: int = 256) -> tuple[torch.Tensor, int]:
    """Fill every mask of `canvas` (Long[B, N]) with GenMol's sampler; rows with similar numbers of
    masks go together so no batch waits long for one long row. Returns (Long[B, N], denoiser calls)."""
    mask_id = model.mask_id
    order = (canvas == mask_id).sum(1).argsort(stable=True)
    out, nfe = canvas.clone(), 0
    for idx in order.split(batch):
        part = canvas[idx]
        res = generate(model, part, GenMolSampler.for_canvas(part, mask_id, temperature, randomness),
                       mask_id=mask_id, generator=generator)
        out[idx] = res.tokens
        nfe += res.nfe
    return out, nfe


def denovo_canvas(lengths: torch.Tensor, length: int, mask_id: int) -> torch.Tensor:
    """Long[B, length]: lengths[b] masks, then <pad>."""
    if int(lengths.max()) > length or int(lengths.min()) < 1:
        raise ValueError(f"lengths must lie in 1..{length}")
    hidden = torch.arange(length)[None, :] < lengths[:, None]
    return torch.where(hidden, mask_id, PAD_ID)


@torch.no_grad()
def denovo(model, corpus: MoleculeCorpus, n: int, temperature: float, randomness: float,
           seed: int = 0) -> list[str]:
    """n SAFE strings, each of a length drawn from the training split's."""
    g = torch.Generator().manual_seed(seed)
    pool = corpus.train.lengths
    lengths = pool[torch.randint(len(pool), (n,), generator=g)]
    tokens, _ = fill(model, denovo_canvas(lengths, corpus.length, model.mask_id), temperature, randomness, g)
    return [corpus.vocab.decode(row) for row in tokens]


@torch.no_grad()
def ar_denovo(model, corpus: MoleculeCorpus, n: int, temperature: float, seed: int = 0,
              batch: int = 256) -> list[str]:
    """n SMILES strings from a causal model, drawn left to right from the start token (the mask id)
    until <pad> or `corpus.length` tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        prefix = torch.full((min(batch, n - start), 1), model.mask_id)
        rows = left_to_right(model, prefix, corpus.length + 1, g, temperature, stop_id=PAD_ID)
        out += [corpus.vocab.decode(r) for r in rows]
    return out


# fragment-constrained generation ------------------------------------------------------------------
@dataclass(frozen=True)
class FragmentCase:
    given: list[int]  # ids of the given fragments, each followed by `.`
    fragments: list[str]  # the given fragments as SAFE text
    source: str  # canonical SMILES of the held-out molecule they come from


def fragment_cases(corpus: MoleculeCorpus, n: int, seed: int = 0) -> list[FragmentCase]:
    """Up to n held-out molecules, in a seeded random order, with at least two fragments; the first
    half of each one's fragments (at least one) is given."""
    g = torch.Generator().manual_seed(seed)
    vocab, cases = corpus.vocab, []
    for i in torch.randperm(len(corpus.test), generator=g).tolist():
        smiles, ids = corpus.test.smiles[i], [t for t in corpus.test.safe_tokens[i].tolist() if t != PAD_ID]
        spans = fragment_spans(ids, vocab.dot_id)
        if len(spans) < 2:
            continue
        keep = spans[: len(spans) // 2]
        given = [t for lo, hi in keep for t in [*ids[lo:hi], vocab.dot_id]]
        cases.append(FragmentCase(given, [vocab.decode(ids[lo:hi]) for lo, hi in keep], smiles))
        if len(cases) == n:
            break
    return cases


def fragment_canvas(cases: list[FragmentCase], totals: torch.Tensor, length: int, mask_id: int,
                    min_new: int = 8) -> torch.Tensor:
    """Long[B, length]: the given ids, then max(totals[b] - given, min_new) masks (as many as fit),
    then <pad>."""
    canvas = torch.full((len(cases), length), PAD_ID)
    for b, case in enumerate(cases):
        k = len(case.given)
        if k >= length:
            raise ValueError(f"case {b} gives {k} tokens, no room left in {length}")
        new = min(max(int(totals[b]) - k, min_new), length - k)
        canvas[b, :k] = torch.tensor(case.given)
        canvas[b, k : k + new] = mask_id
    return canvas


@dataclass(frozen=True)
class FragmentResult:
    canvas: torch.Tensor  # Long[B, N], the given tokens, masks and pads
    tokens: torch.Tensor  # Long[B, N], filled
    texts: list[str]  # the SAFE strings
    held: list[bool]  # the decoded molecule holds every given fragment (False when invalid)


@torch.no_grad()
def fragment_completion(model, corpus: MoleculeCorpus, cases: list[FragmentCase], temperature: float,
                        randomness: float, seed: int = 0) -> FragmentResult:
    g = torch.Generator().manual_seed(seed)
    pool = corpus.train.lengths
    totals = pool[torch.randint(len(pool), (len(cases),), generator=g)]
    canvas = fragment_canvas(cases, totals, corpus.length, model.mask_id)
    tokens, _ = fill(model, canvas, temperature, randomness, g)
    texts = [corpus.vocab.decode(row) for row in tokens]
    held = []
    for case, text in zip(cases, texts, strict=True):
        smiles = decode_safe(text)
        held.append(smiles is not None and holds_fragments(smiles, case.fragments))
    return FragmentResult(canvas, tokens, texts, held)


# fragment remasking ------------------------------------------------------------------------------
def remask_row(ids: list[int], span: tuple[int, int], masks: int, length: int, mask_id: int) -> torch.Tensor:
    """Long[length]: `ids` with ids[lo:hi] replaced by `masks` mask tokens, then <pad>."""
    lo, hi = span
    row = ids[:lo] + [mask_id] * masks + ids[hi:]
    if len(row) > length:
        raise ValueError(f"{len(row)} tokens do not fit in {length}")
    return torch.tensor(row + [PAD_ID] * (length - len(row)))


def remask_proposals(ids: list[int], dot_id: int, k: int, length: int, mask_id: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Long[k', length], k' <= k: k rows, each with one uniformly chosen fragment replaced by U{5..15}
    masks (fewer where the row would not fit; none when not even one fits)."""
    spans = fragment_spans(ids, dot_id)
    rows = []
    for _ in range(k):
        lo, hi = spans[int(torch.randint(len(spans), (1,), generator=generator))]
        masks = int(torch.randint(REMASK_RANGE[0], REMASK_RANGE[1] + 1, (1,), generator=generator))
        masks = min(masks, length - len(ids) + (hi - lo))
        if masks >= 1:
            rows.append(remask_row(ids, (lo, hi), masks, length, mask_id))
    return torch.stack(rows) if rows else torch.empty(0, length, dtype=torch.long)


def lead_starts(corpus: MoleculeCorpus, n: int, max_qed: float = 0.6, seed: int = 0) -> list[str]:
    """n held-out molecules, in a seeded random order, with two or more fragments and QED < max_qed."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in torch.randperm(len(corpus.test), generator=g).tolist():
        smiles = corpus.test.smiles[i]
        if corpus.test.safe[i].count(".") >= 1 and qed(smiles) < max_qed:
            out.append(smiles)
            if len(out) == n:
                break
    return out


@torch.no_grad()
def lead_optimisation(model, corpus: MoleculeCorpus, starts: list[str], rounds: int, proposals: int,
                      min_similarity: float, temperature: float, randomness: float, seed: int = 0) -> dict:
    """Fragment remasking from each start molecule. Returns the per-molecule `trace` (start, final,
    QEDs, similarity) and `valid_proposals`, the share of proposals that decoded to a molecule."""
    g = torch.Generator().manual_seed(seed)
    current = list(starts)
    scores = [qed(s) for s in starts]
    made = valid = 0
    for _ in range(rounds):
        rows, owners = [], []
        for i, smiles in enumerate(current):
            code = encode_safe(smiles)
            try:
                ids = corpus.vocab.encode(code) if code else None
            except ValueError:  # a token outside the vocabulary: this molecule cannot be edited
                ids = None
            if ids is None or len(ids) > corpus.length:
                continue
            block = remask_proposals(ids, corpus.vocab.dot_id, proposals, corpus.length, model.mask_id, g)
            rows.append(block)
            owners += [i] * len(block)
        if not owners:
            break
        tokens, _ = fill(model, torch.cat(rows), temperature, randomness, g)
        best: dict[int, tuple[float, str]] = {}
        for i, row in zip(owners, tokens, strict=True):
            made += 1
            smiles = decode_safe(corpus.vocab.decode(row))
            if smiles is None:
                continue
            valid += 1
            if smiles == current[i] or tanimoto(smiles, starts[i]) < min_similarity:
                continue
            score = qed(smiles)
            if score > best.get(i, (-math.inf, ""))[0]:
                best[i] = (score, smiles)
        for i, (score, smiles) in best.items():
            if score > scores[i]:
                current[i], scores[i] = smiles, score
    trace = [{"start": s, "final": c, "qed_start": qed(s), "qed_final": q, "similarity": tanimoto(c, s)}
             for s, c, q in zip(starts, current, scores, strict=True)]
    return {"trace": trace, "valid_proposals": valid / made if made else math.nan}

