"""`nucleus_draw`: one sort per row, the draw and its scores read in sorted order, against the plain
`nucleus` + `categorical` + `confidence` path computed another way."""

import math

import pytest
import torch

from unmask.sampling import categorical, nucleus, nucleus_draw
from unmask.sampling.confidence import confidence, log_probs


def nucleus_probs(logits, top_p, temperature):
    """The exact renormalised nucleus distribution, by brute force over each token."""
    p = (logits.double() / temperature).softmax(-1)
    before = torch.stack([(p * (p > p[..., j : j + 1])).sum(-1) for j in range(p.shape[-1])], -1)
    q = p * (before < top_p)
    return q / q.sum(-1, keepdim=True)


def assert_draws_follow_the_nucleus(logits, top_p, temperature, n):
    """n draws of the one row `logits` [V] against the exact renormalised nucleus: every frequency
    within 5 sigma, none outside the nucleus. Returns the exact law."""
    exact = nucleus_probs(logits, top_p, temperature)
    drawn, _ = nucleus_draw(logits.expand(n, -1), top_p, temperature, torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=len(logits)).double() / n
    sigma = (exact * (1 - exact) / n).sqrt()
    assert torch.all((freq - exact).abs() <= 5 * sigma + 1e-12), (freq, exact)
    assert torch.all(freq[exact == 0] == 0)  # outside the nucleus: never
    return exact


@pytest.mark.parametrize("top_p,temperature", [(0.7, 1.0), (0.95, 0.5), (1.0, 2.0), (0.3, 1.0)])
def test_frequencies_match_the_renormalised_nucleus(top_p, temperature):
    assert_draws_follow_the_nucleus(torch.tensor([2.0, 0.5, 1.0, -1.0, 1.5, 0.0]), top_p, temperature, 200_000)


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_scores_equal_confidence_of_the_filtered_distribution(kind, temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 50, generator=g) * 3
    logits[:5, 7:] = float("-inf")  # rows whose tail has no mass
    drawn, score = nucleus_draw(logits, 0.9, temperature, torch.Generator().manual_seed(2), kind)
    scaled = logits.double() / temperature if temperature > 0 else logits.double()
    reference = confidence(log_probs(nucleus(scaled, 0.9)), drawn, kind)
    # the weights are float32 exps (a few ulps each), summed in float64: 1e-5 relative covers the
    # margin's difference of two probabilities; a wrong normaliser or nucleus is off by far more
    torch.testing.assert_close(score, reference, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(logits.gather(1, drawn[:, None])).all()


def test_temperature_zero_is_argmax_with_first_index_on_ties():
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -3.0, 4.0]])
    drawn, _ = nucleus_draw(logits, 0.5, 0.0)
    assert drawn.tolist() == [1, 0, 3]
    assert drawn.tolist() == categorical(logits, 0.0).tolist()


def test_single_token_nucleus_and_shapes():
    logits = torch.tensor([[[10.0, 0.0, 0.0]] * 4] * 2)  # [2, 4, 3]: the top token holds > 0.99
    drawn, margin = nucleus_draw(logits, 0.9, 1.0, torch.Generator().manual_seed(0), "margin")
    assert drawn.shape == (2, 4) and margin.shape == (2, 4)
    assert (drawn == 0).all() and torch.allclose(margin, torch.ones(2, 4, dtype=torch.float64))


def test_many_rows_cross_block_boundaries():
    """Rows are processed in blocks (32 rows of 16384 here); every block must draw from its own rows."""
    v = 16384
    logits = torch.full((100, v), -5.0)
    target = torch.arange(100) * 37 % v
    logits[torch.arange(100), target] = 20.0
    drawn, p = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(0), "probability")
    assert drawn.tolist() == target.tolist()
    assert torch.allclose(p, torch.ones(100, dtype=torch.float64))


def test_same_generator_same_draws():
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(3))
    a, _ = nucleus_draw(logits, 0.8, 1.0, torch.Generator().manual_seed(9))
    b, _ = nucleus_draw(logits, 0.8, 1.0, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", [{"top_p": 0.0}, {"top_p": -1.0}, {"temperature": -1.0},
                                    {"temperature": float("nan")}, {"score": "confidence"}])
