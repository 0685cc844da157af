import math

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.masking import BernoulliMask, RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
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
    obj = MaskedTokenModeling(tiny_model(), BernoulliMask(), elbo=True)
    data = batch()
    loss, metrics = obj(data, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = 1e-3 + (1 - 1e-3) * torch.rand(8, generator=g, dtype=torch.float64)
    mask = BernoulliMask()(LAYOUT, 8, ratio=t, generator=g)
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

    obj = MaskedTokenModeling(Uniform(), BernoulliMask(), elbo=True)
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
