"""Training rules against hand-computed cases (STYLE habit 13).

The trainer's update: one AdamW step with decay groups, gradient clipping by the global norm, one EMA
update, the learning-rate schedule, and the micro-batch split (its generator streams and the mean of
its gradients). "Resumed equals unbroken" (test_train.py, test_kill_resume.py) passes when the rule
itself is wrong in both runs; these tests compute what the rule says with plain tensor arithmetic, in
float64, on an objective whose gradients are known in closed form, and compare the trainer's weights
to 1e-6.

The losses it minimises: the autoregressive baseline's one-place target shift, and the segment
weights of masked token modeling, each from stub models with hand-set logits.
"""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unmask.layout import Layout
from unmask.masking import Masker
from unmask.nn import CausalTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling, NextTokenPrediction
from unmask.objectives.base import ObjectiveOutput
from unmask.schedules import Schedule
from unmask.train import TrainConfig, Trainer
from unmask.train.trainer import learning_rate, step_generator

RUN = {"recipe": "rules", "model": {"kind": "quadratic"}}
C = torch.tensor([1.0, -2.0], dtype=torch.float64)  # dL/dbias
D = torch.tensor([0.5, -0.25], dtype=torch.float64)  # dL/dnorm.weight
E = torch.tensor([-1.5, 0.75], dtype=torch.float64)  # dL/dnorm.bias
X = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [2.0, -1.0, 1.0], [0.0, 1.0, -2.0]])  # the data: 4 rows
W0 = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
BETA1, EPS = 0.9, 1e-8  # AdamW's beta1 (fixed by the trainer) and torch's default eps


pytestmark = pytest.mark.usefixtures("one_thread")


class Quadratic(nn.Module):
    """loss = mean_b c . (W x_b + bias) + ||W||^2 / 2 + d . norm.weight + e . norm.bias, so by hand
    dL/dW = c xbar^T + W, dL/dbias = c, dL/dnorm.weight = d, dL/dnorm.bias = e (xbar: the mean row).

    One 2-D weight (decayed) and three 1-D parameters (a bias and a LayerNorm's weight and bias: not
    decayed), all nonzero so that decay applied to the wrong group shows. Each call records the first
    uniform it draws from the generator the trainer passed, and the rows it saw."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(W0))
        self.bias = nn.Parameter(torch.tensor([0.5, -1.0]))
        self.norm = nn.LayerNorm(2)
        with torch.no_grad():
            self.norm.weight.copy_(torch.tensor([1.0, 2.0]))
            self.norm.bias.copy_(torch.tensor([0.3, -0.2]))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # not floating: EMA copies it
        self.draws, self.rows = [], []

    def forward(self, batch, generator=None):
        self.draws.append(torch.rand((), generator=generator, dtype=torch.float64).item())
        self.rows.append(batch["x"].shape[0])
        self.calls += 1
        y = batch["x"] @ self.weight.T + self.bias  # [B, 2]
        loss = ((y @ C.float()).mean() + 0.5 * self.weight.square().sum()
                + self.norm.weight @ D.float() + self.norm.bias @ E.float())
        return ObjectiveOutput(loss, {"loss": loss.detach()})  # a tensor metric: reduced at log time


def start_params() -> dict[str, torch.Tensor]:
    return {k: v.detach().double().clone() for k, v in Quadratic().named_parameters()}


def hand_grads(p: dict, xbar: torch.Tensor) -> dict:
    return {"weight": C[:, None] * xbar[None, :] + p["weight"], "bias": C.clone(), "norm.weight": D.clone(),
            "norm.bias": E.clone()}


def hand_loss(p: dict, xbar: torch.Tensor) -> float:
    return float(C @ (p["weight"] @ xbar + p["bias"]) + 0.5 * p["weight"].square().sum()
                 + D @ p["norm.weight"] + E @ p["norm.bias"])


def hand_adamw(lrs, *, weight_decay=0.0, beta2=0.95, clip=0.0):
    """AdamW by hand, one entry of `lrs` per step. Returns the parameters after the last step, the
    global gradient norm of each step before clipping, and each step's gradients after clipping."""
    xbar = X.double().mean(0)  # every step's batch is the whole data
    p = start_params()
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v = {k: torch.zeros_like(x) for k, x in p.items()}
    norms, used = [], []
    for t, lr in enumerate(lrs, start=1):
        g = hand_grads(p, xbar)
        norm = math.sqrt(sum(float(gi.square().sum()) for gi in g.values()))  # one norm over all parameters
        norms.append(norm)
        if clip > 0 and norm > clip:
            g = {k: gi * (clip / norm) for k, gi in g.items()}
        used.append(g)
        for k in p:
            m[k] = BETA1 * m[k] + (1 - BETA1) * g[k]
            v[k] = beta2 * v[k] + (1 - beta2) * g[k].square()
            m_hat, v_hat = m[k] / (1 - BETA1**t), v[k] / (1 - beta2**t)
            if p[k].ndim >= 2:  # decoupled decay, matrices only
                p[k] = p[k] - lr * weight_decay * p[k]
            p[k] = p[k] - lr * m_hat / (v_hat.sqrt() + EPS)
    return p, norms, used


