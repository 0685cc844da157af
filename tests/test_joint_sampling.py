"""Approximate joint sampling (Bansal & Sanghavi 2025, arXiv:2509.22738, P18): the sampler layer, its
denoiser, the sampler and the distillation objective, checked against exact references.

The measurement: on the exact toy of `joint_toy.py` (a masked model trained on an 81-sequence
correlated joint, frozen), the law of each decoding rule is computed exactly by enumerating every
decoding path; the reference is the model's own sequential decoding (one token per full read).
Measured here (seed 0, the training below): TV to the reference, independent parallel 0.422 (K = 2)
and 0.877 (K = 4); joint layer 0.065 (K = 2) and 0.102 (K = 4).
"""

import dataclasses
import json
import math

import pytest
import torch

from host_syncs import assert_sync_budget
from joint_toy import exact_law, toy_layer, toy_model, tv
from toys import ExactJoint, empirical
from unmask.layout import Layout
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.nn.joint_layer import JointCache, JointDenoiser, JointLayer, frozen_read
from unmask.objectives.joint_distill import JointDistillation, teacher_kl
from unmask.sampling import generate
from unmask.sampling.joint import JointSampler, JointState

pytestmark = pytest.mark.usefixtures("one_thread")

V, N = 5, 12
ROWS = 20_000
TV_TOL = 0.04  # empirical TV of 20,000 exact draws on 81 cells is about 0.02
MARGIN = 0.25  # the joint layer must beat independent parallel decoding by at least this much TV


def random_model(seed: int = 0, n: int = N) -> MaskedTokenModel:
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(V, Layout.seq(n), dim=16, depth=2, heads=2)).eval()
    with torch.no_grad():  # larger weights than the init, so logits differ clearly between contexts
        for p in model.parameters():
            p.mul_(6.0 if p.ndim > 1 else 1.0)
    return model


def trained_like_layer(model: MaskedTokenModel, seed: int = 1) -> JointLayer:
    """A layer whose residual branches are not zero, as after training."""
    layer = JointLayer(model).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.block.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return layer


def canvas_with_prompt(b: int = 6, n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, V, (b, n), generator=g)
    hidden = torch.rand(b, n, generator=g) < 0.7
    hidden[:, 0] = True
    return canvas.masked_fill(hidden, V)


class Counting(JointDenoiser):
    """Counts full and light reads; keeps each light read's queries and the places hidden at its full read."""

    def __init__(self, model, layer):
        super().__init__(model, layer)
        self.fulls, self.lights = 0, []

    def full(self, tokens):
        self.fulls += 1
        return super().full(tokens)

    def light(self, tokens, queries, cache, width=None):
        self.lights.append((queries.clone(), cache.tokens == V))
        return super().light(tokens, queries, cache, width)


# --- the layer and its denoiser ------------------------------------------------------------------


def test_full_read_is_the_models_read_and_an_untrained_layer_returns_it():
    """The untrained layer starts as independent parallel decoding: at every place not changed since
    the full read it returns the frozen model's logits, bit for bit."""
    model = random_model()
    tokens = canvas_with_prompt()
    logits, features = frozen_read(model, tokens)
    assert torch.equal(logits, model(tokens))
    layer = JointLayer(model)
    revealed = tokens.masked_fill(torch.rand(tokens.shape, generator=torch.Generator().manual_seed(0)) < 0.3, 2)
    changed = revealed != tokens
    out = layer(features, revealed, changed)
    assert torch.equal(out[~changed], logits[~changed])
    assert torch.equal(layer(features, revealed, changed, where=~changed), logits[~changed])
    assert not trained_like_layer(model)(features, revealed, changed)[~changed].allclose(logits[~changed])


def test_light_read_is_the_layer_given_the_places_changed_since_the_full_read():
    model = random_model()
    layer = trained_like_layer(model)
    den = JointDenoiser(model, layer)
    base = canvas_with_prompt()
    logits, cache = den.full(base)
    assert isinstance(cache, JointCache) and torch.equal(cache.tokens, base) and torch.equal(logits, model(base))
    now = base.clone()
    now[:, 0] = 1  # a reveal at a place every row had hidden
    queries = now == V
    part, same = den.light(now, queries, cache)
    assert same is cache and torch.equal(cache.tokens, base)  # the cache keeps the full read's tokens
    assert torch.equal(part, layer(cache.features, now, now != base)[queries])
    assert not torch.allclose(part, layer(cache.features, now, torch.zeros_like(queries))[queries])


# --- the sampler ---------------------------------------------------------------------------------


