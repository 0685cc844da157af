"""Upper bounds on a nucleus's entropy score that let `nucleus_draw` with `best` skip places: from the
tokens above a threshold (`nucleus_bounds.threshold_bound`) and from buckets of the weights
(`nucleus_buckets.entropy_bound`). Each is checked by hand, never below the score the draw computes
(flat to peaked rows, ties, -inf, float32 and float64), and tight where it is meant to be; and the
lazy draw reads few more places than it keeps on an untrained model's flat rows."""

import math
import sys
from statistics import NormalDist

import pytest
import torch

from unmask.sampling import nucleus_draw
from unmask.sampling.categorical import shifted_weights
from unmask.sampling.nucleus_bounds import threshold_bound
from unmask.sampling.nucleus_buckets import entropy_bound

categorical_module = sys.modules["unmask.sampling.categorical"]


def weighed(logits, temperature):
    """The weights, exponents, totals and sums of squares `nucleus_draw` bounds a row from."""
    weights, exponents = torch.empty_like(logits), torch.empty_like(logits)
    shifted_weights(logits, logits.amax(-1, keepdim=True), temperature, weights, exponents)
    norm = weights.sum(-1, keepdim=True).double()
    return weights, exponents, norm, torch.linalg.vector_norm(weights, dim=-1).double().square()


def threshold(logits, temperature, top_p):
    weights, exponents, norm, square = weighed(logits, temperature)
    return threshold_bound(weights, exponents, norm, square, top_p, torch.empty_like(weights))[:2]


def buckets(logits, temperature, top_p):
    weights, exponents, norm, _ = weighed(logits, temperature)
    return entropy_bound(weights, norm, lambda: exponents, top_p)


def test_the_threshold_bound_by_hand():
    """Weights 1, 1, 1/2, 1/2 (total 3), top-p 0.8. The log-normal guess: s^2 = log(4 * 2.5 / 9),
    log tau = log(3 / 4) + s^2 / 2 + (0.1 - z_0.8) s, tau about 0.62: the two weights 1 (exponents 0)
    are above it, with mass 2/3 < 0.8, so they lie in the nucleus and the rest of it has exponents at
    most log tau: the bound is (0 - 2 log tau) / 2.4 + log tau - log 2.4, about -0.955. The true score,
    of the nucleus (1/3, 1/3, 1/6) renormalised, is 2 (0.4 log 0.4) + 0.2 log 0.2, about -1.055."""
    logits = torch.log(torch.tensor([[1.0, 1.0, 0.5, 0.5]], dtype=torch.float64))
    bound, ok = threshold(logits, 1.0, 0.8)
    assert ok.tolist() == [True]
    spread = math.sqrt(math.log(4 * 2.5 / 9))
    log_tau = math.log(3 / 4) + spread**2 / 2 + (0.1 - NormalDist().inv_cdf(0.8)) * spread
    expected = -2 * log_tau / 2.4 + log_tau - math.log(2.4)
    assert bound.item() == pytest.approx(expected, abs=1e-5)  # and a slack of a few ulps
    exact = 2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)
    assert nucleus_draw(logits, 0.8, 1.0, None, "entropy")[1].item() == pytest.approx(exact, abs=1e-12)
    assert exact < bound.item() < exact + 0.11


def test_the_threshold_bound_is_not_given_where_the_mass_above_the_guess_reaches_top_p():
    """The same weights at top-p 0.5: the guess tau (about 0.82) leaves both weights 1 above it, mass
    2/3 >= 0.5, so they need not all lie in the nucleus; the bound is +inf there."""
    logits = torch.log(torch.tensor([[1.0, 1.0, 0.5, 0.5]], dtype=torch.float64))
    bound, ok = threshold(logits, 1.0, 0.5)
    assert ok.tolist() == [False] and bound.item() == math.inf


def test_the_bucket_bound_by_hand():
    """Weights 1, 1/2, 1/2, 1/4 (total 2.25), top-p 0.5: bucket 0 (the 1) holds 4/9 < 0.5, so the
    nucleus ends in bucket 8 ([1/2, 9/16)), with 4/9 before it. A kept token there has an exponent below
    log(9/16) and m >= 0.5; the head's terms are 0 (weight 1, exponent 0). So the bound is
    (1 - (4/9) / 0.5) log(9/16) - log(2.25 * 0.5); the true score, of (2/3, 1/3), about -0.637."""
    logits = torch.log(torch.tensor([[1.0, 0.5, 0.5, 0.25]], dtype=torch.float64))
    bound = buckets(logits, 1.0, 0.5)
    expected = (1 - (4 / 9) / 0.5) * math.log(9 / 16) - math.log(2.25 * 0.5)
    assert bound.item() == pytest.approx(expected, abs=1e-5)
    exact = (2 / 3) * math.log(2 / 3) + (1 / 3) * math.log(1 / 3)
    assert nucleus_draw(logits, 0.5, 1.0, None, "entropy")[1].item() == pytest.approx(exact, abs=1e-12)


