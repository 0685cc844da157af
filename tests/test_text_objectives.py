"""MLM with a fixed share, masked diffusion (prompt, coupled masks) and next-token prediction."""

import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking import BernoulliMask, BertCorruption, MeapMask, RandomMask
from unmask.nn import CausalTokenModel, MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedDiffusion, MaskedTokenModeling, NextTokenPrediction
from unmask.schedules import Schedule

V = 11
LAYOUT = Layout.seq(20)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def model(cls=MaskedTokenModel, seed=0):
    torch.manual_seed(seed)
    return cls(ModelConfig(V, LAYOUT, dim=16, depth=2, heads=2))


def tokens(b=6, seed=0):
    return torch.randint(0, V, (b, LAYOUT.n), generator=gen(seed))


class Uniform(torch.nn.Module):
    """Predicts every data token with probability 1/V: each hidden token costs exactly log V."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig(V, LAYOUT)
        self.mask_id = V
        self.seen = []

    def forward(self, x, where=None):
        self.seen.append((x.clone(), where))
        out = torch.zeros(*x.shape, V)
        return out[where] if where is not None else out


class Oracle(Uniform):
    """Knows the clean tokens: every hidden token costs (almost) nothing."""

    def __init__(self, clean):
        super().__init__()
        self.clean = clean

    def forward(self, x, where=None):
        out = F.one_hot(self.clean, V).float() * 50.0
        return out[where] if where is not None else out


# MLM with a fixed share ------------------------------------------------------------------------
def test_fixed_ratio_mlm_hides_exactly_and_scores_hidden_tokens():
    obj = MaskedTokenModeling(model(), RandomMask(), ratio=0.15, corruption=BertCorruption())
    x = tokens()
    loss, metrics = obj({"tokens": x}, generator=gen(1))
    g = gen(1)
    ratio = torch.full((6,), 0.15, dtype=torch.float64)
    mask = RandomMask()(LAYOUT, 6, ratio=ratio, generator=g)
    assert (mask.sum(1) == 3).all()  # round(0.15 * 20)
    inputs = BertCorruption()(x, mask, V, g)
    expected = F.cross_entropy(obj.model(inputs)[mask], x[mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["hidden_share"] == pytest.approx(0.15)


def test_fixed_ratio_settings_are_checked():
    with pytest.raises(ValueError, match="fixed ratio"):
        MaskedTokenModeling(model(), ratio=1.5)
    with pytest.raises(ValueError, match=r"ratio=0.15 fixes the share hidden and schedule=.* draws it"):
        MaskedTokenModeling(model(), RandomMask(), Schedule("cosine"), ratio=0.15)
    with pytest.raises(ValueError, match="ratio=0.15 is the same share in every segment; per_segment=True"):
        MaskedTokenModeling(model(), ratio=0.15, per_segment=True)
    with pytest.raises(TypeError, match="elbo"):  # the bound is MaskedDiffusion's alone
        MaskedTokenModeling(model(), BernoulliMask(), elbo=True)


def test_masker_context_comes_from_the_batch():
    seen = {}

    class Spy(RandomMask):
        def __call__(self, layout, b, *, ratio=0.5, generator=None, **context):
            seen.update(context)
            return super().__call__(layout, b, ratio=ratio, generator=generator)

    ids = torch.arange(LAYOUT.n).expand(6, -1)
    MaskedTokenModeling(model(), Spy(), ratio=0.5)({"tokens": tokens(), "word_ids": ids}, generator=gen(2))
    assert torch.equal(seen["word_ids"], ids)


# masked diffusion -------------------------------------------------------------------------------
def test_uncoupled_diffusion_hides_each_token_with_probability_t_and_weighs_by_one_over_t():
    m = model()
    x = tokens()
    loss, metrics = MaskedDiffusion(m)({"tokens": x}, generator=gen(3))
    g = gen(3)
    t = 1e-3 + (1 - 1e-3) * torch.rand(6, generator=g, dtype=torch.float64)
    mask = torch.rand(6, LAYOUT.n, generator=g, dtype=torch.float64) < t[:, None]
    ce = F.cross_entropy(m(x.masked_fill(mask, V)).transpose(1, 2), x, reduction="none")  # [B, N]
    expected = ((ce * mask) / t[:, None].float()).sum() / x.numel()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["elbo_bits_per_token"].item() == pytest.approx(loss.item() / math.log(2))


def test_coupled_masks_are_complementary_with_their_weights():
    spy = Uniform()
    obj = MaskedDiffusion(spy, coupled=True)
    x = tokens()
    prompt = torch.zeros_like(x, dtype=torch.bool)
    prompt[:, :5] = True
    est, lengths, counts = obj.row_bounds({"tokens": x, "prompt": prompt}, gen(4))
    (x1, w1), (x2, w2) = spy.seen
    assert not (w1 & w2).any() and torch.equal(w1 | w2, ~prompt)  # each answer token hidden once
    assert not (x1[prompt] == V).any() and not (x2[prompt] == V).any()  # the prompt stays given
    t, _ = obj.draw(6, LAYOUT.n, gen(4))
    k1, k2 = w1.sum(1).double(), w2.sum(1).double()
    expected = (k1 / t + k2 / (1 - t)) * math.log(V) / 2
    assert torch.allclose(est.double(), expected, rtol=1e-5)
    assert lengths.tolist() == [15] * 6


@pytest.mark.parametrize("coupled", [False, True])
def test_bound_is_log_v_per_token_in_expectation(coupled):
    """A uniform predictor's bound is exactly log V per token, for any unbiased estimator."""
    obj = MaskedDiffusion(Uniform(), coupled=coupled)
    x = tokens(b=4000)
    est, lengths, _ = obj.row_bounds({"tokens": x}, gen(5))
    per_token = est / lengths
    se = per_token.std().item() / math.sqrt(len(per_token))
    assert abs(per_token.mean().item() - math.log(V)) < 4 * se


