"""AWRS against token masking (Lipkin et al. 2025, "Fast Controlled Generation from Language Models with
Adaptive Weighted Rejection Sampling", arXiv:2504.05410, P24; `sampling/constrained.py`).

What makes it that paper: the accepted token is an exact draw from p restricted to the valid tokens,
the weight is an unbiased estimate of the valid mass Z = sum of p over valid tokens, and the
constraint is called on the tested tokens only (rejections + the accepted one + one coin for the
weight), not on all V as token masking does. The first tests enumerate every order of a small
vocabulary with its Plackett-Luce probability (the law of Gumbel-key order, i.e. sampling without
replacement), so expectations are exact, not Monte Carlo.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import unmask.sampling.constrained as constrained
from toys import Factorised, total_variation
from unmask.sampling import generate
from unmask.sampling.constrained import ConstrainedSampler, awrs, token_masking


def plackett_luce(p: list[float], order: tuple[int, ...]) -> float:
    """Probability that sampling without replacement from p visits tokens in `order`."""
    prob, left = 1.0, 1.0
    for v in order:
        prob *= p[v] / left
        left -= p[v]
    return prob


def forced(monkeypatch, order: tuple[int, ...]) -> None:
    """Make AWRS's Gumbel keys follow `order` (noise that dwarfs any finite log p)."""
    noise = torch.zeros(len(order), dtype=torch.float64)
    noise[list(order)] = 1e6 * torch.arange(len(order), 0, -1, dtype=torch.float64)
    monkeypatch.setattr(constrained, "gumbel", lambda shape, generator=None, device=None: noise.clone())


CASES = [  # (probabilities, valid tokens)
    ([0.5, 0.2, 0.3], {1, 2}),
    ([0.05, 0.4, 0.1, 0.25, 0.2], {0, 2}),
    ([0.3, 0.1, 0.15, 0.05, 0.25, 0.15], {3}),
    ([0.3, 0.1, 0.15, 0.05, 0.25, 0.15], {0, 1, 2, 3, 4, 5}),
]


@pytest.mark.parametrize("p, valid", CASES)
def test_awrs_over_every_order_is_exact_unbiased_and_calls_only_what_it_tests(monkeypatch, p, valid):
    logits = torch.tensor(p, dtype=torch.float64).log()
    z = sum(p[v] for v in valid)
    law, mean_weight, mean_calls, total = [0.0] * len(p), 0.0, 0.0, 0.0
    for order in itertools.permutations(range(len(p))):
        forced(monkeypatch, order)
        seen = []
        token, log_weight, calls = awrs(logits, lambda v, seen=seen: seen.append(v) or v in valid)
        first = next(i for i, v in enumerate(order) if v in valid)
        tested = list(order[: first + 2])  # rejections, the accepted token, one coin for the weight
        assert token == order[first] and seen == tested and calls == len(tested)
        coin = first + 1 < len(p) and order[first + 1] in valid
        untested = 1.0 - sum(p[v] for v in order[: first + 1])
        assert math.exp(log_weight) == pytest.approx(p[token] + untested * coin, abs=1e-12)
        prob = plackett_luce(p, order)
        total += prob
        law[token] += prob
        mean_weight += prob * math.exp(log_weight)
        mean_calls += prob * calls
    assert total == pytest.approx(1.0, abs=1e-12)
    assert law == pytest.approx([p[v] / z if v in valid else 0.0 for v in range(len(p))], abs=1e-12)
    assert mean_weight == pytest.approx(z, abs=1e-12)  # E[weight] = Z exactly, not only on average of draws
    assert mean_calls <= len(p)


def test_awrs_weight_is_exactly_one_when_every_token_is_valid():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        token, log_weight, calls = awrs(torch.randn(30, generator=g), lambda v: True, generator=g)
        assert log_weight == pytest.approx(0.0, abs=1e-12) and calls == 2