def trainer(tmp_path, **settings) -> Trainer:
    base = dict(steps=10, batch_size=4, lr=0.1, warmup=0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.0,
                precision="fp32")
    cfg = TrainConfig(**{**base, **settings})
    return Trainer(Quadratic(), {"x": X.clone()}, cfg, tmp_path, RUN, progress=False)


def params_of(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().double() for k, v in t.objective.named_parameters()}


def assert_params(t: Trainer, expected: dict, atol=1e-6):
    got = params_of(t)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(got[k], expected[k], rtol=0, atol=atol), (k, got[k], expected[k])


# (a) one AdamW step, decay on matrices only ------------------------------------------------------
def test_one_adamw_step_matches_the_hand_step(tmp_path):
    # warmup=2: the first step runs at lr * 1/2 = 0.05
    t = trainer(tmp_path, warmup=2, weight_decay=0.5)
    t.train_step()
    expected, _, _ = hand_adamw([0.05], weight_decay=0.5)
    assert_params(t, expected)


def test_weight_decay_shrinks_matrices_only(tmp_path):
    """The same step with and without decay differs by lr * wd * W on the 2-D weight and by nothing
    on the bias and the LayerNorm's weight and bias."""
    lr, wd = 0.1, 0.5
    plain, decayed = trainer(tmp_path / "a"), trainer(tmp_path / "b", weight_decay=wd)
    plain.train_step()
    decayed.train_step()
    a, b = params_of(plain), params_of(decayed)
    w0 = torch.tensor(W0, dtype=torch.float64)
    assert torch.allclose(a["weight"] - b["weight"], lr * wd * w0, rtol=0, atol=1e-6)
    for k in ("bias", "norm.weight", "norm.bias"):
        assert torch.equal(a[k], b[k]), k


# (b) clipping by the global norm -----------------------------------------------------------------
def test_clipping_scales_by_the_global_norm(tmp_path):
    """The gradient the optimizer uses is g * clip / ||g||, ||g|| over all parameters together. Two
    steps: Adam's first step divides the gradient's scale away, the second shows the ratio of the two
    steps' scales (lr 0.5 moves W enough to change the norm). beta2 comes from the config."""
    clip, lr = 1.0, 0.5
    unclipped, norms, _ = hand_adamw([lr, lr], beta2=0.99)
    clipped, _, used = hand_adamw([lr, lr], beta2=0.99, clip=clip)
    assert min(norms) > 2 * clip  # both steps clip
    assert max((unclipped[k] - clipped[k]).abs().max().item() for k in clipped) > 1e-2  # the test can tell
    t = trainer(tmp_path, lr=lr, grad_clip=clip, beta2=0.99)
    for norm, grads in zip(norms, used, strict=True):
        out = t.train_step()
        assert float(out["grad_norm"]) == pytest.approx(norm, rel=1e-6)  # measured before clipping
        for k, p in t.objective.named_parameters():  # what the step consumed
            assert torch.allclose(p.grad.double(), grads[k], rtol=0, atol=1e-6), k
    assert_params(t, clipped)


@pytest.mark.parametrize("grad_clip", [0.0, 1e3])
def test_no_clipping_when_off_or_above_the_norm(tmp_path, grad_clip):
    lr = 0.5
    expected, norms, used = hand_adamw([lr, lr], beta2=0.99)
    t = trainer(tmp_path, lr=lr, grad_clip=grad_clip, beta2=0.99)
    for norm, grads in zip(norms, used, strict=True):
        assert float(t.train_step()["grad_norm"]) == pytest.approx(norm, rel=1e-6)
        for k, p in t.objective.named_parameters():
            assert torch.allclose(p.grad.double(), grads[k], rtol=0, atol=1e-6), k
    assert_params(t, expected)


