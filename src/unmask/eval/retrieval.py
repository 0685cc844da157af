"""Retrieval metrics for paired texts (query i's one relevant document is document i), as dense
retrieval reports them (MS MARCO's MRR@10, recall@k): rank the documents by cosine similarity to
each query and read where the relevant one lands.

A tie with the relevant document counts against it (its rank is the number of documents scoring at
least as high, itself included), so an encoder that maps every text to the same vector ranks last,
never first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relevant_ranks(scores: torch.Tensor) -> torch.Tensor:
    """scores: Float[Q, Q], scores[i, j] = how well document j answers query i; document i is query
    i's relevant one. Returns Long[Q], the 1-based rank of each query's relevant document."""
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be [Q, Q] (document i answers query i), got {tuple(scores.shape)}")
    own = scores.diagonal()[:, None]  # [Q, 1]
    return (scores >= own).sum(1)


def cosine_ranks(queries: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """queries, documents: Float[Q, D], row i of each a pair -> Long[Q] ranks by cosine similarity."""
    if queries.shape != documents.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} must pair up")
    q, d = F.normalize(queries.double(), dim=-1), F.normalize(documents.double(), dim=-1)
    return relevant_ranks(q @ d.T)


def mrr_at(ranks: torch.Tensor, k: int = 10) -> float:
    """Mean reciprocal rank, cut at k: mean over queries of 1 / rank if rank <= k, else 0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(torch.where(ranks <= k, 1.0 / ranks.double(), 0.0).mean())


def recall_at(ranks: torch.Tensor, k: int = 1) -> float:
    """The share of queries whose relevant document ranks in the first k."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float((ranks <= k).double().mean())
