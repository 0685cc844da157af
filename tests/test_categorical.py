"""The float64 categorical draw: float32 Gumbel noise truncates the tail and lowers the effective
temperature (Zheng et al. 2024, arXiv:2409.02908)."""

import math

import pytest
import torch

from unmask.sampling import categorical, inverse_cdf
from unmask.sampling.categorical import categorical_logp


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


def _midpoints(logits: torch.Tensor, temperature: float, least: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The middle of each token's interval of u under the float64 softmax, for tokens whose interval
    is wider than `least`; returns (u, the token that owns it)."""
    p = torch.softmax(logits.double() / temperature, -1)
    ends = p.cumsum(-1)
    mids = ends - p / 2
    keep = p > least
    return mids[keep], torch.nonzero(keep).squeeze(1)


@pytest.mark.parametrize("v", [7, 1000, 1024, 5000])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_every_token_owns_its_interval_across_chunks(v, temperature):
    """The draw finds a chunk of about sqrt(V) tokens, then the token inside it: the middle of every
    token's interval (under the float64 softmax) must return that token, whatever chunk it is in,
    at the edges of chunks and in a last chunk that is only partly filled (V = 1000, 5000). A wrong
    chunk offset or a lost chunk fails here. Some tokens are -inf. Float32 weights are right to a
    relative 1e-7 each, so an interval may move by 1e-7 of the mass before it: tokens of probability
    above 1e-6 are checked here, the tail in the test below."""
    g = torch.Generator().manual_seed(v)
    logits = torch.randn(v, generator=g) * 2
    logits[torch.randperm(v, generator=g)[: v // 5]] = float("-inf")
    logits[int(logits.argmax())] = 3.0  # at least one finite token
    u, owner = _midpoints(logits, temperature, 1e-6)
    assert len(u) >= min(v // 2, 50)
    drawn = inverse_cdf(logits.expand(len(u), -1), u, temperature)
    assert torch.equal(drawn, owner)


@pytest.mark.parametrize("v", [1000, 1024])
def test_a_tail_18_nats_down_keeps_every_interval(v):
    """V - 1 tokens 18 nats below the last one, each of probability about 1.5e-8 and in every chunk:
    the middle of each one's interval returns it (float32 Gumbel noise could never pick them)."""
    logits = torch.full((v,), -18.0)
    logits[-1] = 0.0
    u, owner = _midpoints(logits, 1.0, 0.0)
    drawn = inverse_cdf(logits.expand(len(u), -1), u)
    assert len(u) == v and torch.equal(drawn, owner)


def test_whole_chunks_of_zero_weight_are_never_drawn():
    """V = 1024 in chunks of 32: chunks 1 to 30 are -inf; u at the very ends of the live intervals and
    at the top of the range lands on a live token, never inside a dead chunk."""
    logits = torch.full((1024,), float("-inf"))
    logits[:32] = 0.0
    logits[992:] = 0.0
    u = torch.tensor([0.0, 0.5 - 2**-53, 0.5, 0.5 + 2**-53, 1 - 2**-53], dtype=torch.float64)
    drawn = inverse_cdf(logits.expand(len(u), -1), u).tolist()
    assert drawn == [0, 31, 992, 992, 1023]


def test_half_precision_logits_draw_as_their_float32_values():
    """Narrow logits are shifted in float32: the same tokens and log-probabilities as their exact
    float32 copies (shifting in bfloat16 would round the weights)."""
    logits = (torch.randn(300, 1000, generator=torch.Generator().manual_seed(0)) * 4).bfloat16()
    a = categorical_logp(logits, 0.7, torch.Generator().manual_seed(1))
    b = categorical_logp(logits.float(), 0.7, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_probability_of_the_drawn_token(dtype):
    """Beside each token, log softmax(logits / T) at it, from float32 weights summed in float64 (1e-6)
    or float64 weights (1e-12)."""
    logits = (torch.randn(200, 1000, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    tokens, logp = categorical_logp(logits, 0.6, torch.Generator().manual_seed(4))
    reference = (logits.double() / 0.6).log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(logp, reference, rtol=0, atol=tol)


@pytest.mark.parametrize("v", [1000, 1024, 5000])
def test_a_row_draws_the_same_alone_and_among_others(v):
    """A row's token and log-probability do not depend on its batch mates (the weights' exp and the
    chunk sums give an element the same value wherever it sits; at V = 5000 the 300 rows span three
    blocks)."""
    logits = torch.randn(300, v, generator=torch.Generator().manual_seed(7)) * 3
    together = categorical_logp(logits, 0.8, torch.Generator().manual_seed(8))
    state = torch.Generator().manual_seed(8)
    alone = [categorical_logp(logits[i : i + 1], 0.8, state) for i in range(300)]
    assert torch.equal(together[0], torch.cat([a[0] for a in alone]))
    assert torch.equal(together[1], torch.cat([a[1] for a in alone]))


@pytest.mark.parametrize("dtype,floor", [(torch.float32, 87.0), (torch.float64, 708.0)])
def test_shifted_weights_hand_computed(dtype, floor):
    """exp((x - top) / T) - exp(-floor): a -inf logit and one beyond the floor weigh exactly 0 (the
    fast exp path never meets a subnormal), the top weighs 1, others within a few ulps of that."""
    from unmask.sampling.categorical import shifted_weights

    x = torch.tensor([[0.0, -1.0, -40.0, float("-inf"), -(floor + 1) * 0.5, -(floor - 1) * 0.5, -1e4]], dtype=dtype)
    w = shifted_weights(x, x.amax(-1, keepdim=True), 0.5, torch.empty_like(x))
    assert w[0, 0] == 1 and w[0, 3] == 0 and w[0, 4] == 0 and w[0, 6] == 0
    expected = torch.tensor([2.0, 80.0, floor - 1], dtype=torch.float64).neg().exp() - math.exp(-floor)
    torch.testing.assert_close(w[0, [1, 2, 5]].double(), expected, rtol=1e-6, atol=0)
    bf = x.float().bfloat16()
    narrow = shifted_weights(bf, bf.amax(-1, keepdim=True), 0.5, torch.empty(bf.shape))
    assert narrow[0, 3] == 0 and narrow[0, 0] == 1


def test_first_argmax_is_argmax_with_ties_nan_and_dead_rows():
    """The chunked argmax returns argmax's index on every row: ties across and inside chunks (the
    first wins), a NaN (counted largest), all -inf, and shapes with leading dims; V not a multiple of
    32 takes argmax itself."""
    from unmask.sampling.categorical import first_argmax

    g = torch.Generator().manual_seed(0)
    for v in (256, 1024, 1000):
        x = torch.randint(0, 5, (6, 176, v), generator=g).float()  # many ties; 2^18 entries or more: chunks
        x[0, 0, :] = float("-inf")
        x[0, 1, 300 % v] = float("nan")
        x[0, 2, :] = 3.0
        x[0, 3, v - 1] = 9.0
        x[0, 4, 33] = x[0, 4, 65] = 9.0
        assert torch.equal(first_argmax(x), x.argmax(-1))
    assert first_argmax(torch.empty(0, 1024)).shape == (0,)


def test_strided_logits_draw_as_their_contiguous_copy():
    """Logits whose last dim is not contiguous (a transpose, a stepped slice) read the same as a
    contiguous copy: the chunk views split the last dim whatever its stride."""
    from unmask.sampling import nucleus_draw
    from unmask.sampling.categorical import first_argmax

    for x in (torch.randn(1024, 300, generator=torch.Generator().manual_seed(0)).t() * 4,
              torch.randn(4, 300, 2048, generator=torch.Generator().manual_seed(1))[:, :, ::2] * 4):
        y = x.contiguous()
        assert torch.equal(first_argmax(x), y.argmax(-1))
        a = categorical_logp(x, 0.7, torch.Generator().manual_seed(2))
        b = categorical_logp(y, 0.7, torch.Generator().manual_seed(2))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        c = nucleus_draw(x, 0.9, 0.5, torch.Generator().manual_seed(3), "entropy")
        d = nucleus_draw(y, 0.9, 0.5, torch.Generator().manual_seed(3), "entropy")
        assert torch.equal(c[0], d[0]) and torch.equal(c[1], d[1])