# (c) EMA -----------------------------------------------------------------------------------------
def test_ema_update_is_decay_times_old_plus_rest_times_new(tmp_path):
    d = 0.9
    t = trainer(tmp_path, ema=d, weight_decay=0.5)
    ema = {k: v.double() for k, v in Quadratic().state_dict().items()}
    for step in range(2):
        t.train_step()
        new = t.objective.state_dict()
        ema = {k: d * ema[k] + (1 - d) * v.double() if v.is_floating_point() else v.double() for k, v in new.items()}
        got = t.eval_state_dict()
        assert got.keys() == ema.keys()
        for k in ema:
            assert torch.allclose(got[k].double(), ema[k], rtol=0, atol=1e-6), (step, k)
        assert int(got["calls"]) == step + 1  # integer buffers are copied, not averaged
    # the live weights are the optimizer's, not the average
    expected, _, _ = hand_adamw([0.1, 0.1], weight_decay=0.5)
    assert_params(t, expected)


def test_no_ema_evaluates_the_live_weights(tmp_path):
    t = trainer(tmp_path)
    t.train_step()
    got = t.eval_state_dict()
    for k, v in t.objective.state_dict().items():
        assert torch.equal(got[k], v), k


# (d) learning-rate schedule ----------------------------------------------------------------------
def test_learning_rate_hand_values():
    """lr 0.2, 4 warmup steps, 12 steps, floor 0.2 * lr. Warmup: lr * (k + 1) / 4. Then
    lr * (0.2 + 0.8 * (1 + cos(pi * (k - 4) / 8)) / 2)."""
    cfg = TrainConfig(steps=12, lr=0.2, warmup=4, min_lr_ratio=0.2)
    hand = {0: 0.05, 1: 0.1, 2: 0.15, 3: 0.2, 4: 0.2,
            6: 0.2 * (0.2 + 0.4 * (1 + math.sqrt(0.5))),  # cos(pi / 4)
            8: 0.12,  # halfway: 0.2 * (0.2 + 0.4)
            11: 0.2 * (0.2 + 0.4 * (1 - math.cos(math.pi / 8))),  # cos(7 pi / 8) = -cos(pi / 8)
            12: 0.04}  # the floor
    for step, lr in hand.items():
        assert learning_rate(cfg, step) == pytest.approx(lr, rel=1e-12, abs=1e-15), step
    no_warmup = TrainConfig(steps=10, lr=0.3, warmup=0, min_lr_ratio=0.5)
    assert learning_rate(no_warmup, 0) == pytest.approx(0.3)
    assert learning_rate(no_warmup, 5) == pytest.approx(0.3 * 0.75)
    flat = TrainConfig(steps=10, lr=0.3, warmup=0, min_lr_ratio=1.0)
    assert all(learning_rate(flat, k) == pytest.approx(0.3) for k in range(10))


def test_trainer_steps_at_the_scheduled_rate(tmp_path):
    """The lr each step's optimizer update uses (and reports) is the schedule's at that step."""
    t = trainer(tmp_path, steps=12, lr=0.2, warmup=4, min_lr_ratio=0.2)
    hand = [0.05, 0.1, 0.15, 0.2, 0.2]
    for lr in hand:
        out = t.train_step()
        assert all(g["lr"] == pytest.approx(lr, rel=1e-12) for g in t.optimizer.param_groups)
        assert float(out["lr"]) == pytest.approx(lr, rel=1e-12)
    expected, _, _ = hand_adamw(hand)
    assert_params(t, expected)


# (e) micro-batches -------------------------------------------------------------------------------
def first_draw(seed: int, step: int, micro: int) -> float:
    return torch.rand((), generator=step_generator(seed, step, micro=micro), dtype=torch.float64).item()


