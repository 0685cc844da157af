"""`commit_best`: each row's best place with ties at random, the same places as `commit_top(scores, 1)`
for the same generator, in fewer operations (threshold decoding's "at least the surest one")."""

import torch

from unmask.sampling.select import commit_best, commit_top

INF = float("inf")


def test_equals_commit_top_of_one_for_the_same_draws():
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        b, n = 5, 1 + seed % 13
        scores = torch.randint(0, 3, (b, n), generator=g).double()  # many ties
        scores[torch.rand(b, n, generator=g) < 0.3] = -INF
        scores[0] = -INF  # a row with no eligible place
        want = commit_top(scores, torch.ones(b, dtype=torch.long), torch.Generator().manual_seed(seed))
        got = commit_best(scores, torch.Generator().manual_seed(seed))
        assert torch.equal(got, want), seed
        assert got.sum(1).tolist() == (scores > -INF).any(1).long().tolist()  # one place, or none


def test_a_unique_best_is_taken_and_ties_are_uniform():
    scores = torch.tensor([[0.1, 0.7, -INF, 0.2], [-INF, -INF, -INF, -INF]], dtype=torch.float64)
    assert commit_best(scores).tolist() == [[False, True, False, False], [False] * 4]
    # three tied best places of eight: each taken about a third of the time (fixed seed; 3000 draws,
    # a share off by more than 0.05 is over 6 standard deviations)
    tied = torch.tensor([[1.0, 3.0, 3.0, 2.0, -INF, 3.0, 0.0, 2.9]]).expand(3000, -1)
    picks = commit_best(tied, torch.Generator().manual_seed(1))
    assert picks.sum(1).eq(1).all() and picks[:, [0, 3, 4, 6, 7]].sum() == 0
    share = picks[:, [1, 2, 5]].double().mean(0)
    assert (share - 1 / 3).abs().max() < 0.05, share
