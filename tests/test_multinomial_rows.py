"""`multinomial_rows`: torch's CPU `multinomial(P, 1)` at some rows of P, token for token, with the
generator left where the whole call leaves it."""

import math

import pytest
import torch

from unmask.sampling.multinomial_rows import exponentials, multinomial_rows


def _probs(m, v, scale, seed):
    logits = torch.randn(m, v, generator=torch.Generator().manual_seed(seed)) * scale
    logits[:, ::7] = float("-inf")  # tokens of probability 0 (never drawn)
    return logits.softmax(-1)


@pytest.mark.parametrize("m,v,scale", [(64, 1024, 1.0), (300, 100, 8.0), (7, 5, 0.1), (1, 3, 30.0), (50, 257, 3.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokens_and_generator_equal_torch_multinomial(m, v, scale, seed):
    probs = _probs(m, v, scale, seed)
    rows = torch.randperm(m, generator=torch.Generator().manual_seed(seed + 10))[: max(1, (2 * m) // 3)].sort().values
    g = torch.Generator().manual_seed(seed)
    whole = torch.multinomial(probs, 1, generator=g)[:, 0]
    after = torch.rand(5, generator=g)  # where the generator was left
    g.manual_seed(seed)
    ours = multinomial_rows(probs[rows], rows, m, g)
    assert torch.equal(ours, whole[rows])
    assert torch.equal(torch.rand(5, generator=g), after)


def test_all_rows_unsorted_rows_and_no_rows():
    probs = _probs(40, 64, 2.0, 3)
    g = torch.Generator().manual_seed(4)
    whole = torch.multinomial(probs, 1, generator=g)[:, 0]
    after = torch.rand(3, generator=g)
    rows = torch.randperm(40, generator=torch.Generator().manual_seed(5))
    assert torch.equal(multinomial_rows(probs[rows], rows, 40, g.manual_seed(4)), whole[rows])
    none = multinomial_rows(probs[:0], torch.zeros(0, dtype=torch.long), 40, g.manual_seed(4))
    assert none.shape == (0,) and torch.equal(torch.rand(3, generator=g), after)  # every row's uniforms drawn


def test_default_generator():
    probs = _probs(20, 33, 1.0, 6)
    torch.manual_seed(7)
    whole = torch.multinomial(probs, 1)[:, 0]
    torch.manual_seed(7)
    rows = torch.tensor([0, 5, 19])
    assert torch.equal(multinomial_rows(probs[rows], rows, 20), whole[rows])


def test_exponentials_round_as_the_c_library_at_float32_ties():
    """Uniforms whose exponential lies at a float32 rounding tie: torch's vectorised log1p alone rounds
    some of them the other way (hundreds of these 20,000); with the C library's value near ties, none."""
    g = torch.Generator().manual_seed(8)
    f = (torch.rand(20_000, dtype=torch.float64, generator=g) * 5 + 1e-3).float()
    tie = f.double() + (torch.nextafter(f, torch.tensor(math.inf)).double() - f.double()) / 2
    u = -torch.expm1(-tie)
    want = torch.tensor([-math.log1p(-x) for x in u.tolist()], dtype=torch.float64).float()
    assert (torch.log1p(-u).neg().float() != want).sum() > 50  # the case is real
    assert torch.equal(exponentials(u), want)
    zero = exponentials(torch.zeros(1, dtype=torch.float64))
    assert zero.item() == 0.0 and math.copysign(1.0, zero.item()) == 1.0  # +0, as torch's -1 * log1p(-0)


def test_exponentials_equal_torchs_own():
    g = torch.Generator().manual_seed(9)
    u = torch.rand(1000, 512, dtype=torch.float64, generator=g)
    own = torch.empty(1000, 512).exponential_(1, generator=g.manual_seed(9))
    assert torch.equal(exponentials(u), own)


def test_bad_inputs():
    probs = _probs(4, 6, 1.0, 0)
    with pytest.raises(ValueError, match="Float32"):
        multinomial_rows(probs.double(), torch.arange(4), 4)
    with pytest.raises(ValueError, match="Float32"):
        multinomial_rows(probs[0], torch.arange(1), 4)
    with pytest.raises(ValueError, match="rows must be Long"):
        multinomial_rows(probs, torch.arange(3), 4)
    for rows in (torch.tensor([0, 1, 2, 4]), torch.tensor([-1, 0, 1, 2])):  # a row past the end, a negative one
        with pytest.raises(ValueError, match=r"rows must lie in \[0, 4\)"):
            multinomial_rows(probs, rows, 4)