def test_micro_batches_draw_their_own_streams(tmp_path):
    seed = 5
    t = trainer(tmp_path, seed=seed, micro_batch=2)
    for _ in range(2):
        t.train_step()
    obj = t.objective
    assert obj.rows == [2, 2, 2, 2]
    expected = [first_draw(seed, step, j) for step in range(2) for j in range(2)]
    assert obj.draws == expected
    assert len(set(obj.draws)) == 4  # no two micro-batches or steps share a stream


def test_micro_batch_gradient_is_the_mean(tmp_path):
    """Two micro-batches of 2 rows: the gradient is the mean of theirs, the gradient of the whole
    batch's mean loss, whatever the rows' order; so is the loss reported."""
    t = trainer(tmp_path, micro_batch=2)
    out = t.train_step()
    p0, xbar = start_params(), X.double().mean(0)
    g = hand_grads(p0, xbar)
    for k, p in t.objective.named_parameters():
        assert torch.allclose(p.grad.double(), g[k], rtol=0, atol=1e-6), k
    assert float(out["grad_norm"]) == pytest.approx(math.sqrt(sum(float(x.square().sum()) for x in g.values())),
                                                     rel=1e-6)
    assert float(out["loss"]) == pytest.approx(hand_loss(p0, xbar), rel=1e-6)
    expected, _, _ = hand_adamw([0.1])
    assert_params(t, expected)


# the autoregressive baseline's one-place shift ---------------------------------------------------
def ce(logits, target: int) -> float:
    """Cross-entropy of one row of logits, by hand: log sum exp(l) - l[target]."""
    row = [float(v) for v in logits]
    top = max(row)
    return top + math.log(sum(math.exp(v - top) for v in row)) - row[target]


class CausalStub(nn.Module):
    """A stand-in causal model: logits [B, N, V] from `rule(inputs)`; records what it was given."""

    def __init__(self, rule, n: int, vocab: int):
        super().__init__()
        self.rule, self.mask_id = rule, vocab
        self.config = ModelConfig(vocab, Layout.seq(n))
        self.seen = []

    def forward(self, tokens):
        self.seen.append(tokens.clone())
        return self.rule(tokens)


def test_next_token_loss_scores_token_i_from_position_i():
    """Position i reads (start, x_0, ..., x_{i-1}) and its logits score x_i: the loss is the mean over
    all N positions of CE(logits_i, x_i), with the start token (the mask id unless bos_id) first."""
    v = 4
    x = torch.tensor([[2, 0, 3, 1]])
    fixed = torch.tensor([[[2.0, 0.0, 1.0, -1.0], [0.5, 1.5, 0.0, 0.0], [1.0, 1.0, 3.0, -2.0], [0.0, 2.0, 0.5, 1.0]]])
    hand = sum(ce(fixed[0, i], int(x[0, i])) for i in range(4)) / 4
    shifted = sum(ce(fixed[0, i], int(x[0, i + 1])) for i in range(3)) / 3  # GPT's form: logits_i score x_{i+1}
    assert abs(hand - shifted) > 0.1
    for bos_id, start in [(None, v), (1, 1)]:
        model = CausalStub(lambda t: fixed.clone(), 4, v)
        loss = NextTokenPrediction(model, bos_id=bos_id)({"tokens": x}).loss
        assert torch.equal(model.seen[0], torch.tensor([[start, 2, 0, 3]]))
        assert loss.item() == pytest.approx(hand, rel=1e-6)


def test_next_token_loss_rewards_predicting_the_next_token():
    """Rows count up mod V. A model that predicts 'my input + 1' is right at every position but the
    first (which sees only the start token: uniform); a model that copies its input, or predicts two
    ahead, is right for a shift of zero or two places, and pays for it."""
    v, a = 4, 6.0
    x = torch.tensor([[0, 1, 2, 3], [2, 3, 0, 1]])

    def ahead(k):
        def rule(t):
            logits = a * F.one_hot((t + k) % v, v).float()
            return logits.masked_fill((t == v)[..., None], 0.0)  # the start token: no guess
        return rule

    hit, miss = math.log(math.exp(a) + v - 1) - a, math.log(math.exp(a) + v - 1)
    hand = {1: (math.log(v) + 3 * hit) / 4, 0: (math.log(v) + 3 * miss) / 4, 2: (math.log(v) + 3 * miss) / 4}
    for k, expected in hand.items():
        loss = NextTokenPrediction(CausalStub(ahead(k), 4, v))({"tokens": x}).loss
        assert loss.item() == pytest.approx(expected, rel=1e-6), k


