"""Each sampler's defining properties, as its paper (cited in its module) states them, on exact toys.
The shared contract (fills everything, keeps given tokens, seeds, JSON state, resume) runs over every
sampler in test_samplers.py."""

import math

import pytest
import torch

from toys import ExactJoint, Factorised, Recorder, empirical, total_variation, uniform_denoiser
from unmask.sampling import (
    AmusedSampler,
    ConstrainedSampler,
    DreamSampler,
    LLaDASampler,
    RCRSampler,
    ThresholdSampler,
    awrs,
    generate,
)
from unmask.sampling.blocks import even_split
from unmask.sampling.categorical import categorical_logp
from unmask.schedules import Schedule

ROWS = 20_000
TV_TOL = 0.04  # empirical TV of 20,000 exact draws on 81 cells is about 0.02


pytestmark = pytest.mark.usefixtures("one_thread")


def run_steps(sampler, model, canvas, seed=0, limit=100):
    """Step a sampler by hand; returns the token tensors before every step and the last one."""
    g = torch.Generator().manual_seed(seed)
    v = model(canvas).shape[-1]
    tokens, state, seen = canvas, sampler.start(canvas == v), [canvas]
    while (tokens == v).any() and len(seen) <= limit:
        tokens, state = sampler.step(model(tokens), tokens, state, g)
        seen.append(tokens)
    return seen


def probs_model(rows):
    """Factorised model from a table of probabilities [N, V]."""
    p = torch.tensor(rows, dtype=torch.float64)
    return Factorised(p.clamp_min(1e-30).log().float())


