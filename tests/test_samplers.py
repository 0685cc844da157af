"""Samplers: one contract over every sampler, then each one's defining property on exact toys."""

import dataclasses
import json
import math

import pytest
import torch

from toys import ExactJoint, Factorised, Recorder, empirical, total_variation, uniform_denoiser
from unmask.sampling import (
    AmusedSampler,
    AncestralSampler,
    BAMMSampler,
    ConstrainedSampler,
    DreamSampler,
    ENATSampler,
    FirstHittingSampler,
    JointSampler,
    LLaDASampler,
    MagnetSampler,
    MaskGITSampler,
    NextScaleSampler,
    PivotSampler,
    RCRSampler,
    ReCAPSampler,
    ThresholdSampler,
    generate,
)
from unmask.schedules import Schedule

V = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def accept_all(row, position, token):
    return True


SAMPLERS = [
    MaskGITSampler(steps=4),
    MaskGITSampler(steps=6, order="random", schedule=Schedule("linear")),
    AncestralSampler(steps=10),
    AncestralSampler(steps=1000),
    FirstHittingSampler(),
    AmusedSampler(steps=6),
    AmusedSampler(steps=6, draw="inverse_cdf"),
    LLaDASampler(steps=12, block_length=4, temperature=1.0),
    LLaDASampler(steps=6, remasking="random", temperature=1.0),
    DreamSampler(steps=8, alg="maskgit_plus", temperature=1.0, top_p=1.0),
    DreamSampler(steps=8, alg="topk_margin", alg_temp=0.5),
    DreamSampler(steps=8, alg="entropy"),
    ThresholdSampler(0.9, block_length=4, temperature=1.0),
    ThresholdSampler(0.5, measure="entropy", block_length=None, temperature=1.0),
    RCRSampler(steps=8, block_length=4, temperature=1.0),
    MagnetSampler(3, 4, steps=(2, 3, 2), span_len=2),
    ReCAPSampler(steps=6, pre_full=2, cache_steps=1, temperature=1.0),
    ENATSampler(steps=6, temperature=1.0, choice_temperature=1.0),
    ConstrainedSampler(accept_all, steps=4),
    JointSampler(3),
    JointSampler(3, mode="independent"),
    PivotSampler(MaskGITSampler(steps=2), MaskGITSampler(steps=3), pivot_length=4),
    NextScaleSampler((1, 2, 3), lengths=(1, 2, 9)),
    BAMMSampler(),
]
IDS = ["maskgit", "maskgit-random", "ancestral-10", "ancestral-1000", "first-hitting", "amused", "amused-inverse-cdf",
       "llada-blocks", "llada-random", "dream-maskgit-plus", "dream-margin-alg-temp", "dream-entropy",
       "threshold-confidence", "threshold-entropy", "rcr", "magnet", "recap", "enat", "awrs", "joint",
       "joint-independent", "pivot", "next-scale", "bamm"]


def canvas_with_prompt(b=6, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, V, (b, n), generator=g)
    hidden = torch.rand(b, n, generator=g) < 0.7
    hidden[:, 0] = True  # every row has something to fill
    return canvas.masked_fill(hidden, V)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
class TestSamplerContract:
    def test_fills_everything_and_keeps_fixed_positions(self, sampler):
        canvas = canvas_with_prompt()
        model = Factorised(torch.randn(12, V, generator=torch.Generator().manual_seed(1)))
        out = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(2))
        fixed = canvas != V
        assert not (out.tokens == V).any()
        assert ((out.tokens >= 0) & (out.tokens < V)).all()
        assert torch.equal(out.tokens[fixed], canvas[fixed])
        assert out.nfe == model.calls

    def test_same_generator_same_output(self, sampler):
        canvas = canvas_with_prompt()
        model = uniform_denoiser(V)
        a = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(3))
        b = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(3))
        c = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe
        assert not torch.equal(a.tokens, c.tokens)

    def test_rows_do_not_depend_on_batch_mates(self, sampler):
        """A row's result may depend on its batch position only through the shared generator;
        with a deterministic model every row ends at its one possible answer."""
        target = torch.randint(0, V, (12,), generator=torch.Generator().manual_seed(5))
        logits = torch.full((12, V), -1e4)
        logits[torch.arange(12), target] = 0.0
        canvas = canvas_with_prompt()
        out = generate(Factorised(logits), canvas, sampler, mask_id=V)
        expected = torch.where(canvas == V, target.expand_as(canvas), canvas)
        assert torch.equal(out.tokens, expected)

    def test_nothing_to_fill_costs_nothing(self, sampler):
        canvas = torch.randint(0, V, (3, 7))
        model = uniform_denoiser(V)
        out = generate(model, canvas, sampler, mask_id=V)
        assert out.nfe == 0 and torch.equal(out.tokens, canvas)

    def test_state_is_plain_json_and_settings_are_frozen(self, sampler):
        canvas = canvas_with_prompt()
        state = sampler.start(canvas == V)
        json.dumps(dataclasses.asdict(state))
        with pytest.raises(dataclasses.FrozenInstanceError):
            sampler.temperature = 0.5

    def test_resume_from_saved_state(self, sampler):
        """Stop after two steps, save the state as JSON, resume: same tokens as an unbroken run."""
        canvas = canvas_with_prompt()
        model = Factorised(torch.randn(12, V, generator=torch.Generator().manual_seed(6)))
        whole = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(7))

        g = torch.Generator().manual_seed(7)
        state = sampler.start(canvas == V)
        tokens = canvas
        for _ in range(2):
            tokens, state = sampler.step(model(tokens), tokens, state, g)
        saved = json.loads(json.dumps(dataclasses.asdict(state)))
        restored = type(state)(**saved)
        rest = generate(model, tokens, sampler, mask_id=V, generator=g, state=restored)
        assert torch.equal(rest.tokens, whole.tokens)