def random_valid_set(p: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Bool[V]: tokens taken in random order until their mass reaches `share` of p."""
    order = torch.randperm(len(p), generator=generator)
    take = p[order].cumsum(0) <= share
    take[0] = True
    valid = torch.zeros(len(p), dtype=torch.bool)
    valid[order[take]] = True
    return valid


@pytest.mark.parametrize("share", [0.5, 0.05])
def test_awrs_weight_mean_over_many_draws_is_z(share):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(200, generator=g, dtype=torch.float64) * 2
    p = logits.softmax(0)
    valid = random_valid_set(p, share, g)
    z = float(p[valid].sum())
    allowed = valid.tolist()
    draws = [awrs(logits, allowed.__getitem__, generator=g) for _ in range(6000)]
    w = torch.tensor([math.exp(d.log_weight) for d in draws], dtype=torch.float64)
    assert all(allowed[d.token] for d in draws)
    # stated tolerance: 4 standard errors of the mean (a wrong tail term moves the mean by far more)
    assert abs(w.mean().item() - z) < 4 * w.std().item() / math.sqrt(len(w))
    counts = torch.bincount(torch.tensor([d.token for d in draws]), minlength=200).double()
    assert total_variation(counts / counts.sum(), torch.where(valid, p, 0) / z) < 0.1


def test_awrs_calls_far_fewer_than_v_when_most_mass_is_valid():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(500, generator=g, dtype=torch.float64) * 2
    valid = random_valid_set(logits.softmax(0), 0.9, g).tolist()
    calls = [awrs(logits, valid.__getitem__, generator=g).calls for _ in range(2000)]
    assert sum(calls) / len(calls) < 4  # about 1 / 0.9 tests to accept, plus the coin
    assert max(calls) < 500


def test_token_masking_calls_every_token_and_weighs_by_the_exact_z():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, generator=g) * 1.5
    valid = [True, False, True, False, False, True, True, False]
    p = torch.softmax(logits.double(), 0)
    z = float(p[torch.tensor(valid)].sum())
    counts = torch.zeros(8, dtype=torch.float64)
    for _ in range(2500):
        seen = []
        token, log_weight, calls = token_masking(logits, lambda v, seen=seen: seen.append(v) or valid[v],
                                                 generator=g)
        assert seen == list(range(8)) and calls == 8
        assert log_weight == pytest.approx(math.log(z), abs=1e-12)
        counts[token] += 1
    # 2500 exact draws over 4 tokens give a TV of about 0.01; a draw from unrestricted p gives about 0.4
    assert total_variation(counts / counts.sum(), torch.where(torch.tensor(valid), p, 0) / z) < 0.035


def test_no_valid_token_gives_minus_one_and_zero_weight_for_both_draws():
    for draw in (awrs, token_masking):
        token, log_weight, calls = draw(torch.randn(6), lambda v: False)
        assert token == -1 and log_weight == float("-inf") and calls == 6


def test_constrained_sampler_by_token_masking_counts_v_calls_per_token_and_sums_exact_log_z():
    v, n, rows = 5, 6, 4
    logits = torch.randn(n, v, generator=torch.Generator().manual_seed(2))
    not_zero = ConstrainedSampler(lambda row, pos, token: token != 0, steps=3, draw="masking")
    out = generate(Factorised(logits), torch.full((rows, n), v), not_zero, mask_id=v,
                   generator=torch.Generator().manual_seed(0))
    assert (out.tokens != 0).all() and out.state.constraint_calls == rows * n * v
    log_z = float(torch.log1p(-logits.double().softmax(-1)[:, 0]).sum())
    assert out.state.log_weight == pytest.approx([log_z] * rows, abs=1e-9)
    awrs_run = generate(Factorised(logits), torch.full((rows, n), v), ConstrainedSampler(
        not_zero.constraint, steps=3), mask_id=v, generator=torch.Generator().manual_seed(0))
    assert (awrs_run.tokens != 0).all() and awrs_run.state.constraint_calls < rows * n * v


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^ConstrainedSampler: draw must be one of .awrs., .masking., got "):
        ConstrainedSampler(lambda row, pos, token: True, draw="mask-all")
    with pytest.raises(ValueError, match="temperature"):
        token_masking(torch.randn(4), lambda v: True, temperature=0.0)


def test_tokens_of_probability_zero_are_never_tested_or_drawn():
    logits = torch.tensor([0.0, float("-inf"), 1.0, float("-inf")])
    token, log_weight, calls = awrs(logits, lambda v: v in (1, 3), generator=torch.Generator().manual_seed(0))
    assert token == -1 and log_weight == float("-inf") and calls == 2  # only the two tokens with p > 0
    assert token_masking(logits, lambda v: v in (1, 3)).token == -1


def test_token_masking_draws_at_the_temperature_given():
    g = torch.Generator().manual_seed(4)
    logits = torch.tensor([2.0, 0.0, -1.0, 1.0])
    q = torch.softmax(logits.double() / 0.5, 0)
    q[3] = 0
    z = float(q.sum())
    draws = [token_masking(logits, lambda v: v != 3, temperature=0.5, generator=g) for _ in range(1500)]
    assert draws[0].log_weight == pytest.approx(math.log(z), abs=1e-12)
    counts = torch.bincount(torch.tensor([d.token for d in draws]), minlength=4).double()
    # at temperature 1 the law is 0.14 away in TV; 1500 exact draws stay within about 0.01
    assert total_variation(counts / counts.sum(), q / z) < 0.04
