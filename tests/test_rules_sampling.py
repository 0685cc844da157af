"""Sampling rules against their exact laws (STYLE habit 13): the first-hitting sampler's reveal times
(Zheng et al. 2024, arXiv:2409.02908), and `generate` refusing a step policy that changes a fixed
canvas position.

The contract tests (test_samplers.py) check that every sampler keeps given tokens and that a resumed
run equals an unbroken one; those pass when a rule is wrong the same way twice. Here the expected
values come from the law itself.
"""

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from toys import uniform_denoiser
from unmask.sampling import FirstHittingSampler, generate

V = 5


pytestmark = pytest.mark.usefixtures("one_thread")


# first-hitting reveal times ----------------------------------------------------------------------
class Timed:
    """A step policy that delegates to `inner` and keeps, for every step, the hidden count of each row
    before it and the state's time of each row after it (the sampler's own times: `state.t`)."""

    def __init__(self, inner):
        self.inner = inner
        self.times: list[list[float]] = []
        self.hidden: list[torch.Tensor] = []

    def start(self, hidden):
        state = self.inner.start(hidden)
        self.times.append(list(state.t))
        return state

    def step(self, logits, tokens, state, generator=None):
        self.hidden.append((tokens == logits.shape[-1]).sum(1))
        tokens, state = self.inner.step(logits, tokens, state, generator)
        self.times.append(list(state.t))
        return tokens, state