def test_generate_rejects_bad_inputs():
    model = uniform_denoiser(V)
    with pytest.raises(ValueError, match="Long"):
        generate(model, torch.zeros(2, 3), MaskGITSampler(), mask_id=V)
    with pytest.raises(ValueError, match="ids"):
        generate(model, torch.full((2, 3), V + 1), MaskGITSampler(), mask_id=V)
    with pytest.raises(ValueError, match="expected"):
        generate(uniform_denoiser(V + 2), torch.full((2, 3), V), MaskGITSampler(), mask_id=V)
    with pytest.raises(ValueError, match="steps"):
        MaskGITSampler(steps=0)


# --- MaskGIT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "linear", "arccos", "power"])
@pytest.mark.parametrize("steps", [1, 3, 8, 30])
def test_maskgit_hidden_counts_follow_schedule(schedule, steps):
    n = 20
    gamma = Schedule(schedule)
    rec = Recorder(uniform_denoiser(V))
    canvas = torch.full((2, n), V)
    out = generate(rec, canvas, MaskGITSampler(steps, gamma), mask_id=V)
    seen = [int((x[0] == V).sum()) for x in rec.inputs]
    expected, prev = [n], n
    for j in range(steps - 1):
        keep = min(prev - 1, max(1, math.floor(n * gamma((j + 1) / steps).item())))
        if keep == 0:
            break
        expected.append(keep)
        prev = keep
    assert seen == expected
    assert out.nfe == len(expected) == min(steps, n)


def test_maskgit_zero_choice_temperature_commits_the_most_confident():
    """Deterministic model with known confidences: the committed set is the top-k by p."""
    n = 8
    probs = torch.full((n, V), 1e-6)
    confid = torch.linspace(0.3, 0.99, n)
    probs[torch.arange(n), 0] = confid
    probs[:, 1:] = ((1 - confid) / (V - 1)).unsqueeze(1)
    rec = Recorder(Factorised(probs.log()))
    generate(rec, torch.full((1, n), V), MaskGITSampler(2, Schedule("linear"), temperature=0.0,
                                                        choice_temperature=0.0), mask_id=V)
    after_first = rec.inputs[1][0] != V
    assert after_first.tolist() == [False] * 4 + [True] * 4  # the 4 highest confidences


def test_maskgit_large_choice_temperature_never_changes_committed_tokens():
    canvas = canvas_with_prompt()
    rec = Recorder(Factorised(torch.randn(12, V)))
    generate(rec, canvas, MaskGITSampler(6, choice_temperature=1e6), mask_id=V,
             generator=torch.Generator().manual_seed(0))
    for before, after in zip(rec.inputs, rec.inputs[1:], strict=False):
        known = before != V
        assert torch.equal(after[known], before[known])


# --- Ancestral ---------------------------------------------------------------------------------


def test_ancestral_calls_equal_distinct_states_and_cache_changes_nothing():
    canvas = torch.full((1, 8), V)
    sampler = AncestralSampler(steps=1000)
    rec = Recorder(Factorised(torch.randn(8, V)))
    cached = generate(rec, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(x[0].tolist()) for x in rec.inputs}
    assert cached.nfe == len(distinct) == len(rec.inputs) <= 8
    assert cached.steps > cached.nfe
    fresh = generate(Factorised(rec.inner.logits), canvas, sampler, mask_id=V,
                     generator=torch.Generator().manual_seed(0), time_conditioned=True)
    assert torch.equal(fresh.tokens, cached.tokens)
    assert fresh.nfe == fresh.steps > cached.nfe