def test_bad_arguments(kwargs):
    args = {"top_p": 0.9, "temperature": 1.0, "score": None} | kwargs
    with pytest.raises(ValueError):
        nucleus_draw(torch.zeros(2, 3), args["top_p"], args["temperature"], None, args["score"])


def full_sort_only(monkeypatch):
    """Make every row take the full-sort path (no top-K read)."""
    import sys

    monkeypatch.setattr(sys.modules["unmask.sampling.categorical"], "_NUCLEUS_TOP_K", ())


def rows_mixed(v=300, n=256):
    """Rows whose nucleus fits in the top 64 (peaked) and rows where it does not (flat), interleaved,
    plus rows with ties: a tied top pair, and a tie of 100 tokens across the 64th place."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(n, v, generator=g) * torch.where(torch.arange(n) % 2 == 0, 8.0, 0.3)[:, None]
    logits[0] = -20.0
    logits[0, 5] = logits[0, 250] = 4.0  # a tied pair on top (topk(8) returns 250 first)
    logits[1] = -20.0
    logits[1, 7] = 3.0
    logits[1, 100:200] = 0.0  # 100 tied tokens: the nucleus ends among them, past the 64th place
    logits[2] = -20.0
    logits[2, 250] = 7.0
    logits[2, :100] = 0.0  # at temperature 1 the nucleus ends at the 41st of 100 tied tokens, inside the top 64,
    return logits  # but topk need not return the tied ids in order: ids 0..40 are the nucleus


@pytest.mark.parametrize("kind,v", [(None, 300), ("probability", 300), ("margin", 300), ("entropy", 300),
                                    ("entropy", 1024), ("entropy", 4096)])  # 4096: the top 8 read from chunks of 32
@pytest.mark.parametrize("temperature", [0.0, 0.2, 1.0])
def test_the_top_k_read_equals_the_full_sort_token_for_token(kind, v, temperature, monkeypatch):
    logits = rows_mixed(v)
    p = (logits.double() / (temperature or 1.0)).softmax(-1)
    sizes = torch.isfinite(nucleus(p.log(), 0.95)).sum(-1)
    assert (sizes < 64).sum() > 50 and (sizes >= 64).sum() > 50  # both paths are taken
    fast = nucleus_draw(logits, 0.95, temperature, torch.Generator().manual_seed(3), kind)
    full_sort_only(monkeypatch)
    full = nucleus_draw(logits, 0.95, temperature, torch.Generator().manual_seed(3), kind)
    assert torch.equal(fast[0], full[0])
    if kind:  # the top-K read sums as the sort does; the buckets (nuclei past 64 tokens) sum bucket by bucket
        small = sizes < 64
        small[:3] = False  # ties across the K-th place: read from buckets
        assert torch.equal(fast[1][small], full[1][small])
        torch.testing.assert_close(fast[1], full[1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
def test_a_single_token_nucleus_is_read_from_the_argmax_only_where_it_reaches_top_p(kind, monkeypatch):
    """Rows whose top token's probability sweeps across top_p = 0.95: at or above it the nucleus is that
    token alone (read from the argmax, score 1, 1 or 0), below it the nucleus holds a second token; the
    fast path equals the full sort token for token and score for score on every row."""
    v, n = 512, 200
    p_top = torch.linspace(0.93, 0.97, n, dtype=torch.float64)
    probs = torch.full((n, v), 1e-9, dtype=torch.float64)
    probs[:, 7] = p_top
    probs[:, 300] = 0.6 * (1 - p_top)  # the second token
    probs[:, 11] = 0.4 * (1 - p_top)
    logits = probs.log().float()
    alone = torch.isfinite(nucleus(logits.double(), 0.95)).sum(-1) == 1
    assert 20 < alone.sum() < n - 20
    fast = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(3), kind)
    full_sort_only(monkeypatch)
    full = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(3), kind)
    assert torch.equal(fast[0], full[0]) and torch.equal(fast[1], full[1])
    sure = 0.0 if kind == "entropy" else 1.0  # (p log p) / p - log p may leave 1e-17 for the entropy
    assert (fast[0][alone] == 7).all() and ((fast[1][alone] - sure).abs() < 1e-15).all()
    assert ((fast[1][~alone] - sure).abs() > 1e-3).all()


def test_ties_inside_the_nucleus_are_ordered_by_index_on_both_paths(monkeypatch):
    """A tied top pair at temperature 0 gives the lower id; where the nucleus ends among 100 tied
    tokens (past the 64th place, or inside it) exactly the nucleus's tied ids are drawn, never others."""
    logits = rows_mixed()[:3]
    drawn, _ = nucleus_draw(logits, 0.95, 0.0)
    assert drawn[0].item() == 5
    assert torch.isfinite(nucleus(logits[2:3].double(), 0.95)).sum() == 42  # 250 and ids 0..40
    for row in (1, 2):
        allowed = torch.isfinite(nucleus(logits[row : row + 1].double(), 0.95))[0]
        seen = nucleus_draw(logits[row : row + 1].expand(40_000, -1), 0.95, 1.0, torch.Generator().manual_seed(0))[0]
        assert allowed[seen].all()
        assert set(seen.tolist()) == set(torch.nonzero(allowed).squeeze(1).tolist())


