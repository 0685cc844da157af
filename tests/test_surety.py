"""`surety`: a drawn token's probability and a row's negative entropy from float32 exps summed in
float64, against the float64 log-softmax path and against values written out by hand."""

import math

import pytest
import torch

from unmask.sampling.confidence import confidence, log_probs, surety


def rows(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 1000, generator=g) * torch.tensor([0.1, 1.0, 4.0, 20.0]).repeat(16).unsqueeze(1)
    logits[3, 5:500] = float("-inf")  # tokens the model rules out
    logits[7] = torch.full((1000,), 2.5)  # all tied
    logits[9, 11] = 80.0  # one certain token
    return logits


@pytest.mark.parametrize("measure", ["probability", "entropy"])
def test_matches_the_float64_log_softmax(measure):
    logits = rows()
    drawn = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(1))
    drawn[3] = 2  # a token that is not ruled out
    got = surety(logits, drawn, measure)
    want = confidence(log_probs(logits), drawn, measure)
    assert got.dtype == torch.float64 and torch.all(torch.isfinite(got))
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (got - want).abs().max()


def test_values_written_out_by_hand():
    logits = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)],
                           [0.0, float("-inf"), 0.0],
                           [100.0, 0.0, 0.0]])
    drawn = torch.tensor([0, 2, 1])
    p = surety(logits, drawn, "probability")
    assert torch.allclose(p, torch.tensor([0.5, 0.5, math.exp(-100) / (1 + 2 * math.exp(-100))], dtype=torch.float64),
                          rtol=1e-6, atol=0)
    h = -surety(logits, drawn, "entropy")
    assert torch.allclose(h, torch.tensor([1.5 * math.log(2), math.log(2), 0.0], dtype=torch.float64), atol=1e-6)


def test_a_drawn_token_ruled_out_has_probability_zero():
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    assert surety(logits, torch.tensor([1]), "probability").item() == 0.0


def test_a_row_does_not_depend_on_the_others():
    logits = rows(2)
    drawn = logits.argmax(-1)
    for measure in ("probability", "entropy"):
        together = surety(logits, drawn, measure)
        alone = torch.cat([surety(logits[i : i + 1], drawn[i : i + 1], measure) for i in range(64)])
        assert torch.equal(together, alone)


def test_logits_are_left_unchanged_and_bad_measures_refused():
    logits = rows()
    before = logits.clone()
    surety(logits, logits.argmax(-1), "entropy")
    assert torch.equal(logits, before)
    with pytest.raises(ValueError, match="measure"):
        surety(logits, logits.argmax(-1), "margin")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("v", [1000, 1024])  # first_argmax reads chunks of 32 at V = 1024
def test_top_probability_is_the_argmax_and_its_probability(dtype, v):
    """`top_probability` gives `categorical(logits, 0)` and the probability of it within 1e-6 of the
    float64 log-softmax (half-precision logits too) and of `surety`: ruled-out tokens, ties (the first
    index), a certain token, a row 100 nats wide; each row as alone; the logits unchanged."""
    from unmask.sampling import categorical
    from unmask.sampling.confidence import top_probability

    logits = rows()[:, :v].to(dtype)
    logits[11, 900:] = logits[11].max() + 1  # tied best tokens: the first is taken
    logits[13, :500] -= 100  # most of the row below the exp floor
    before = logits.clone()
    drawn, p = top_probability(logits)
    assert torch.equal(drawn, categorical(logits, 0.0)) and drawn[11] == 900
    assert p.dtype == torch.float64
    if dtype != torch.bfloat16:  # surety works in the logits' dtype; this in float32 at least
        assert torch.allclose(p, surety(logits, drawn, "probability"), rtol=1e-6, atol=0)
    want = confidence(log_probs(logits), drawn, "probability")
    assert torch.allclose(p, want, rtol=1e-6, atol=0), (p - want).abs().max()
    assert torch.equal(logits, before)
    alone = torch.cat([top_probability(logits[i : i + 1])[1] for i in range(len(logits))])
    assert torch.equal(alone, p)