def test_one_token_per_call_equals_sequential_decoding_exactly():
    """K = 1 reads fully at every step; so does any K with a denoiser without light reads: the same
    tokens for the same generator, one full read per hidden place."""
    model = random_model()
    canvas = canvas_with_prompt()
    runs = [generate(JointDenoiser(model, trained_like_layer(model)), canvas, JointSampler(1), mask_id=V,
                     generator=torch.Generator().manual_seed(0)),
            generate(model, canvas, JointSampler(1), mask_id=V, generator=torch.Generator().manual_seed(0)),
            generate(model, canvas, JointSampler(4), mask_id=V, generator=torch.Generator().manual_seed(0))]
    for out in runs:
        assert torch.equal(out.tokens, runs[0].tokens)
        assert out.nfe == int((canvas == V).sum(1).max()) and out.light == 0


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 9])
@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_reads_per_row_and_tokens_per_step(k, mode):
    """ceil(n / K) full reads for n hidden places; in mode joint the other steps are light reads of
    the hidden places and those revealed since the full read, and every step commits one token."""
    n = 7
    model = random_model(n=n)
    den = Counting(model, trained_like_layer(model))
    commits = []
    out = generate(den, torch.full((3, n), V), JointSampler(k, mode=mode), mask_id=V,
                   generator=torch.Generator().manual_seed(0),
                   on_step=lambda x, new, logits: commits.append((new != x).sum(1).tolist()))
    assert out.nfe == den.fulls == math.ceil(n / k)
    assert out.light == len(den.lights) == (n - math.ceil(n / k) if mode == "joint" else 0)
    expected = [1] * n if mode == "joint" else [min(k, n - j * k) for j in range(math.ceil(n / k))]
    assert [c[0] for c in commits] == expected and all(len(set(c)) == 1 for c in commits)
    for queries, hidden_at_full_read in den.lights:  # still hidden, or revealed since: hidden at the full read
        assert torch.equal(queries, hidden_at_full_read)


def test_given_tokens_never_change_and_everything_is_filled():
    model = random_model()
    canvas = canvas_with_prompt()
    for sampler in (JointSampler(3), JointSampler(3, mode="independent"), JointSampler(2, temperature=0.0)):
        out = generate(JointDenoiser(model, trained_like_layer(model)), canvas, sampler, mask_id=V,
                       generator=torch.Generator().manual_seed(1))
        fixed = canvas != V
        assert torch.equal(out.tokens[fixed], canvas[fixed]) and not (out.tokens == V).any()


@pytest.mark.parametrize("kind", ["probability", "margin", "entropy"])
def test_the_most_confident_place_is_committed(kind):
    """Temperature 0: the proposal is the argmax, and the committed place the row's surest by `kind`
    (the top probability, the gap between the two most likely tokens, the lowest entropy)."""
    model = random_model()
    canvas = torch.full((4, N), V)
    logits = model(canvas)
    new, state = JointSampler(1, temperature=0.0, confidence=kind).step(logits, canvas, JointState(0))
    p = logits.double().softmax(-1)
    two = p.topk(2, -1).values
    sure = {"probability": two[..., 0], "margin": two[..., 0] - two[..., 1],
            "entropy": (p * p.log()).sum(-1)}[kind]
    top = sure.argmax(1)
    assert state == JointState(1)
    assert torch.equal((new != V).nonzero()[:, 1], top)
    assert torch.equal(new[torch.arange(4), top], logits[torch.arange(4), top].argmax(-1))