def test_the_draw_leaves_float64_logits_alone_and_reports_their_log_probability():
    logits = torch.randn(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = logits.clone()
    tokens, logp = categorical_logp(logits, 0.7, torch.Generator().manual_seed(1))
    assert torch.equal(logits, before)
    assert torch.allclose(logp, (logits / 0.7).log_softmax(-1).gather(1, tokens[:, None]).squeeze(1))
    where = torch.rand(50, generator=torch.Generator().manual_seed(2)) < 0.5
    picked, _ = categorical_logp(logits, 0.7, torch.Generator().manual_seed(1), where=where)
    assert picked.shape == (int(where.sum()),)


# --- LLaDA ---------------------------------------------------------------------------------------


def test_llada_blocks_commit_the_even_split_inside_the_current_block_only():
    v, n, length = 5, 14, 4
    canvas = torch.full((3, n), v)
    canvas[0, :2] = 1  # prompts of different lengths: 12, 14 and 11 places to fill
    canvas[2, :3] = 2
    model = Factorised(torch.randn(n, v, generator=torch.Generator().manual_seed(0)))
    sampler = LLaDASampler(steps=12, block_length=length, temperature=1.0)
    seen = run_steps(sampler, model, canvas)
    for b, start in enumerate([2, 0, 3]):
        fill = n - start
        n_blocks = math.ceil(fill / length)
        per_block = 12 // n_blocks
        expected = []
        for k in range(n_blocks):
            size = min(length, fill - k * length)
            expected += [int(even_split(torch.tensor(size), torch.tensor(i), torch.tensor(per_block)))
                         for i in range(per_block)]
        got = []
        for j, (before, after) in enumerate(zip(seen, seen[1:], strict=False)):
            changed = torch.nonzero(before[b] != after[b]).squeeze(1)
            block = j // per_block
            lo = start + block * length
            assert ((changed >= lo) & (changed < lo + length)).all()  # only the current block
            assert (after[b, lo + length :] == v).all()  # later blocks wait their turn
            got.append(len(changed))
        assert got[: len(expected)] == expected and sum(got) == fill


def test_llada_steps_must_divide_into_blocks():
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        LLaDASampler(steps=5, block_length=4).start(torch.ones(1, 8, dtype=torch.bool))


def test_llada_low_confidence_commits_the_most_probable():
    confid = [0.3, 0.9, 0.5, 0.8, 0.4, 0.7]
    model = probs_model([[c, 1 - c] for c in confid])
    seen = run_steps(LLaDASampler(steps=3), model, torch.full((1, 6), 2))
    first = (seen[1][0] != 2).nonzero().squeeze(1).tolist()
    assert first == [1, 3]  # 6 places over 3 steps: 2 each, the two most confident first


def test_llada_random_remasking_one_token_per_step_is_exact():
    joint = ExactJoint()
    out = generate(joint, torch.full((ROWS, 4), 3), LLaDASampler(4, 2, "random", temperature=1.0), mask_id=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.nfe == 4
    assert total_variation(empirical(out.tokens, joint), joint.p) < TV_TOL


# --- Dream ---------------------------------------------------------------------------------------

# four places whose best token is surest by probability (A), by margin (B), by entropy (C)
A, B, C, D = [0.60, 0.35, 0.05, 0, 0], [0.55] + [0.1125] * 4, [0.58, 0.42, 0, 0, 0], [0.4, 0.3, 0.3, 0, 0]


@pytest.mark.parametrize("alg,first", [("maskgit_plus", 0), ("topk_margin", 1), ("entropy", 2)])
def test_dream_scores_pick_the_right_place(alg, first):
    # three steps over four places: 1 - s/t = 1/3 at the first step, int(4 / 3) = 1 place
    sampler = DreamSampler(steps=3, alg=alg, temperature=0.0, top_p=1.0)
    seen = run_steps(sampler, probs_model([A, B, C, D]), torch.full((1, 4), 5))
    assert (seen[1][0] != 5).nonzero().squeeze(1).tolist() == [first]


def test_dream_commit_counts_follow_time():
    sampler = DreamSampler(steps=7, alg="entropy", temperature=1.0, top_p=1.0)
    seen = run_steps(sampler, uniform_denoiser(5), torch.full((2, 20), 5))
    for i, (before, after) in enumerate(zip(seen, seen[1:], strict=False)):
        n = int((before[0] == 5).sum())
        committed = int((before[0] == 5).sum() - (after[0] == 5).sum())
        assert committed == (n if i == 6 else math.floor(n * sampler.share(i)))
    assert len(seen) == 8 and not (seen[-1] == 5).any()


def test_dream_alg_temp_samples_places_by_softmax_of_score():
    conf = torch.tensor([0.6, 0.55, 0.58, 0.4], dtype=torch.float64)  # p of each place's best token
    sampler = DreamSampler(steps=3, alg="maskgit_plus", alg_temp=0.05, temperature=0.0, top_p=1.0)
    model = probs_model([A, B, C, D])
    canvas = torch.full((ROWS, 4), 5)
    out, _ = sampler.step(model(canvas), canvas, sampler.start(canvas == 5), torch.Generator().manual_seed(0))
    freq = (out != 5).double().mean(0)
    assert torch.allclose(freq, torch.softmax(conf / 0.05, 0), atol=0.015)


def test_dream_breaks_ties_at_random_not_left_to_right():
    sampler = DreamSampler(steps=3, alg="maskgit_plus", temperature=0.0, top_p=1.0)
    canvas = torch.full((6000, 4), 5)
    out, _ = sampler.step(uniform_denoiser(5)(canvas), canvas, sampler.start(canvas == 5),
                          torch.Generator().manual_seed(0))
    assert torch.allclose((out != 5).double().mean(0), torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_greedy_steps_equal_reading_every_place(alg, monkeypatch):
    """A greedy Dream step reads only the places that may be among its surest (`nucleus_draw`'s
    `best`); the whole decoding gives the tokens of a step that reads every hidden place, on a
    model from flat to peaked, with a prompt, for three seeds."""
    import unmask.sampling.dream as dream
    from unmask.sampling.categorical import nucleus_draw

    v, n = 64, 48
    weights = torch.randn(v, v, generator=torch.Generator().manual_seed(0))
    waves = torch.sin(torch.arange(n)[:, None] * torch.arange(v)[None] * 0.37)

    def model(tokens):  # context-dependent logits, sharper at later positions
        ctx = torch.nn.functional.one_hot(tokens.clamp(max=v - 1), v).float().mean(1, keepdim=True)
        return (ctx @ weights + 2.5 * waves) * torch.linspace(0.2, 3, n)[:, None]

    canvas = torch.full((5, n), v)
    canvas[:, :5] = 3
    every = []  # the steps' `best`, to see that the lazy read was asked for
    for seed in range(3):
        lazy = generate(model, canvas, DreamSampler(steps=10, alg=alg), mask_id=v,
                        generator=torch.Generator().manual_seed(seed)).tokens
        monkeypatch.setattr(dream, "nucleus_draw", lambda *a: every.append(a[6]) or nucleus_draw(*a[:6]))
        eager = generate(model, canvas, DreamSampler(steps=10, alg=alg), mask_id=v,
                         generator=torch.Generator().manual_seed(seed)).tokens
        monkeypatch.undo()
        assert torch.equal(lazy, eager)
    assert len(every) == 30 and all(b is not None for b in every)
    probe = model(canvas)
    hidden = canvas == v
    tokens = nucleus_draw(probe, 0.95, 0.2, None, dream.ALGORITHMS[alg], hidden, hidden.sum(1) // 10)[0]
    assert (tokens == -1).sum() > 20  # most places of the first step are not read


# --- Threshold (Fast-dLLM, dParallel) ---------------------------------------------------------


def test_confidence_threshold_commits_every_sure_token_and_at_least_one():
    confid = [0.95, 0.3, 0.92, 0.5, 0.99, 0.2, 0.91, 0.6]
    model = probs_model([[c] + [(1 - c) / 3] * 3 for c in confid])
    seen = run_steps(ThresholdSampler(0.9, block_length=None), model, torch.full((1, 8), 4))
    sets = [sorted((a[0] != b[0]).nonzero().squeeze(1).tolist()) for a, b in zip(seen, seen[1:], strict=False)]
    assert sets == [[0, 2, 4, 6], [7], [3], [1], [5]]  # then one forced best per call


def test_entropy_threshold_commits_low_entropy_tokens():
    rows = [[0.97, 0.01, 0.01, 0.01], [0.25] * 4, [0.9, 0.1, 0, 0], [0.4, 0.4, 0.2, 0]]
    entropies = [-sum(p * math.log(p) for p in r if p > 0) for r in rows]
    seen = run_steps(ThresholdSampler(0.5, "entropy", block_length=None), probs_model(rows), torch.full((1, 4), 4))
    first = (seen[1][0] != 4).nonzero().squeeze(1).tolist()
    assert first == [i for i, h in enumerate(entropies) if h <= 0.5] == [0, 2]


@pytest.mark.parametrize("length,calls", [(None, 1), (4, 3), (5, 3), (1, 12)])
def test_threshold_fills_a_block_per_call_when_the_model_is_certain(length, calls):
    target = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(0))
    logits = torch.full((12, 5), -1e4)
    logits[torch.arange(12), target] = 0.0
    out = generate(Factorised(logits), torch.full((2, 12), 5), ThresholdSampler(0.9, block_length=length), mask_id=5)
    assert out.nfe == calls and torch.equal(out.tokens, target.expand(2, -1))


def test_threshold_calls_are_bounded_by_places():
    out = generate(uniform_denoiser(5), torch.full((4, 12), 5), ThresholdSampler(0.99, block_length=4,
                   temperature=1.0), mask_id=5, generator=torch.Generator().manual_seed(0))
    assert out.nfe == 12  # nothing is ever sure: exactly one token per call, never more calls


# --- RCR (MDPO) -------------------------------------------------------------------------------


def test_rcr_keeps_the_scheduled_number_hidden_in_each_block():
    n, length, steps = 16, 8, 8  # 2 blocks, 4 steps each
    gamma = Schedule("cosine")
    model = Factorised(torch.randn(n, 6, generator=torch.Generator().manual_seed(1)))
    seen = run_steps(RCRSampler(steps, length, gamma, temperature=1.0), model, torch.full((2, n), 6))
    assert len(seen) == steps + 1
    for j, x in enumerate(seen[1:]):
        block, i = divmod(j, 4)
        region = x[:, : (block + 1) * length]
        expected = 0 if i == 3 else math.floor(length * gamma((i + 1) / 4).item())
        assert ((region == 6).sum(1) == expected).all()
        assert (x[:, (block + 1) * length :] == 6).all()


class LaterCertainty:
    """Place 0 is 70% sure of token 0 throughout; places 1 and 2 are coin flips until place 0 is
    visible, then 99% sure. RCR must revise place 0 once the others are surer than it."""

    def __call__(self, tokens):
        p = torch.full((*tokens.shape, 2), 0.5)
        p[:, 0] = torch.tensor([0.7, 0.3])
        seen = (tokens[:, 0] != 2).view(-1, 1, 1)
        p[:, 1:] = torch.where(seen, torch.tensor([0.99, 0.01]), p[:, 1:])
        return p.log()


def test_rcr_hides_again_the_token_with_the_lowest_running_confidence():
    seen = run_steps(RCRSampler(3, None, Schedule("linear")), LaterCertainty(), torch.full((1, 3), 2))
    assert seen[1][0].tolist() == [0, 2, 2]  # step 0 keeps the surest (place 0, p = 0.7)
    assert seen[2][0].tolist() == [2, 0, 0]  # step 1: 0.99 > 0.7, so place 0 goes back under the mask
    assert not (seen[3] == 2).any()
    plain = run_steps(LLaDASampler(3), LaterCertainty(), torch.full((1, 3), 2))
    assert plain[2][0, 0] == 0  # low-confidence remasking freezes it


def test_rcr_never_hides_given_tokens():
    canvas = torch.full((2, 10), 4)
    canvas[:, :3] = torch.tensor([1, 2, 3])
    rec = Recorder(Factorised(torch.randn(10, 4)))
    out = generate(rec, canvas, RCRSampler(6, 4, temperature=1.0), mask_id=4,
                   generator=torch.Generator().manual_seed(0))
    assert all((x[:, :3] == canvas[:, :3]).all() for x in rec.inputs) and not (out.tokens == 4).any()


# --- aMUSEd ------------------------------------------------------------------------------------


class Context:
    """A denoiser whose logits depend on every token (so a step's draws matter for the next)."""

    def __init__(self, v, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(n, v + 1, v, generator=g)
        self.v = v

    def __call__(self, tokens):
        onehot = torch.nn.functional.one_hot(tokens, self.v + 1).float()
        return torch.einsum("bnk,nkv->bnv", onehot, self.w) + 2 * torch.roll(onehot, 1, 1)[..., : self.v]


@pytest.mark.parametrize("steps,schedule,temperature,ratio", [(12, "cosine", (2.0, 0.0), 1.0),
                                                              (7, "linear", 3.0, 1.0), (9, "cosine", (1.0, 0.5), 0.7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_amused_equals_diffusers_step_for_step(steps, schedule, temperature, ratio, dtype):
    diffusers = pytest.importorskip("diffusers")
    v, n = 50, 30
    context = Context(v, n)

    def model(tokens):  # diffusers draws in the logits' dtype (its Gumbel noise too), so must we
        return context(tokens).to(dtype)

    canvas = torch.full((4, n), v)
    canvas[1, :5] = 3  # a prompt
    sched = diffusers.AmusedScheduler(mask_token_id=v, masking_schedule=schedule)
    sched.set_timesteps(steps, temperature=temperature)
    g = torch.Generator().manual_seed(0)
    x = canvas.clone()
    for t in sched.timesteps:
        x = sched.step(model(x), t, x, starting_mask_ratio=ratio, generator=g).prev_sample
    ours = generate(model, canvas, AmusedSampler(steps, schedule, temperature, ratio, draw="diffusers"), mask_id=v,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.tokens, x) and ours.nfe == steps


@pytest.mark.parametrize("draw", ["diffusers", "inverse_cdf"])
def test_amused_counts_use_the_full_length(draw):
    n, steps = 30, 6
    canvas = torch.full((1, n), 5)
    canvas[0, :10] = 1  # 20 to fill out of 30
    rec = Recorder(uniform_denoiser(5))
    generate(rec, canvas, AmusedSampler(steps, draw=draw), mask_id=5, generator=torch.Generator().manual_seed(0))
    hidden, prev = [], 20
    for j in range(steps - 1):
        # in float32, as diffusers: at j = 3, 30 cos(pi / 3) floors to 14 (float64 would give 15)
        gamma = torch.cos(torch.tensor((j + 1) / steps, dtype=torch.float32) * math.pi / 2)
        prev = max(1, min(prev - 1, math.floor(float(n * gamma))))
        hidden.append(prev)
    assert [int((x == 5).sum()) for x in rec.inputs[1:]] == hidden == [19, 18, 17, 14, 7]


def test_amused_inverse_cdf_draws_softmax_at_hidden_places():
    """One step fills every hidden place: each place's tokens over many rows follow softmax(logits)."""
    v, n, rows = 6, 4, 20_000
    logits = torch.randn(n, v, generator=torch.Generator().manual_seed(1)) * 1.5
    canvas = torch.full((rows, n), v)
    canvas[:, 2] = 0  # given
    out = generate(Factorised(logits), canvas, AmusedSampler(1, draw="inverse_cdf"), mask_id=v,
                   generator=torch.Generator().manual_seed(2))
    assert (out.tokens[:, 2] == 0).all()
    for i in (0, 1, 3):
        counts = torch.bincount(out.tokens[:, i], minlength=v).double()
        expected = logits[i].double().softmax(-1) * rows
        assert ((counts - expected) ** 2 / expected).sum() < 25.7  # chi-square, 5 dof: exceeded with p = 1e-4


def test_amused_inverse_cdf_keeps_the_most_probable_draws_without_choice_noise():
    """At choice temperature 0 the committed places are those whose drawn token is most probable;
    the draws are the shared draw's at the hidden places, in row-major order."""
    v, n = 7, 16
    logits = torch.randn(2, n, v, generator=torch.Generator().manual_seed(3)) * 2
    canvas = torch.full((2, n), v)
    canvas[1, :3] = 4
    sampler = AmusedSampler(4, choice_temperature=0.0, draw="inverse_cdf")
    out, _ = sampler.step(logits, canvas, sampler.start(canvas == v), torch.Generator().manual_seed(5))
    hidden = canvas == v
    drawn, logp = categorical_logp(logits, 1.0, torch.Generator().manual_seed(5), where=hidden)
    proposal = canvas.masked_scatter(hidden, drawn)
    kept = (out != v) & hidden
    assert torch.equal(out[kept], proposal[kept]) and torch.equal(out[~hidden], canvas[~hidden])
    conf = torch.full(canvas.shape, float("nan"), dtype=torch.float64).masked_scatter(hidden, logp)
    for r in range(2):
        committed, rehidden = conf[r][kept[r]], conf[r][hidden[r] & ~kept[r]]
        assert committed.numel() > 0 and rehidden.numel() > 0
        assert committed.min() >= rehidden.max()
    # 16 cos(pi / 8) = 14.78 floors to 14 hidden in both rows (row 1 had 13, so 12)
    assert (out == v).sum(1).tolist() == [14, 12]


def test_amused_never_hides_given_tokens_at_any_choice_temperature():
    canvas = torch.full((3, 12), 5)
    canvas[:, ::3] = 2
    out = generate(Factorised(torch.randn(12, 5)), canvas, AmusedSampler(6, choice_temperature=1e9), mask_id=5,
                   generator=torch.Generator().manual_seed(0))  # generate raises if a given token moves
    assert (out.tokens[:, ::3] == 2).all()


# --- AWRS ---------------------------------------------------------------------------------------


def test_awrs_draws_from_p_restricted_to_valid_tokens_with_unbiased_weights():
    v = 8
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(v, generator=g) * 1.5
    valid = torch.rand(v, generator=g) < 0.5
    valid[3] = True
    p = torch.softmax(logits.double(), 0)
    z = float(p[valid].sum())
    draws, weights, calls = torch.zeros(v), [], []
    for _ in range(8000):
        token, logw, used = awrs(logits, lambda t: bool(valid[t]), generator=g)
        draws[token] += 1
        weights.append(math.exp(logw))
        calls.append(used)
    assert valid[draws > 0].all()
    assert total_variation(draws.double() / draws.sum(), torch.where(valid, p, 0) / z) < 0.03
    w = torch.tensor(weights, dtype=torch.float64)
    assert abs(w.mean().item() - z) < 4 * w.std().item() / math.sqrt(len(w))
    assert max(calls) <= v


def test_awrs_with_no_valid_token():
    token, logw, calls = awrs(torch.randn(6), lambda t: False)
    assert token == -1 and logw == float("-inf") and calls == 6


def test_constrained_sampler_output_satisfies_the_constraint():
    def differs_from_neighbours(row, pos, token):
        n = row.shape[0]
        return all(row[q] != token for q in (pos - 1, pos + 1) if 0 <= q < n and row[q] != 5)

    sampler = ConstrainedSampler(differs_from_neighbours, steps=5)
    out = generate(Factorised(torch.randn(10, 5) * 3), torch.full((64, 10), 5), sampler, mask_id=5,
                   generator=torch.Generator().manual_seed(0))
    assert (out.tokens[:, 1:] != out.tokens[:, :-1]).all()
    assert all(w > float("-inf") for w in out.state.log_weight)
    assert out.state.constraint_calls >= 64 * 10