def test_frequencies_match_the_nucleus_when_read_from_the_top_k():
    """V = 200, a nucleus of a few tokens: the top-K path's draws against the exact law."""
    g = torch.Generator().manual_seed(7)
    exact = assert_draws_follow_the_nucleus(torch.randn(200, generator=g) * 4, 0.9, 0.5, 200_000)
    assert 2 <= (exact > 0).sum() < 64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_logits_are_left_as_they_were(dtype):
    logits = torch.randn(40, 100, generator=torch.Generator().manual_seed(0), dtype=dtype) * 5
    before = logits.clone()
    nucleus_draw(logits, 0.9, 1.0, torch.Generator().manual_seed(0), "entropy")
    nucleus_draw(logits, 0.9, 0.5, torch.Generator().manual_seed(0), "entropy")
    assert torch.equal(logits, before)


@pytest.mark.parametrize("v", [1000, 1024, 4100])
def test_a_row_draws_the_same_alone_and_among_others(v):
    """Token and score of each row do not depend on the rows around it (a batch mate's size or
    place in the block), for the top-K reads and the full sort alike."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(40, v, generator=g) * torch.linspace(0.5, 12, 40)[:, None]  # flat to peaked rows
    u = torch.Generator().manual_seed(6)
    together = nucleus_draw(logits, 0.9, 0.7, u, "entropy")
    state = torch.Generator().manual_seed(6)
    alone = [nucleus_draw(logits[i : i + 1], 0.9, 0.7, state, "entropy") for i in range(40)]
    assert torch.equal(together[0], torch.cat([a[0] for a in alone]))
    assert torch.equal(together[1], torch.cat([a[1] for a in alone]))


@pytest.mark.parametrize("v", [4096, 4100, 8192])  # at k = 8 and 16 these are read from chunks
def test_the_chunked_top_k_finds_every_token_above_the_k_th_value(v):
    """`_top_k` reads the top k from the k chunks of 32 with the largest maxima: its k-th value equals
    topk's, and its tokens above that value are topk's, including rows whose top tokens crowd into
    one chunk, spread one per chunk, or tie."""
    from unmask.sampling.categorical import _top_k

    g = torch.Generator().manual_seed(v)
    rows = torch.randn(64, v, generator=g)
    rows[0, 32:40] += 10  # the top 8 inside one chunk
    rows[1, ::32] += 10  # one per chunk
    rows[2] = torch.randint(0, 3, (v,), generator=g).float()  # ties everywhere
    rows[3, -7:] += 10  # in the last, padded chunk when V = 4100
    for k in (8, 16):
        values, ids = _top_k(rows, k)
        ref_values, ref_ids = rows.topk(k, dim=-1)
        assert torch.equal(values, ref_values)
        assert torch.equal(rows.gather(1, ids), values)
        above = ref_values > ref_values[:, -1:]
        for i in range(len(rows)):
            assert set(ids[i][above[i]].tolist()) == set(ref_ids[i][above[i]].tolist())


@pytest.mark.parametrize("share", [0.4, 1.0])
def test_where_draws_as_the_gathered_rows(share):
    """`where=` draws the selected rows of the unflattened logits, the same tokens and scores as
    drawing `logits[where]` with the same generator (rows across blocks; all rows selected too)."""
    logits = torch.randn(3, 400, 1000, generator=torch.Generator().manual_seed(0)) * 6
    where = torch.rand(3, 400, generator=torch.Generator().manual_seed(1)) < share
    a = nucleus_draw(logits, 0.9, 0.5, torch.Generator().manual_seed(2), "margin", where)
    b = nucleus_draw(logits[where], 0.9, 0.5, torch.Generator().manual_seed(2), "margin")
    assert a[0].shape == (int(where.sum()),)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _sharp_rows(b, n, v, seed):
    """Logits [b, n, v] from flat to one-token nuclei (at T 0.2, top-p 0.95), some rows near the edge."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, v, generator=g) * torch.rand(b, n, 1, generator=g) * 3


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
@pytest.mark.parametrize("keep_weights", [True, False])
def test_best_reads_only_rows_that_may_be_among_the_best(kind, keep_weights, monkeypatch):
    """With `best`, the rows not read are exactly rows whose true score is below their batch row's
    best[b]-th score; every row read has its token and score from the draw without `best`; and the
    greedy choice of places (`commit_top`, the same generator) is the same. Rows span blocks, and
    the first pass's weights are kept or made again."""
    import importlib

    from unmask.sampling.select import commit_top

    cat = importlib.import_module("unmask.sampling.categorical")

    if not keep_weights:
        monkeypatch.setattr(cat, "_KEPT_ELEMENTS", 0)
    monkeypatch.setattr(cat, "_LAZY_BLOCK_ELEMENTS", 64 * 300)  # blocks of 64 rows
    b, n, v = 4, 150, 300
    logits = _sharp_rows(b, n, v, 3)
    where = torch.rand(b, n, generator=torch.Generator().manual_seed(4)) < 0.8
    best = torch.tensor([0, 3, 20, int(where[3].sum())])  # none, few, many, every hidden place
    full = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(5), kind, where)
    lazy = nucleus_draw(logits, 0.95, 0.2, torch.Generator().manual_seed(5), kind, where, best)
    read = lazy[0] >= 0
    assert torch.equal(lazy[0][read], full[0][read]) and torch.equal(lazy[1][read], full[1][read])
    assert (lazy[1][~read] == float("-inf")).all()
    batch = where.nonzero()[:, 0]
    top = 0.0 if kind == "entropy" else 1.0  # a one-token nucleus's score, read before any choice
    assert (full[1][read & (batch == 0)] > top - 1e-9).all() and read[batch == 3].all()
    assert (~read[batch == 1]).sum() > 50 and (~read[batch == 2]).sum() > 20  # the test has teeth
    for row in range(b):
        if best[row] == 0:
            continue
        mine = full[1][batch == row]
        cut = mine.sort(descending=True).values[best[row] - 1]
        assert (mine[~read[batch == row]] < cut).all()
    scores = [torch.full((b, n), float("-inf"), dtype=torch.float64).masked_scatter(where, s[1]) for s in (full, lazy)]
    picks = [commit_top(s, best, torch.Generator().manual_seed(6)) for s in scores]
    assert torch.equal(picks[0], picks[1])


