"""Linguistic entity masking (LEM, Fernando & Ranathunga 2025, P19): hide only tokens inside
entities, and only one token per entity, so most of each entity stays visible as context. On code the
entities are identifiers, found with Python's `tokenize` (`data/code.py` gives `entity_ids`: the
identifier's id at each of its sub-tokens, -1 elsewhere).

Entities (runs of equal non-negative `entity_ids`) are visited in random order and one of their
tokens, chosen uniformly, is hidden, until round(ratio * L) tokens are hidden. A row with fewer
entities than that hides one token in every entity: the count is min(round(ratio * L), entities), the
documented exception to the exact-count rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import uniform
from .words import SpanFillMask, runs


@dataclass(frozen=True)
class EntityMask(SpanFillMask):
    context_key: str = "entity_ids"

    def row(self, ids, count, generator):
        entities = [(s, n) for s, n in runs(ids) if int(ids[s]) >= 0]
        hidden = torch.zeros(ids.numel(), dtype=torch.bool)
        order = uniform(len(entities), generator).argsort().tolist()
        pick = uniform(len(entities), generator)
        for j in order[:count]:
            start, size = entities[j]
            hidden[start + min(int(pick[j] * size), size - 1)] = True
        return hidden
