"""Re-reading some positions against cached keys and values: the one cache behind ReCAP's cheap steps
(P22) and ENAT-style reuse of visible tokens (P20).

A full read of all N positions keeps every layer's K/V. A light read runs only the chosen query
positions through the network; at every layer their fresh K/V replace their cached ones (in place)
and they attend to all N cached positions. It costs about n_queries / N of a full read and leaves the
cache updated at the queries. The logits at the queries are exact whenever the other positions have
not changed since their K/V were computed and did not depend on the queries; the loop (`generate`)
always adds positions whose token changed since the cache to the queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn.masked_model import MaskedTokenModel


@dataclass
class KVCache:
    """Per-run K/V of every position (one (k, v) [B, H, N, Dh] per layer) and the tokens they were
    computed on, Long[B, N]. Lives in the loop, never in a sampler's state."""

    tokens: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]


class CachedDenoiser:
    """A `MaskedTokenModel` as a denoiser with full and light reads.

    `denoiser(tokens)` is the plain full read; `full(tokens)` also returns the cache;
    `light(tokens, queries, cache, width=None)` returns logits [M, V] at the M True places of queries
    (Bool[B, N], row-major order, like `logits[queries]`) and the cache refreshed at those places;
    `width`, the most places of a row, saves a host sync when the caller already read it. Rows that
    query every place (a refresh) are read apart, with the full read, at the cost of one host sync.
    """

    def __init__(self, model: MaskedTokenModel):
        cfg = getattr(model, "config", None)
        if getattr(cfg, "shuffle", 1) != 1 or getattr(cfg, "attention", "full") != "full":
            raise ValueError("CachedDenoiser reads the blocks itself: it has no token shuffle nor scale-causal mask")
        self.model = model

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        return self._read_all(tokens)

    def _read_all(self, tokens: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        m = self.model
        b, n = tokens.shape
        h, kv = m.encoder(m.embed(tokens), keep_kv=torch.arange(n, device=tokens.device).expand(b, n))
        logits = m.head(h).masked_fill(m.disallowed.expand(b, -1, -1), float("-inf"))
        return logits, KVCache(tokens.clone(), kv)

    def light(self, tokens: torch.Tensor, queries: torch.Tensor, cache: KVCache,
              width: int | None = None) -> tuple[torch.Tensor, KVCache]:
        counts = queries.sum(1)
        width = int(counts.max()) if width is None else width  # `generate` reads it with its own flags
        if width == tokens.shape[1]:  # some row reads every place (its cache's refresh as it enters a block)
            return self._whole_rows_apart(tokens, queries, cache, counts)
        return self._light(tokens, queries, cache, width, counts)

    def _light(self, tokens: torch.Tensor, queries: torch.Tensor, cache: KVCache, width: int,
               counts: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        m = self.model
        # each row's query positions first (ascending); the padding repeats the row's last query, whose
        # keys and values it computes identically, so its writes into the cache change nothing
        order = (~queries).to(torch.uint8).argsort(dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=tokens.device) < counts.unsqueeze(1)
        last = order.gather(1, (counts - 1).clamp(min=0).unsqueeze(1))
        places = torch.where(valid, order, last)  # [B, W]
        x = m.embed(tokens)
        xq = x.gather(1, places.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        # the queries' fresh K/V replace their stale cached ones at every layer; rows without queries keep theirs
        h = m.encoder(xq, past=cache.kv, past_at=places, past_rows=counts > 0)
        rows, slots = valid.nonzero(as_tuple=True)
        at = places[rows, slots]
        logits = m.head(h[rows, slots]).masked_fill(m.disallowed[at], float("-inf"))
        cache.tokens = tokens.clone()
        return logits, cache

    def _whole_rows_apart(self, tokens: torch.Tensor, queries: torch.Tensor, cache: KVCache,
                          counts: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """A light read where some rows query every place: those rows get a full read of their own and
        the others a light read as wide as they need, so one row's refresh does not make the whole batch
        pay a full read (with rows entering blocks at different steps, that was most of the cost). A
        row's logits and cache come from the same computation whatever else is in the batch, alone too.
        Reads the B query counts from the device once; only steps where a row refreshes do it."""
        n = tokens.shape[1]
        per_row = counts.tolist()
        whole = [i for i, c in enumerate(per_row) if c == n]
        if not whole:  # `width` said N, but no row reads every place
            return self._light(tokens, queries, cache, max(per_row), counts)
        narrow = [i for i, c in enumerate(per_row) if 0 < c < n]
        parts = {}
        if narrow:
            rest = queries.clone()
            rest[whole] = False
            part, cache = self._light(tokens, rest, cache, max(per_row[i] for i in narrow), rest.sum(1))
            parts = dict(zip(narrow, part.split([per_row[i] for i in narrow]), strict=True))
        rows = torch.tensor(whole, device=tokens.device)
        logits, fresh = self._read_all(tokens.index_select(0, rows))
        for (k, v), (fk, fv) in zip(cache.kv, fresh.kv, strict=True):
            k.index_copy_(0, rows, fk)
            v.index_copy_(0, rows, fv)
        parts.update(zip(whole, logits.unbind(0), strict=True))
        cache.tokens = tokens.clone()
        return torch.cat([parts[i] for i in sorted(parts)]), cache