def test_coupled_estimate_varies_less():
    """Uniform predictor, N = 20, eps = 1e-3: Var(single) = N (log V)^2 E[(1 - t) / t] ~ 5.9 N (log V)^2,
    Var(coupled) = N (log V)^2 E[(1 - 2t)^2 / (4 t (1 - t))] ~ 2.5 N (log V)^2; two independent single
    draws average to ~2.95: the coupled pair beats them at equal network calls too. The 1/t weights
    make both sample variances heavy-tailed (seed to seed about +-30% at this size), hence the tolerances."""
    x = tokens(b=40000)
    single = MaskedDiffusion(Uniform()).row_bounds({"tokens": x}, gen(6))[0]
    coupled = MaskedDiffusion(Uniform(), coupled=True).row_bounds({"tokens": x}, gen(7))[0]
    unit = LAYOUT.n * math.log(V) ** 2
    assert single.var().item() / unit == pytest.approx(5.9, rel=0.4)
    assert coupled.var().item() / unit == pytest.approx(2.45, rel=0.4)
    assert coupled.var() < 0.7 * single.var()


def test_oracle_denoiser_has_zero_bound_and_sft_normalises_per_answer():
    x = tokens()
    obj = MaskedDiffusion(Oracle(x))
    assert obj({"tokens": x}, generator=gen(8)).loss.item() == pytest.approx(0.0, abs=1e-6)
    spy = Uniform()
    prompt = torch.zeros_like(x, dtype=torch.bool)
    prompt[:, :4] = True
    prompt[0, :15] = True  # row 0 has 5 answer tokens, the others 16
    loss = MaskedDiffusion(spy)({"tokens": x, "prompt": prompt}, generator=gen(9)).loss
    t, _ = MaskedDiffusion(spy).draw(6, LAYOUT.n, gen(9))
    k = spy.seen[0][1].sum(1).double()
    answer = (~prompt).sum(1).double()
    assert loss.item() == pytest.approx(((k / t) * math.log(V) / answer).mean().item(), rel=1e-5)


def test_diffusion_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        MaskedDiffusion(model(), eps=0.6)


# next-token prediction --------------------------------------------------------------------------
def test_causal_model_has_the_masked_models_parameters():
    a, b = model(), model(CausalTokenModel)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_next_token_loss_equals_prefix_by_prefix_likelihood():
    """The causal model's loss at position i equals the one computed from the prefix alone."""
    obj = NextTokenPrediction(model(CausalTokenModel), bos_id=0)
    x = tokens(b=3)
    nll = obj.token_nll(x)
    inputs = obj.inputs(x)
    full = obj.model(inputs)
    for i in [0, 7, 19]:
        logits = obj.model(inputs[:, : i + 1])[:, -1]  # sees only the start token and x_<i
        assert torch.allclose(logits, full[:, i], atol=1e-5)
        assert torch.allclose(nll[:, i], F.cross_entropy(logits, x[:, i], reduction="none"), atol=1e-5)
    loss, metrics = obj({"tokens": x}, generator=gen(10))
    assert loss.item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert metrics["nll_bits_per_token"] == pytest.approx(loss.item() / math.log(2))


def test_meap_masks_inputs_but_keeps_clean_targets():
    obj = NextTokenPrediction(model(CausalTokenModel), bos_id=0, input_masker=MeapMask(), ratio=0.15)
    x = tokens()
    loss = obj({"tokens": x}, generator=gen(11)).loss
    hide = MeapMask()(LAYOUT, 6, ratio=0.15, generator=gen(11))
    hide[:, 0] = False
    inputs = obj.inputs(x).masked_fill(hide, V)
    assert (inputs == V).sum(1).tolist() == [hide[0].sum().item()] * 6
    expected = F.cross_entropy(obj.model(inputs).transpose(1, 2), x)  # targets: the clean tokens
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