def ks_uniform(values: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the empirical law of `values` and U(0, 1)."""
    x = values.double().sort().values
    m = len(x)
    i = torch.arange(1, m + 1, dtype=torch.float64)
    return max((i / m - x).max().item(), (x - (i - 1) / m).max().item())


ROWS = 4000  # half the rows hide 6 places, half hide 2 (4 given)
KS_BOUND = 1.95 / math.sqrt(ROWS // 2 * 6 + ROWS // 2 * 2)  # the KS test's 0.1 % critical value


@pytest.fixture(scope="module")
def reveal_times():
    canvas = torch.full((ROWS, 6), V)
    canvas[1::2, :4] = torch.arange(4)  # odd rows: 2 hidden places
    timed = Timed(FirstHittingSampler())
    out = generate(uniform_denoiser(V), canvas, timed, mask_id=V, generator=torch.Generator().manual_seed(0))
    assert out.nfe == 6 and not (out.tokens == V).any()
    times = torch.tensor(timed.times, dtype=torch.float64)  # [steps + 1, B], times[0] = 1
    return times, torch.stack(timed.hidden)  # [steps, B] hidden before each step


def test_first_hitting_times_start_at_one_and_fall(reveal_times):
    times, hidden = reveal_times
    assert torch.equal(times[0], torch.ones(ROWS, dtype=torch.float64))
    live = hidden > 0
    assert (times[1:][live] < times[:-1][live]).all()
    assert torch.equal(times[1:][~live], times[:-1][~live])  # a finished row's time stays


def test_first_hitting_time_ratios_follow_the_exact_law(reveal_times):
    """With n hidden at time t, the next reveal is at t * u^(1/n), u ~ U(0, 1): (t'/t)^n is uniform,
    for every step and every row, whatever its count (6 or 2 here)."""
    times, hidden = reveal_times
    live = hidden > 0
    u = (times[1:] / times[:-1])[live] ** hidden[live].double()
    assert len(u) == ROWS // 2 * 6 + ROWS // 2 * 2
    assert ks_uniform(u) < KS_BOUND


def test_first_reveal_time_is_the_largest_of_n_uniforms(reveal_times):
    """The first reveal of a row with n hidden is at the largest of n uniform reveal times:
    P(T1 <= s) = s^n. Checked by KS against that CDF per count, so a sampler using one count for
    every row (the batch's largest, say) fails on the rows with 2."""
    times, hidden = reveal_times
    first = times[1]
    for rows, n in [(slice(0, None, 2), 6), (slice(1, None, 2), 2)]:
        assert (hidden[0, rows] == n).all()
        assert ks_uniform(first[rows] ** n) < 1.95 / math.sqrt(ROWS // 2)


def test_kth_reveal_time_has_the_order_statistic_mean(reveal_times):
    """The k-th reveal of n hidden places is the k-th largest of n uniforms: Beta(n - k + 1, k), mean
    (n - k + 1) / (n + 1). Within 5 standard errors for every k of the rows with 6."""
    times, _ = reveal_times
    n, m = 6, ROWS // 2
    for k in range(1, n + 1):
        a, b = n - k + 1, k
        mean = a / (a + b)
        se = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / m)
        assert abs(times[k, 0::2].mean().item() - mean) < 5 * se, k


# generate keeps fixed positions ------------------------------------------------------------------
class FillAll:
    """A policy that fills every hidden place with token 0, and then does `extra` to the tokens."""

    def __init__(self, extra=None):
        self.extra = extra

    def start(self, hidden):
        return None

    def step(self, logits, tokens, state, generator=None):
        mask_id = logits.shape[-1]
        out = tokens.masked_fill(tokens == mask_id, 0)
        if self.extra is not None:
            self.extra(out, mask_id)
        return out, state


class Overwrites(FillAll):
    """Writes a token at a given place (row 1, place 2)."""

    def __init__(self):
        super().__init__(lambda out, mask_id: out.__setitem__((1, 2), (out[1, 2] + 1) % mask_id))


class Rehides(FillAll):
    """Hides a given place (row 0, place 3) again."""

    def __init__(self):
        super().__init__(lambda out, mask_id: out.__setitem__((0, 3), mask_id))


def canvas_with_given():
    canvas = torch.full((2, 6), V)
    canvas[:, 2:4] = torch.tensor([[1, 2], [3, 4]])  # places 2 and 3 are given in both rows
    return canvas


@pytest.mark.parametrize("bad, where", [(Overwrites(), "position 2 of row 1"), (Rehides(), "position 3 of row 0")])
def test_generate_refuses_a_sampler_that_changes_a_fixed_position(bad, where):
    with pytest.raises(ValueError, match=f"{type(bad).__name__} changed fixed canvas {where}"):
        generate(uniform_denoiser(V), canvas_with_given(), bad, mask_id=V)


def test_generate_allows_filling_the_hidden_places():
    canvas = canvas_with_given()
    out = generate(uniform_denoiser(V), canvas, FillAll(), mask_id=V)
    assert torch.equal(out.tokens[:, 2:4], canvas[:, 2:4]) and (out.tokens[:, [0, 1, 4, 5]] == 0).all()
    assert out.nfe == 1 and out.steps == 1


def test_generate_refuses_a_late_change_of_a_filled_given_place():
    """A fixed place stays fixed after the first step: a policy that fills one place per step and
    rewrites a given place only at its third step is caught at that step."""

    class Late:
        def start(self, hidden):
            return 0

        def step(self, logits, tokens, state, generator=None):
            out = tokens.clone()
            first_hidden = (tokens == V).int().argmax(1)
            out[torch.arange(len(out)), first_hidden] = 0
            if state == 2:
                out[0, 2] = 0
            return out, state + 1

    with pytest.raises(ValueError, match="Late changed fixed canvas position 2 of row 0"):
        generate(uniform_denoiser(V), canvas_with_given(), Late(), mask_id=V)


# generate reads the device once per step ---------------------------------------------------------
HOST_READS = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__,
              torch.Tensor.__float__, torch.Tensor.__index__}


class CountHostReads(TorchFunctionMode):
    """Counts the tensor reads into Python (each one waits for the GPU's queue)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.reads += func in HOST_READS
        return func(*args, **(kwargs or {}))


class FillFirst:
    """A policy that never reads the device: fills the first hidden place of each row with 0."""

    def start(self, hidden):
        return None

    def step(self, logits, tokens, state, generator=None):
        hidden = tokens == logits.shape[-1]
        first = hidden.int().argmax(1, keepdim=True)  # [B, 1]
        fill = torch.where(hidden.gather(1, first), 0, tokens.gather(1, first))
        return tokens.scatter(1, first, fill), state


def test_generate_reads_the_device_once_per_step():
    """Whether to go on, whether anything changed and whether a fixed place moved are one read per
    step (STYLE habit 11), plus two before the loop (the canvas check, the first 'anything hidden?')."""
    with CountHostReads() as counter:
        out = generate(uniform_denoiser(V), canvas_with_given(), FillFirst(), mask_id=V)
    assert out.steps == 4 and not (out.tokens == V).any()
    assert counter.reads <= out.steps + 2