def rows(dtype, seed):
    """Rows from flat to peaked, with ties, runs of equal logits and -inf tokens."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(96, 300, generator=g, dtype=dtype) * torch.rand(96, 1, generator=g, dtype=dtype) * 3
    logits[:8] = logits[:8].round()  # many ties
    logits[8:16, :150] = float("-inf")
    logits[16:20] = 0.0  # every token tied
    logits[20:24, :5] = logits[20:24].amax(-1, keepdim=True) + 4  # a few tokens far above the rest
    return logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature,top_p", [(0.2, 0.95), (1.0, 0.9), (0.5, 0.5), (1.0, 0.999)])
def test_both_bounds_are_never_below_the_score(dtype, temperature, top_p):
    for seed in range(3):
        logits = rows(dtype, seed)
        score = nucleus_draw(logits, top_p, temperature, None, "entropy")[1]
        bound, ok = threshold(logits, temperature, top_p)
        assert (bound[ok] >= score[ok]).all() and (bound[~ok] == math.inf).all()
        assert (buckets(logits, temperature, top_p) >= score).all()


def test_the_bounds_are_tight_on_an_untrained_models_flat_rows():
    """Gaussian logits of std 0.3 at Dream's T 0.2, top-p 0.95 (half of V in the nucleus): the threshold
    bound is given for every row and within 0.006 of the score, the bucket bound within 0.003 (a
    bucket spans log(9/8) = 0.118 nats and the edge bucket holds a few percent of the nucleus). The
    scores themselves spread by about 0.07, so either bound tells most rows apart."""
    logits = torch.randn(128, 1024, generator=torch.Generator().manual_seed(0)) * 0.3
    score = nucleus_draw(logits, 0.95, 0.2, None, "entropy")[1]
    bound, ok = threshold(logits, 0.2, 0.95)
    assert ok.all() and (bound - score).max() < 0.006
    assert (buckets(logits, 0.2, 0.95) - score).max() < 0.003
    assert score.std() > 0.04


def test_the_lazy_draw_reads_few_places_beyond_those_it_keeps(monkeypatch):
    """On flat rows (1024 places of V 1024, keeping 21 of 256 in each batch row), the bounds let the
    draw read under 1.5 times the places it keeps; every place among the best is drawn, and every place
    drawn has the token and score of the draw that reads every place."""
    seen = []
    original = categorical_module.read_bucketed
    monkeypatch.setattr(categorical_module, "read_bucketed",
                        lambda rows, *a: seen.append(len(rows)) or original(rows, *a))
    logits = torch.randn(4, 256, 1024, generator=torch.Generator().manual_seed(1)) * 0.3
    best = torch.full((4,), 21)
    lazy = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(2), "entropy", best=best)
    assert sum(seen) < 1.5 * best.sum()
    monkeypatch.undo()
    full = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(2), "entropy")
    drawn = lazy[0] >= 0
    assert torch.equal(lazy[0][drawn], full[0][drawn]) and torch.equal(lazy[1][drawn], full[1][drawn])
    for b in range(4):
        assert set(full[1][b].topk(21).indices.tolist()) <= set(drawn[b].nonzero()[:, 0].tolist())


def test_a_nucleus_under_64_tokens_is_still_read_from_its_top_64(monkeypatch):
    """Gaussian logits of std 1 over V = 80 at T 1, top-p 0.95: nuclei of 53 to 63 tokens. The threshold
    bound is given and counts fewer tokens above its threshold than the nucleus holds, so the rows are
    still read from their top 64 (no bucket read), with the tokens and scores of the draw without
    `best`."""
    logits = torch.randn(1, 8, 80, generator=torch.Generator().manual_seed(0))
    bound, ok = threshold(logits[0], 1.0, 0.95)
    assert ok.all()
    seen = []
    original = categorical_module.read_bucketed
    monkeypatch.setattr(categorical_module, "read_bucketed",
                        lambda rows, *a: seen.append(len(rows)) or original(rows, *a))
    lazy = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(1), "entropy", best=torch.tensor([3]))
    full = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(1), "entropy")
    assert not seen
    drawn = lazy[0] >= 0
    assert drawn.sum() >= 3
    assert torch.equal(lazy[0][drawn], full[0][drawn]) and torch.equal(lazy[1][drawn], full[1][drawn])