def test_best_skips_rows_below_the_one_token_nuclei_by_hand():
    """One batch row, six places: five whose top token alone holds 0.95 of the mass at T = 1, one with
    two equal tokens. Keeping 2 (and reading first the 2 + 2 rows of highest bounds, all one-token
    nuclei), the pair is not read (negative entropy at most log(0.5 / 0.95) < 0, theirs 0); keeping 6
    it is, with entropy log 2."""
    logits = torch.full((1, 6, 12), -30.0)  # V > 8: the places' bounds are read (below, all are sorted)
    for place in range(5):
        logits[0, place, place] = 0.0
    logits[0, 5, 2] = logits[0, 5, 5] = 0.0
    tokens, scores = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(0), "entropy",
                                  best=torch.tensor([2]))
    assert tokens.tolist() == [[0, 1, 2, 3, 4, -1]] and scores[0, 5] == float("-inf")
    assert scores[0, :5].abs().max() < 1e-12
    tokens, scores = nucleus_draw(logits, 0.95, 1.0, torch.Generator().manual_seed(0), "entropy",
                                  best=torch.tensor([6]))
    assert tokens[0, 5] in (2, 5) and abs(scores[0, 5].item() + math.log(2)) < 1e-9


def test_best_must_come_with_a_score_and_one_count_per_batch_row():
    logits = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="best"):
        nucleus_draw(logits, 0.9, 1.0, None, None, best=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="best"):
        nucleus_draw(logits, 0.9, 1.0, None, "entropy", best=torch.tensor([1]))


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.95])
def test_the_score_bound_is_above_every_score(kind, top_p):
    """`score_bound` from p1 and the sum of squared probabilities (computed here in float64) is at
    least the score `nucleus_draw` gives, on rows from flat to one-token nuclei."""
    from unmask.sampling.categorical import score_bound

    logits = _sharp_rows(1, 2000, 200, 7)[0] * 3
    scores = nucleus_draw(logits, top_p, 0.5, torch.Generator().manual_seed(0), kind)[1]
    p = (logits.double() / 0.5).softmax(-1)
    bound = score_bound(kind, p.amax(-1), p.square().sum(-1), top_p)
    assert (scores <= bound + 1e-12).all()
    assert (bound - scores).min() < 1e-3  # tight somewhere (one-token nuclei)


