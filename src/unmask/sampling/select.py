"""Which hidden places to commit: the k best by a score, with ties broken at random.

Breaking ties by position (what `torch.topk` does) turns a parallel decoder into a left-to-right one
whenever confidences saturate, as users of Dream (Ye et al. 2025, arXiv:2508.15487) found with
top-p. Ties here are broken by a uniform random order drawn from the run's generator. Sampling k
places without replacement in proportion to softmax(score / tau) is the same call on score / tau plus
Gumbel noise (Gumbel-top-k, Kool et al. 2019).
"""

from __future__ import annotations

import torch

from .categorical import gumbel


def commit_top(scores: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The `counts[b]` highest-scored places of row b, ties in random order.

    scores: [B, N] float, -inf where a place may not be chosen; counts: Long[B]. Returns Bool[B, N];
    never a -inf place, so a row gets fewer than counts[b] when it has fewer eligible places.
    """
    b, n = scores.shape
    shuffle = torch.rand(b, n, generator=generator, device=scores.device).argsort(1)
    order = shuffle.gather(1, scores.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=scores.device).expand(b, n))
    return (ranks < counts.to(scores.device).unsqueeze(1)) & (scores > float("-inf"))


def commit_best(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """`commit_top(scores, ones)`: each row's highest-scored place, in fewer operations and with the same
    place for the same generator. `commit_top` shuffles by uniforms and keeps the shuffle's order among
    ties, so of a row's best places it takes the one with the smallest uniform; so does this.
    scores: [B, N] float, -inf where a place may not be chosen. Returns Bool[B, N], empty for a row
    with no place above -inf."""
    b, n = scores.shape
    u = torch.rand(b, n, generator=generator, device=scores.device)
    best = scores.amax(1, keepdim=True)
    pick = u.masked_fill_(scores != best, 2.0).argmin(1, keepdim=True)
    return torch.zeros(b, n, dtype=torch.bool, device=scores.device).scatter_(1, pick, best > float("-inf"))


def sample_top(scores: torch.Tensor, counts: torch.Tensor, temperature: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """`counts[b]` places drawn without replacement with probability softmax(scores / temperature);
    temperature 0 is `commit_top`. scores: [B, N] float (-inf: never); counts: Long[B] -> Bool[B, N]."""
    if not temperature >= 0:  # NaN too
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return commit_top(scores, counts, generator)
    noisy = scores.double() / temperature + gumbel(scores.shape, generator, device=scores.device)
    return commit_top(noisy.masked_fill(scores == float("-inf"), float("-inf")), counts, generator)


def flat_places(where: torch.Tensor) -> torch.Tensor:
    """Long[M]: the True places of `where` (Bool[B, N]) as indices into its flattened view, row-major.
    Writing through them (`x.view(-1).index_copy_(0, places, values)`) costs less on a CPU than the
    boolean `x[where] = values`, and one `nonzero` serves every read and write of a step."""
    return where.reshape(-1).nonzero().squeeze(1)


def rows_where(logits: torch.Tensor, where: torch.Tensor | None = None,
               places: torch.Tensor | None = None) -> torch.Tensor:
    """`logits[where]` (Float[B, N, V], Bool[B, N] -> Float[M, V], places in row-major order), read
    with one `index_select` over the flattened places (or the given `flat_places(where)`): on a CPU a
    third of the boolean index's cost."""
    if (where is None) == (places is None):
        raise ValueError("rows_where reads either `where` (Bool[B, N]) or `places` (its flat_places), one of them")
    if places is None:
        places = flat_places(where)
    return logits.reshape(-1, logits.shape[-1]).index_select(0, places)


def copy_rows(dst: torch.Tensor, places: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """`dst.index_copy_(0, places, src)` for 2-D tensors of one dtype, moved as 16-byte words where the
    rows allow it: a CPU `index_copy_` costs per element, not per byte, so 128 rows of 1024 float32
    logits take 2.5x less time as rows of 256 complex128 (bits are moved, never computed). Returns dst."""
    wide = torch.complex128
    ratio = wide.itemsize // dst.element_size() if dst.element_size() <= wide.itemsize else 0
    if (ratio and dst.device.type == "cpu" and src.dtype == dst.dtype and dst.is_contiguous() and src.is_contiguous()
            and dst.shape[1] % ratio == 0 and dst.storage_offset() % ratio == 0 and src.storage_offset() % ratio == 0):
        dst.view(wide).index_copy_(0, places, src.view(wide))
        return dst
    return dst.index_copy_(0, places, src)