def test_ancestral_reveal_rate_per_step():
    """Each hidden token is revealed with probability (t - s) / t: with 4 steps, 1/4 at the first."""
    sampler = AncestralSampler(steps=4)
    rec = Recorder(uniform_denoiser(V))
    generate(rec, torch.full((4000, 10), V), sampler, mask_id=V, generator=torch.Generator().manual_seed(0),
             time_conditioned=True)
    hidden = [(x == V).double().mean().item() for x in rec.inputs]
    assert hidden[1] == pytest.approx(0.75, abs=0.005)  # 1 - 1/4
    assert hidden[2] == pytest.approx(0.50, abs=0.005)  # s/t = 2/3 of 0.75
    assert hidden[3] == pytest.approx(0.25, abs=0.005)


# --- First hitting -----------------------------------------------------------------------------


def test_first_hitting_makes_exactly_n_calls_one_token_each():
    canvas = canvas_with_prompt()
    rec = Recorder(uniform_denoiser(V))
    out = generate(rec, canvas, FirstHittingSampler(), mask_id=V, generator=torch.Generator().manual_seed(0))
    per_row = (canvas == V).sum(1)
    assert out.nfe == int(per_row.max())
    hidden_counts = torch.stack([(x == V).sum(1) for x in rec.inputs])  # [calls, B]
    expected = (per_row - torch.arange(out.nfe).unsqueeze(1)).clamp(min=0)
    assert torch.equal(hidden_counts, expected)
    times = out.state.t
    assert all(0 < t < 1 for t in times)


def test_first_hitting_picks_positions_uniformly():
    rec = Recorder(uniform_denoiser(V))
    generate(rec, torch.full((6000, 6), V), FirstHittingSampler(), mask_id=V,
             generator=torch.Generator().manual_seed(0))
    first = (rec.inputs[1] != V).double().mean(0)  # which place the first call revealed
    assert torch.allclose(first, torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.02)


# --- Exact joint: sequential samplers are exact, one-shot parallel is not ---------------------

ROWS = 20_000
TV_TOL = 0.04  # empirical TV of 20,000 draws on 81 cells is about 0.02 for an exact sampler


@pytest.mark.parametrize(
    "sampler",
    [FirstHittingSampler(), MaskGITSampler(steps=4, order="random", schedule=Schedule("linear")),
     pytest.param(AncestralSampler(steps=2000), marks=pytest.mark.slow)],
    ids=["first-hitting", "one-token-per-step", "ancestral-2000"],
)
def test_sequential_samplers_reproduce_the_joint(sampler):
    joint = ExactJoint()
    out = generate(joint, torch.full((ROWS, 4), 3), sampler, mask_id=3,
                   generator=torch.Generator().manual_seed(0))
    assert total_variation(empirical(out.tokens, joint), joint.p) < TV_TOL


def test_one_shot_parallel_sampling_does_not():
    joint = ExactJoint()
    exact_gap = total_variation(joint.marginal_product(), joint.p)
    assert exact_gap > 0.5
    out = generate(joint, torch.full((ROWS, 4), 3), MaskGITSampler(steps=1), mask_id=3,
                   generator=torch.Generator().manual_seed(0))
    tv = total_variation(empirical(out.tokens, joint), joint.p)
    assert tv > 10 * TV_TOL
    assert tv == pytest.approx(exact_gap, abs=TV_TOL)


def test_named_samplers():
    from unmask.sampling import AncestralSampler, FirstHittingSampler, MaskGITSampler
    from unmask.sampling.named import named_sampler

    assert isinstance(named_sampler("maskgit", 8), MaskGITSampler)
    assert isinstance(named_sampler("ancestral", 8, 0.5), AncestralSampler)
    assert isinstance(named_sampler("first-hitting", 8), FirstHittingSampler)
    with pytest.raises(ValueError, match="sampler must be one of"):
        named_sampler("greedy", 8)


def test_the_loop_runs_in_inference_mode_unless_steps_are_watched():
    """Without `on_step` the denoiser and the sampler run in inference mode (no autograd bookkeeping)
    and the tokens come back as a plain tensor, which training can embed and backpropagate through;
    with `on_step` nothing runs in inference mode, so the tensors it sees can be saved for backward."""
    seen = []

    def denoiser(tokens):
        seen.append(torch.is_inference_mode_enabled())
        return torch.randn(tokens.shape[0], tokens.shape[1], V, generator=torch.Generator().manual_seed(len(seen)))

    canvas = torch.full((2, 6), V)
    out = generate(denoiser, canvas, MaskGITSampler(3), mask_id=V, generator=torch.Generator().manual_seed(0))
    assert seen and all(seen) and not out.tokens.is_inference()
    embed = torch.nn.Embedding(V + 1, 3)
    embed(out.tokens).sum().backward()  # an inference tensor cannot be saved for backward
    assert embed.weight.grad is not None
    seen.clear()
    watched = []
    generate(denoiser, canvas, MaskGITSampler(3), mask_id=V, generator=torch.Generator().manual_seed(0),
             on_step=lambda tokens, new, logits: watched.append(new))
    assert seen and not any(seen) and not any(t.is_inference() for t in watched)
