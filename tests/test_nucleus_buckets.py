"""The bucketed top-p read (`nucleus_buckets`): buckets by hand, bucket members against a brute-force
order, and whole draws against the full sort (token for token, scores to float64 rounding) and
against the exact nucleus law."""

import sys

import pytest
import torch

from test_nucleus_draw import assert_draws_follow_the_nucleus, full_sort_only
from unmask.sampling import nucleus, nucleus_draw
from unmask.sampling.confidence import confidence, log_probs
from unmask.sampling.nucleus_buckets import BUCKETS, bucket_ids, members

categorical_module = sys.modules["unmask.sampling.categorical"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_buckets_by_hand(dtype):
    w = torch.tensor([[1.0, 0.99, 0.5625, 0.5, 0.5 * 1.124, 2.0**-32, 1.9 * 2.0**-32, 1.12 * 2.0**-32,
                       1.13 * 2.0**-32, 2.0**-33, 0.0]], dtype=dtype)
    assert bucket_ids(w).tolist() == [[0, 1, 7, 8, 8, 256, 249, 256, 255, 256, 256]]
    assert BUCKETS == 257


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_lighter_weight_is_never_in_an_earlier_bucket(dtype):
    w = torch.cat([torch.rand(20_000, dtype=dtype) ** 40, torch.tensor([0.0, 1.0], dtype=dtype)]).sort()[0]
    ids = bucket_ids(w[None])[0]
    assert (ids[1:] <= ids[:-1]).all() and ids[-1] == 0 and ids[0] == BUCKETS - 1
    assert ((ids == 0) == (w == 1)).all()
    ratio = torch.zeros(BUCKETS, dtype=torch.float64).scatter_reduce_(0, ids, w.double(), "amax") / \
        torch.ones(BUCKETS, dtype=torch.float64).scatter_reduce_(0, ids, w.double(), "amin")
    assert (ratio[1:-1][ratio[1:-1] > 0] < 9 / 8).all()  # a bucket spans [1 + j/8, 1 + (j+1)/8) times a power of 2


def test_members_are_ordered_as_the_stable_sort_puts_them():
    g = torch.Generator().manual_seed(0)
    block = torch.randint(0, 6, (50, 40), generator=g).float()  # many ties
    block[3] = float("-inf")
    ids = torch.randint(0, 4, (50, 40), generator=g)
    which = torch.randint(0, 4, (50,), generator=g)
    tokens, count = members(ids, which, block)
    for i in range(50):
        inside = (ids[i] == which[i]).nonzero()[:, 0]
        expected = inside[block[i, inside].sort(descending=True, stable=True)[1]]
        assert count[i] == len(inside)
        assert tokens[i, : len(inside)].tolist() == expected.tolist()


def flat_rows(n=400, v=1024, dtype=torch.float32, scale=1.0):
    """Rows whose nucleus is mostly far past 64 tokens (read from buckets), some with ties."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(n, v, generator=g) * torch.linspace(0.05, 1.5, n)[:, None] * scale).to(dtype)
    logits[0] = 0.0  # every token tied
    logits[1, ::2] = 0.5  # half the tokens tied on top
    logits[2, 700:] = float("-inf")  # a tail of no mass
    logits[3] = torch.arange(v, dtype=dtype).div(v).round(decimals=1)  # 11 runs of tied tokens
    return logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", [None, "probability", "margin", "entropy"])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 0.95), (0.2, 0.95), (0.0, 0.9), (1.0, 0.5), (3.0, 0.999)])
def test_the_buckets_draw_as_the_full_sort(dtype, kind, temperature, top_p, monkeypatch):
    logits = flat_rows(dtype=dtype, scale=temperature or 1.0)
    sizes = torch.isfinite(nucleus(logits.double() / (temperature or 1.0), top_p)).sum(-1)
    assert (sizes > 64).float().mean() > 0.6  # the buckets, not the top-K reads
    fast = nucleus_draw(logits, top_p, temperature, torch.Generator().manual_seed(3), kind)
    full_sort_only(monkeypatch)
    full = nucleus_draw(logits, top_p, temperature, torch.Generator().manual_seed(3), kind)
    assert torch.equal(fast[0], full[0])
    if kind:
        torch.testing.assert_close(fast[1], full[1], rtol=1e-12, atol=1e-14)


def test_a_nucleus_reaching_the_last_bucket_and_its_zero_weights():
    """Rows whose tempered logits span far more than 32 factors of 2: at top-p 1 - 1e-12 the nucleus
    ends among the weights below 2^-32 (the last bucket, read by its logits); tokens of weight 0
    (-inf, or more than 87 nats down) are never drawn."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 500, generator=g) * 12
    logits[:, :50] = float("-inf")
    drawn, _ = nucleus_draw(logits, 1 - 1e-12, 1.0, torch.Generator().manual_seed(0), "entropy")
    weights = (logits - logits.amax(-1, keepdim=True)).exp()
    assert (weights.gather(1, drawn[:, None]) > 0).all()
    import unmask.sampling.nucleus_buckets as nb

    seen = []
    original = nb.members

    def spy(ids, which, block):
        seen.append(which.clone())
        return original(ids, which, block)

    nb.members = spy
    try:
        again = nucleus_draw(logits, 1 - 1e-12, 1.0, torch.Generator().manual_seed(0), "entropy")
    finally:
        nb.members = original
    assert (torch.cat(seen) == BUCKETS - 1).any()  # some row's nucleus ends in the last bucket
    assert torch.equal(drawn, again[0])


def test_frequencies_match_the_nucleus_when_read_from_buckets():
    g = torch.Generator().manual_seed(7)
    exact = assert_draws_follow_the_nucleus(torch.randn(300, generator=g) * 0.7, 0.9, 0.8, 400_000)
    assert (exact > 0).sum() > 64


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
def test_bucket_scores_equal_the_confidence_of_the_nucleus(kind):
    """Against `confidence` on the filtered float64 distribution: the entropy within 3e-7 (the float32
    exp's rounding, which the exponents do not carry), the others within float32 weights' error."""
    logits = flat_rows(n=200)[4:]
    drawn, score = nucleus_draw(logits, 0.95, 0.7, torch.Generator().manual_seed(2), kind)
    reference = confidence(log_probs(nucleus(logits.double() / 0.7, 0.95)), drawn, kind)
    tolerance = 3e-7 if kind == "entropy" else 1e-6 * reference.abs().max().item()
    assert (score - reference).abs().max() < tolerance


@pytest.mark.parametrize("keep", [None, 1, 8])  # every place; a count of places to keep
def test_nan_logits_are_refused(keep):
    logits = torch.randn(2, 8, 200) * 0.3
    logits[1, 3, 5] = float("nan")
    best = None if keep is None else torch.tensor([keep, keep])
    with pytest.raises(ValueError, match="NaN"):
        nucleus_draw(logits, 0.9, 1.0, torch.Generator().manual_seed(0), "entropy", best=best)


@pytest.mark.parametrize("kind", ["margin", "entropy"])
def test_best_draws_only_the_places_it_keeps(kind):
    """With `best`, every place among its batch row's best[b] scores is drawn as without `best`. A
    margin does not depend on the draw: places read from buckets after the first get their scores
    first and are drawn only if among the best[b], so exactly best[b] places are drawn (no ties among
    these scores). The entropy's bounds are tight: the places read are drawn at once, few beyond the
    best[b] (best[b] // 8 + 2 more are read first, and hardly any after them)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 200, 1024, generator=g) * 0.3
    best = torch.tensor([0, 5, 50, 200])
    full = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(1), kind)
    lazy = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(1), kind, best=best)
    drawn = lazy[0] >= 0
    if kind == "margin":
        assert drawn.sum(1).tolist() == best.tolist()
    else:
        assert drawn[0].sum() == 0 and drawn[3].all()
        assert (drawn[1:3].sum(1) <= best[1:3] + best[1:3] // 8 + 4).all()  # best[b] // 8 + 2 more are read first
    assert torch.equal(lazy[0][drawn], full[0][drawn]) and torch.equal(lazy[1][drawn], full[1][drawn])
    for b in range(1, 4):
        assert set(full[1][b].topk(int(best[b])).indices.tolist()) <= set(drawn[b].nonzero()[:, 0].tolist())
    assert (lazy[1][~drawn] == float("-inf")).all()
