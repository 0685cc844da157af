import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking import RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedDiffusion, MaskedTokenModeling
from unmask.objectives.masked_token import hidden_ce_mean
from unmask.schedules import Schedule

LAYOUT = Layout.seq(1, name="label") + Layout.grid(4, 4, name="pixels")
V = 7


def tiny_model(**kw):
    cfg = ModelConfig(V, LAYOUT, dim=16, depth=1, heads=2, **kw)
    torch.manual_seed(0)
    return MaskedTokenModel(cfg)


def batch(b=8, seed=0):
    return {"tokens": torch.randint(0, V, (b, LAYOUT.n), generator=torch.Generator().manual_seed(seed))}


def test_head_computes_only_where_asked():
    model = tiny_model()
    tokens = batch()["tokens"]
    where = torch.zeros_like(tokens, dtype=torch.bool)
    where[:, 3] = True
    where[0, 5] = True
    full = model(tokens)
    part = model(tokens, where=where)
    assert part.shape == (9, V)
    assert torch.allclose(part, full[where], atol=1e-6)


def test_segment_vocab_forbids_other_ids():
    model = tiny_model(segment_vocab={"label": (5, 7), "pixels": (0, 5)})
    logits = model(torch.full((2, LAYOUT.n), V))
    assert torch.isinf(logits[:, 0, :5]).all() and torch.isfinite(logits[:, 0, 5:]).all()
    assert torch.isinf(logits[:, 1:, 5:]).all() and torch.isfinite(logits[:, 1:, :5]).all()


