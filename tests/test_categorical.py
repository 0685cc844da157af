"""The float64 categorical draw: float32 Gumbel noise truncates the tail and lowers the effective
temperature (Zheng et al. 2024, arXiv:2409.02908)."""

import math

import pytest
import torch

from unmask.sampling import categorical, inverse_cdf


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_frequencies_match_softmax(temperature):
    logits = torch.tensor([2.0, 0.5, -1.0, 0.0, float("-inf")])
    g = torch.Generator().manual_seed(0)
    draws = categorical(logits.expand(200_000, -1), temperature, g)
    freq = torch.bincount(draws, minlength=5).double() / len(draws)
    expected = torch.softmax(logits.double() / temperature, -1)
    # binomial standard error is below 0.0012 for every cell; 5 sigma
    assert torch.allclose(freq, expected, atol=0.006)
    assert freq[4] == 0  # a -inf logit is never drawn


def test_temperature_zero_is_argmax():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(categorical(logits, 0.0), logits.argmax(-1))


def test_same_generator_same_draws_and_shapes():
    logits = torch.randn(3, 5, 7)
    a = categorical(logits, 1.0, torch.Generator().manual_seed(9))
    b = categorical(logits, 1.0, torch.Generator().manual_seed(9))
    assert a.shape == (3, 5) and a.dtype == torch.long and torch.equal(a, b)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        categorical(torch.zeros(2, 3), -1.0)


def test_inverse_cdf_gives_each_token_an_interval_as_wide_as_its_probability():
    """Exactness of the draw, deterministically: a token 19.5 nats below the head still owns an
    interval of u of width e^-19.5 / Z (far below float32's 2^-24 resolution)."""
    gap = 19.5
    logits = torch.tensor([0.0, -gap, -gap])
    z = 1 + 2 * math.exp(-gap)
    p_tail = math.exp(-gap) / z
    edge = 1 / z  # where the head's interval ends
    u = torch.tensor([0.0, edge * (1 - 1e-12), edge + 0.25 * p_tail, edge + 1.5 * p_tail, 1 - 2**-53],
                     dtype=torch.float64)
    assert inverse_cdf(logits.expand(5, -1), u).tolist() == [0, 0, 1, 2, 2]


def test_float32_gumbel_cannot_reach_the_tail():
    """Why float64: the largest float32 Gumbel value minus the smallest is below 19.5, so a naive
    float32 Gumbel-max never picks a token 19.5 below the head; our draw does (test above, and the
    race below)."""
    u_max = torch.tensor(1 - 2**-24, dtype=torch.float32)
    u_min = torch.tensor(2**-24, dtype=torch.float32)

    def g(u):
        return -torch.log(-torch.log(u))

    assert (g(u_max) - g(u_min)).item() < 19.5


def _race(draw, tail: int, gap: float, trials: int, chunk: int) -> int:
    logits = torch.full((chunk, tail + 1), -gap)
    logits[:, 0] = 0.0
    return sum(int((draw(logits) > 0).sum()) for _ in range(trials // chunk))


@pytest.mark.slow
def test_long_tail_race():
    """2^16 tail tokens 19.5 below the head, 40,000 trials: expected hits 40000 * 2^16 e^-19.5 / Z
    = 8.9. A float32 Gumbel-max scores 0 (it cannot reach that gap)."""
    g = torch.Generator().manual_seed(0)
    hits = _race(lambda x: categorical(x, 1.0, g), 2**16, 19.5, 40_000, 500)
    expected = 40_000 * 2**16 * math.exp(-19.5) / (1 + 2**16 * math.exp(-19.5))
    assert 2 <= hits <= 20, (hits, expected)  # Poisson(8.9): 99.8% inside

    g32 = torch.Generator().manual_seed(0)

    def naive32(x):
        u = torch.rand(x.shape, generator=g32, dtype=torch.float32)
        return (x - torch.log(-torch.log(u))).argmax(-1)

    assert _race(naive32, 2**16, 19.5, 40_000, 500) == 0