def test_the_score_bound_by_hand():
    """Four tokens of probability 0.2 and 0.2 spread over twenty more, top-p 0.8: the nucleus is the
    four, of mass 0.8 = top-p, so the bounds are reached: each token's renormalised probability 1/4,
    negative entropy -log 4. With top-p 0.5 the nucleus (three tokens, mass 0.6) bounds at 0.4."""
    from unmask.sampling.categorical import score_bound

    p1, squared = torch.tensor([0.2], dtype=torch.float64), torch.tensor([4 * 0.04 + 20 * 0.01**2], dtype=torch.float64)
    assert score_bound("probability", p1, None, 0.8).item() == pytest.approx(0.25, rel=1e-12)
    assert score_bound("margin", p1, None, 0.5).item() == pytest.approx(0.4, rel=1e-12)
    assert score_bound("entropy", p1, squared, 0.8).item() == pytest.approx(-math.log(4), rel=1e-12)
    # the collision bound is the tighter one where the top token stands apart: 0.5, then 0.05 x 10
    p1, squared = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.25 + 10 * 0.0025], dtype=torch.float64)
    assert score_bound("entropy", p1, squared, 0.95).item() == pytest.approx(math.log(0.275 / 0.95**2), rel=1e-12)
    assert score_bound("entropy", p1, None, 0.95).item() == pytest.approx(math.log(0.5 / 0.95), rel=1e-12)


def test_kth_largest_in_each_batch_row_by_hand():
    """`_kth_largest`: batch row 0 holds 3.0, 1.0, 2.0 at places 0, 2, 3 of N = 4, row 1 holds 5.0 and
    5.0 (a tie) and row 2 nothing: the 2nd largest of row 0 is 2.0, the 2nd of row 1 is 5.0 (ties
    count), k = 0 gives +inf, more than a row holds -inf, and k beyond N is taken as N."""
    from unmask.sampling.categorical import _kth_largest

    values = torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0], dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1])
    place = torch.tensor([0, 2, 3, 1, 2])
    kth = lambda *k: _kth_largest(values, batch, place, (3, 4), torch.tensor(k)).tolist()  # noqa: E731
    assert kth(2, 2, 1) == [2.0, 5.0, -math.inf]
    assert kth(0, 3, 0) == [math.inf, -math.inf, math.inf]
    assert kth(1, 1, 9) == [3.0, 5.0, -math.inf]
    assert kth(3, 9, 2) == [1.0, -math.inf, -math.inf]
    full = _kth_largest(values[:3], batch[:3], torch.tensor([0, 1, 2]), (1, 3), torch.tensor([7]))
    assert full.tolist() == [1.0]  # k > N = 3: the smallest, every value at or above it