def test_state_round_trips_through_json_and_resumes():
    model = random_model()
    canvas = canvas_with_prompt()
    sampler = JointSampler(3)
    whole = generate(model, canvas, sampler, mask_id=V, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    tokens, state = canvas, sampler.start(canvas == V)
    for _ in range(2):
        tokens, state = sampler.step(model(tokens), tokens, state, g)
    saved = json.loads(json.dumps(dataclasses.asdict(state)))
    assert saved == {"step": 2} and JointState(**saved) == state
    rest = generate(model, tokens, sampler, mask_id=V, generator=g, state=JointState(**saved))
    assert torch.equal(rest.tokens, whole.tokens)


def test_bad_settings_raise_one_line_errors():
    model = random_model()
    for kwargs, name in [({"tokens_per_call": 0}, "tokens_per_call"), ({"tokens_per_call": 2.5}, "tokens_per_call"),
                         ({"tokens_per_call": True}, "tokens_per_call"), ({"temperature": -1.0}, "temperature"),
                         ({"temperature": float("nan")}, "temperature"), ({"confidence": "loud"}, "confidence"),
                         ({"mode": "parallel"}, "mode")]:
        with pytest.raises(ValueError, match=f"JointSampler: {name} must be") as err:
            JointSampler(**kwargs)
        assert "\n" not in str(err.value)
    layer = JointLayer(model)
    for kwargs, name in [({"k": 1}, "k must"), ({"k": 3.0}, "k must"), ({"k": 2, "temperature": -1}, "temperature"),
                         ({"k": 2, "confidence": "loud"}, "confidence")]:
        with pytest.raises(ValueError, match=name):
            JointDistillation(model, layer, **kwargs)
    other = MaskedTokenModel(ModelConfig(V, Layout.seq(N), dim=32, depth=1, heads=2))
    with pytest.raises(ValueError, match="width 16"):
        JointDenoiser(other, layer)
    with pytest.raises(ValueError, match="width 16"):
        JointDistillation(other, layer, 2)
    tokens = canvas_with_prompt()
    with pytest.raises(ValueError, match="features must be"):
        layer(torch.zeros(6, N, 8), tokens, tokens == V)
    with pytest.raises(ValueError, match="changed must be"):
        layer(torch.zeros(6, N, 16), tokens, (tokens == V).long())


# --- the objective -------------------------------------------------------------------------------


def test_teacher_kl_by_hand():
    """KL(p || q) with a token neither may emit (-inf in both): that token contributes 0."""
    teacher = torch.tensor([[[0.0, math.log(3.0), float("-inf")]]])
    student = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    got = teacher_kl(teacher, student, torch.tensor([[True]]))
    want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert got.shape == (1,) and got.item() == pytest.approx(want, rel=1e-6)


def test_the_teacher_reveals_one_token_per_step_by_the_samplers_rule():
    model = random_model()
    objective = JointDistillation(model, JointLayer(model), 4)
    prompt = torch.zeros(8, N, dtype=torch.bool)
    prompt[:, :3] = True
    batch = {"tokens": torch.randint(0, V, (8, N), generator=torch.Generator().manual_seed(0)), "prompt": prompt}
    state = objective.start_state(batch, torch.Generator().manual_seed(1))
    assert not (state[prompt] == V).any()  # given places are never hidden
    assert torch.equal(state[state != V], batch["tokens"][state != V])
    first, features, seen, targets = objective.trajectory(state, torch.Generator().manual_seed(2))
    assert torch.equal(first, model(state)) and torch.equal(features, frozen_read(model, state)[1])
    before = state
    for j, now in enumerate(seen.split(8)):
        left = (before == V).sum(1)
        assert torch.equal((now != before).sum(1), (left > 0).long())  # one reveal per row that has one
        assert torch.equal(now[before != V], before[before != V])
        assert torch.equal(targets.split(8)[j], model(now))
        before = now


def test_an_untrained_layer_starts_at_the_independent_kl_and_only_the_layer_trains():
    model = random_model()
    layer = JointLayer(model)
    objective = JointDistillation(model, layer, 3)
    batch = {"tokens": torch.randint(0, V, (16, N), generator=torch.Generator().manual_seed(0))}
    out = objective(batch, torch.Generator().manual_seed(1))
    assert torch.equal(out.loss.detach(), out.metrics["kl_independent"])
    assert out.metrics["kl_independent"] > 0
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in layer.head.parameters())  # the head is the model's
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert trainable == {id(p) for name, p in layer.named_parameters() if not name.startswith("head.")}
    assert layer.block.blocks[0].attn.proj.weight.grad.abs().sum() > 0


def test_the_objective_reads_no_tensor_values():
    model = random_model()
    objective = JointDistillation(model, JointLayer(model), 3)
    data = {"tokens": torch.randint(0, V, (32, N), generator=torch.Generator().manual_seed(0))}
    assert_sync_budget(objective, data, steps=4, log_every=2)


# --- the measurement on the exact toy ------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    model = toy_model(seed=0, steps=300, batch=128)
    layer = toy_layer(model, k=4, seed=0, steps=150, batch=128, lr=1e-2)
    return model, layer


def test_decoding_loop_matches_the_enumerated_laws(toy):
    """The enumeration in joint_toy.py is the reference for the rules; the loop must sample it."""
    model, layer = toy
    joint = ExactJoint()
    for den, sampler, law in [(model, JointSampler(4), exact_law(model, 1)),
                              (JointDenoiser(model, layer), JointSampler(1), exact_law(model, 1)),
                              (model, JointSampler(2, mode="independent"), exact_law(model, 2, "independent")),
                              (JointDenoiser(model, layer), JointSampler(2), exact_law(model, 2, "joint", layer)),
                              (JointDenoiser(model, layer), JointSampler(4), exact_law(model, 4, "joint", layer))]:
        out = generate(den, torch.full((ROWS, 4), 3), sampler, mask_id=3, generator=torch.Generator().manual_seed(0))
        cached = isinstance(den, JointDenoiser) or sampler.mode == "independent"
        assert out.nfe == (math.ceil(4 / sampler.tokens_per_call) if cached else 4)
        assert tv(empirical(out.tokens, joint), law) < TV_TOL, sampler


def test_joint_layer_is_closer_to_sequential_decoding_than_independent_parallel(toy):
    model, layer = toy
    reference = exact_law(model, 1)
    for k in (2, 4):
        independent = tv(exact_law(model, k, "independent"), reference)
        joint = tv(exact_law(model, k, "joint", layer), reference)
        print(f"K={k}: TV to sequential decoding, independent {independent:.4f}, joint layer {joint:.4f}")
        assert joint + MARGIN < independent, (k, joint, independent)