def test_causal_model_predicts_token_i_without_seeing_it():
    """With the real causal network: changing x_j changes no logits at positions <= j (they predict
    x_0..x_j) and does change those at j + 1."""
    v, n = 5, 6
    torch.manual_seed(0)
    obj = NextTokenPrediction(CausalTokenModel(ModelConfig(v, Layout.seq(n), dim=16, depth=2, heads=2))).eval()
    x = torch.randint(0, v, (3, n), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = obj.model(obj.inputs(x))
        for j in range(n):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % v
            out = obj.model(obj.inputs(y))
            assert torch.allclose(out[:, : j + 1], base[:, : j + 1], atol=1e-6), j
            if j + 1 < n:
                assert (out[:, j + 1] - base[:, j + 1]).abs().amax() > 1e-4, j


# segment weights of masked token modeling -------------------------------------------------------
SEGMENTS = Layout.seq(4, "pixels") + Layout.seq(1, "label") + Layout.seq(3, "text")  # not in name order
V_SEG = 5
HIDE = ((True, True, False, True, True, False, False, False),  # row 0: 3 pixels and the label
        (False, False, True, False, False, False, False, False))  # row 1: 1 pixel; no text anywhere
TABLE = torch.randn(2, 8, V_SEG, generator=torch.Generator().manual_seed(6))
TOKENS = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [4, 3, 2, 1, 0, 4, 3, 2]])


@dataclass(frozen=True)
class FixedMask(Masker):
    """Hides the same known places whatever the ratio."""

    hide: tuple = HIDE

    def __call__(self, layout, batch_size, *, ratio=0.5, generator=None, **context):
        return torch.tensor(self.hide, dtype=torch.bool)


class TableModel(nn.Module):
    """Logits read from a fixed table [B, N, V], at the places asked for."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig(V_SEG, SEGMENTS)
        self.mask_id = V_SEG

    def forward(self, tokens, where=None):
        return TABLE[where] if where is not None else TABLE


def segment_ce(name: str) -> float:
    """The mean cross-entropy over the batch's hidden places of one segment, by hand."""
    where = SEGMENTS.slice(name)
    cells = [(b, i) for b in range(2) for i in range(where.start, where.stop) if HIDE[b][i]]
    return sum(ce(TABLE[b, i], int(TOKENS[b, i])) for b, i in cells) / len(cells)


@pytest.mark.parametrize("weights", [{"pixels": 0.6, "label": 0.3, "text": 0.1}, {"pixels": 0.25, "label": 0.75},
                                     {"label": 2.0, "text": 1.0}, {"pixels": 1.0, "text": 5.0}])
def test_segment_weights_weigh_each_segments_mean(weights):
    """loss = sum_s w_s mean_s / sum_s w_s over the segments with hidden places (text has none here):
    4 pixels and 1 label hidden, so the label weighs by its weight, not by its one token."""
    obj = MaskedTokenModeling(TableModel(), FixedMask(), Schedule("cosine"), per_segment=True,
                              segment_weights=weights)
    loss = obj({"tokens": TOKENS}, generator=torch.Generator().manual_seed(0)).loss
    present = {s: weights.get(s, 0.0) for s in ("pixels", "label")}
    hand = sum(w * segment_ce(s) for s, w in present.items()) / sum(present.values())
    assert loss.item() == pytest.approx(hand, rel=1e-6)


def test_segment_weights_the_test_can_tell():
    """The hand values above differ from the plain token mean and from weights renormalised over
    every segment, so the tests cannot pass by accident."""
    pixels, label = segment_ce("pixels"), segment_ce("label")
    token_mean = (4 * pixels + label) / 5
    weighted = (0.6 * pixels + 0.3 * label) / 0.9
    assert abs(weighted - token_mean) > 0.05 and abs(weighted - (0.6 * pixels + 0.3 * label)) > 0.05
    assert abs(pixels - label) > 1.0


def test_segment_weights_zero_on_every_hidden_segment_give_zero_loss():
    obj = MaskedTokenModeling(TableModel(), FixedMask(), Schedule("cosine"), per_segment=True,
                              segment_weights={"text": 1.0})
    loss = obj({"tokens": TOKENS}, generator=torch.Generator().manual_seed(0)).loss
    assert loss.item() == 0.0