def test_loss_is_mean_cross_entropy_over_hidden_tokens():
    obj = MaskedTokenModeling(tiny_model(), RandomMask(), Schedule("cosine"))
    data = batch()
    loss, metrics = obj(data, generator=torch.Generator().manual_seed(1))
    # recompute with the same draws: ratio first, then the mask
    g = torch.Generator().manual_seed(1)
    ratio = Schedule("cosine")(torch.rand(8, generator=g, dtype=torch.float64))
    mask = RandomMask()(LAYOUT, 8, ratio=ratio, generator=g)
    logits = obj.model(data["tokens"].masked_fill(mask, V))
    expected = F.cross_entropy(logits[mask], data["tokens"][mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["hidden_share"] == pytest.approx(mask.float().mean().item())


def test_visible_tokens_do_not_enter_the_loss_targets():
    """Changing a visible token's value changes the loss only through the input, never as a target:
    with a model that ignores its input, the loss is unchanged."""

    class Blind(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = ModelConfig(V, LAYOUT)
            self.mask_id = V
            self.bias = torch.nn.Parameter(torch.randn(V))

        def forward(self, tokens, where=None):
            out = self.bias.expand(*tokens.shape, V)
            return out[where] if where is not None else out

    obj = MaskedTokenModeling(Blind(), RandomMask(), Schedule("cosine"))
    data = batch()
    a, _ = obj(data, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    ratio = Schedule("cosine")(torch.rand(8, generator=g, dtype=torch.float64))
    mask = RandomMask()(LAYOUT, 8, ratio=ratio, generator=g)
    changed = data["tokens"].clone()
    changed[~mask] = (changed[~mask] + 1) % V
    b, _ = obj({"tokens": changed}, generator=torch.Generator().manual_seed(2))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_elbo_weights_by_inverse_t_and_normalises_by_all_tokens():
    obj = MaskedDiffusion(tiny_model())
    data = batch()
    loss, metrics = obj(data, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = 1e-3 + (1 - 1e-3) * torch.rand(8, generator=g, dtype=torch.float64)
    mask = torch.rand(8, LAYOUT.n, generator=g, dtype=torch.float64) < t[:, None]  # each token with probability t
    logits = obj.model(data["tokens"].masked_fill(mask, V))
    ce = F.cross_entropy(logits.transpose(1, 2), data["tokens"], reduction="none")  # [B, N]
    expected = ((ce * mask) / t[:, None].float()).sum() / mask.numel()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["elbo_bits_per_token"] == pytest.approx(loss.item() / math.log(2))


def test_elbo_of_a_uniform_model_bounds_log_v():
    """A model that always predicts uniform has NLL log V per token; its ELBO estimate averages to
    log V (the 1/t weight makes it unbiased under Bernoulli masking)."""

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = ModelConfig(V, Layout.seq(64))
            self.mask_id = V
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, tokens, where=None):
            out = torch.zeros(*tokens.shape, V) + self.w
            return out[where] if where is not None else out

    obj = MaskedDiffusion(Uniform())
    g = torch.Generator().manual_seed(0)
    values = [obj({"tokens": torch.zeros(256, 64, dtype=torch.long)}, generator=g).loss.item() for _ in range(40)]
    assert sum(values) / len(values) == pytest.approx(math.log(V), rel=0.05)


def test_per_segment_ratios_hide_segments_independently():
    obj = MaskedTokenModeling(tiny_model(), RandomMask(), Schedule("linear"), per_segment=True)
    ratio = obj.draw_ratio(4000, torch.Generator().manual_seed(0))
    assert ratio.shape == (4000, 2)
    corr = torch.corrcoef(ratio.T)[0, 1].item()
    assert abs(corr) < 0.05


def test_balanced_segments_average_each_segments_mean_loss():
    obj = MaskedTokenModeling(tiny_model(), RandomMask(), Schedule("cosine"), balance_segments=True)
    data = batch()
    g = torch.Generator().manual_seed(4)
    loss, _ = obj(data, generator=g)
    g = torch.Generator().manual_seed(4)
    ratio = Schedule("cosine")(torch.rand(8, generator=g, dtype=torch.float64))
    mask = RandomMask()(LAYOUT, 8, ratio=ratio, generator=g)
    logits = obj.model(data["tokens"].masked_fill(mask, V))
    ce = F.cross_entropy(logits.transpose(1, 2), data["tokens"], reduction="none")  # [B, N]
    parts = [ce[:, s][mask[:, s]].mean() for s in (slice(0, 1), slice(1, 17)) if mask[:, s].any()]
    assert loss.item() == pytest.approx(torch.stack(parts).mean().item(), rel=1e-5)


# settings that cannot mean anything together -----------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule=Schedule("cosine"), ratio=0.15), r"ratio=0.15 fixes the share hidden and schedule=.* draws it"),
    (dict(ratio=0.15, per_segment=True), r"ratio=0.15 is the same share in every segment"),
    (dict(balance_segments=False, segment_weights={"label": 1.0}), r"segment_weights .* balance_segments=True"),
    (dict(segment_weights={"labels": 1.0}), r"segment_weights names \['labels'\], not segments of the layout "
                                            r"\['label', 'pixels'\]"),
    (dict(segment_weights={"label": 0.0, "pixels": 0.0}), r"finite, >= 0 and not all 0"),
    (dict(segment_weights={"label": -1.0, "pixels": 2.0}), r"finite, >= 0 and not all 0"),
    (dict(segment_weights={"label": math.nan}), r"finite, >= 0 and not all 0"),
])
def test_settings_that_mean_nothing_together_are_errors_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskedTokenModeling(tiny_model(), RandomMask(), **kwargs)


def test_weights_alone_turn_balancing_on_and_one_segment_balances_to_the_plain_mean():
    assert MaskedTokenModeling(tiny_model(), segment_weights={"label": 1.0}).balance_segments
    one = Layout.seq(12)
    torch.manual_seed(0)
    model = MaskedTokenModel(ModelConfig(V, one, dim=16, depth=1, heads=2))
    x = {"tokens": torch.randint(0, V, (6, 12), generator=torch.Generator().manual_seed(5))}
    plain = MaskedTokenModeling(model)(x, generator=torch.Generator().manual_seed(6)).loss
    balanced = MaskedTokenModeling(model, balance_segments=True, per_segment=True)(
        x, generator=torch.Generator().manual_seed(6)).loss
    assert balanced.item() == pytest.approx(plain.item(), rel=1e-6)


# the one reduction ------------------------------------------------------------------------------
def test_hidden_ce_mean_by_hand():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    ce = torch.tensor([1.0, 2.0, 4.0])  # at (0, 0), (0, 2), (1, 2)
    assert hidden_ce_mean(ce, mask).item() == pytest.approx(7 / 3)
    segments = torch.tensor([0, 1, 1])  # place 0 is segment 0; places 1, 2 segment 1
    # segment 0 holds 1.0; segment 1 holds 2.0 and 4.0, mean 3.0
    assert hidden_ce_mean(ce, mask, segments, torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)
    assert hidden_ce_mean(ce, mask, segments, torch.tensor([1.0, 3.0])).item() == pytest.approx((1 + 9) / 4)
    no_places = torch.tensor([0.0, 2.0, 5.0])  # segment 2 has no places, segment 0 no weight
    assert hidden_ce_mean(ce, mask, segments, no_places).item() == pytest.approx(3.0)
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    empty = torch.zeros(0, requires_grad=True)
    for loss in (hidden_ce_mean(empty, nothing), hidden_ce_mean(empty, nothing, segments, torch.ones(2))):
        assert loss.item() == 0.0  # nothing hidden: nothing to learn, and no 0 / 0
        loss.backward()


def test_the_last_block_runs_at_hidden_places_when_the_host_mask_has_equal_counts():
    model = tiny_model()
    tokens = batch()["tokens"]
    where = torch.zeros_like(tokens, dtype=torch.bool)
    where[:, 2] = where[:, 7] = True  # two per row: the pruned path
    where[3, 2], where[3, 9] = False, True
    full = model(tokens)
    assert torch.allclose(model(tokens, where=where), full[where], atol=1e-5)
