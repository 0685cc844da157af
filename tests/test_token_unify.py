"""TokenUnify (P30): each prediction type's inputs, targets and attention on hand-made sequences, and
the mixture weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.layout import Layout
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.token_unify import (
    TokenUnify,
    causal_mask,
    next_all_cuts,
    next_all_targets,
    next_token_inputs,
)

V = 5


def tiny(seed: int = 0) -> MaskedTokenModel:
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(vocab_size=V, layout=Layout.grid(2, 3), dim=16, depth=2, heads=2))
    return model.eval()


def tokens_batch(seed: int = 1, batch: int = 4) -> torch.Tensor:
    return torch.randint(0, V, (batch, 6), generator=torch.Generator().manual_seed(seed))


def test_next_token_inputs_shift_by_one_after_start_token():
    t = torch.tensor([[3, 1, 4, 1, 0, 2]])
    assert next_token_inputs(t, bos_id=V).tolist() == [[V, 3, 1, 4, 1, 0]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_next_token_loss_equals_reading_each_prefix_alone():
    """Position i's logits equal the causal model run on (start, tokens 0..i-1) alone, so the loss is
    the mean NLL of each token given the ones before it (nothing after it is in the input)."""
    obj = TokenUnify(tiny(), random_weight=0, next_all_weight=0)
    t = tokens_batch()
    ref = []
    for i in range(6):
        prefix = next_token_inputs(t, V)[:, : i + 1]
        logits = obj.logits(prefix, causal_mask(i + 1))[:, -1]  # the prefix alone
        ref.append(F.cross_entropy(logits, t[:, i], reduction="none"))
    loss, metrics = obj({"tokens": t})
    torch.testing.assert_close(loss, torch.stack(ref, 1).mean(), rtol=1e-5, atol=1e-6)
    assert set(metrics) == {"loss", "next_ce"}


def test_next_token_no_position_sees_its_future():
    obj = TokenUnify(tiny(), random_weight=0, next_all_weight=0)
    t = tokens_batch()
    mask = causal_mask(6)
    base = obj.logits(next_token_inputs(t, V), mask)
    for s in range(6):
        changed = t.clone()
        changed[:, s] = (changed[:, s] + 1) % V
        out = obj.logits(next_token_inputs(changed, V), mask)
        # token s is input s + 1: logits 0..s (which predict tokens 0..s) must not move
        torch.testing.assert_close(out[:, : s + 1], base[:, : s + 1])
        if s + 1 < 6:
            assert not torch.allclose(out[:, s + 1 :], base[:, s + 1 :])


def test_next_all_cuts_and_targets():
    cuts = next_all_cuts(4000, 6, torch.Generator().manual_seed(0))
    assert cuts.min() == 1 and cuts.max() == 5 and set(cuts.tolist()) == {1, 2, 3, 4, 5}
    t = next_all_targets(torch.tensor([1, 3, 5]), 6)
    assert t.tolist() == [[False, True, True, True, True, True],
                          [False, False, False, True, True, True],
                          [False, False, False, False, False, True]]
    with pytest.raises(ValueError):
        next_all_cuts(2, 1)


def test_next_all_predicts_every_following_token_from_the_prefix_only():
    obj = TokenUnify(tiny(), random_weight=0, next_weight=0)
    t = tokens_batch()
    loss, metrics = obj({"tokens": t}, generator=torch.Generator().manual_seed(7))
    cuts = next_all_cuts(4, 6, torch.Generator().manual_seed(7))
    ces = []
    for b in range(4):
        k = int(cuts[b])
        row = t[b : b + 1].clone()
        row[:, k:] = V  # the mask id from the cut on
        logits = obj.model.head(obj.model.encoder(obj.model.inputs(row)))[0]
        ces.append(F.cross_entropy(logits[k:], t[b, k:], reduction="none"))
    torch.testing.assert_close(loss, torch.cat(ces).mean(), rtol=1e-5, atol=1e-6)
    assert set(metrics) == {"loss", "next_all_ce"}
    # the tokens after the cut are targets only: changing them moves no logit
    after = next_all_targets(cuts, 6)
    other = torch.where(after, (t + 2) % V, t)
    torch.testing.assert_close(obj.logits(t.masked_fill(after, V)), obj.logits(other.masked_fill(after, V)))


def test_random_prediction_hides_exact_count_and_scores_hidden_only():
    model = MaskedTokenModel(ModelConfig(vocab_size=V, layout=Layout.grid(4, 5), dim=16, depth=1, heads=2)).eval()
    obj = TokenUnify(model, next_weight=0, next_all_weight=0, ratio=0.3)
    t = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(2))
    loss, metrics = obj({"tokens": t}, generator=torch.Generator().manual_seed(5))
    hidden = obj.masker(obj.layout, 3, ratio=0.3, generator=torch.Generator().manual_seed(5))
    assert hidden.sum(1).tolist() == [6, 6, 6]
    logits = obj.logits(t.masked_fill(hidden, V))
    torch.testing.assert_close(loss, F.cross_entropy(logits[hidden], t[hidden]))
    assert set(metrics) == {"loss", "random_ce"}


def test_weights_mix_terms_and_zero_removes_a_term_exactly():
    t = tokens_batch()
    full = TokenUnify(tiny(), random_weight=0.5, next_weight=2.0, next_all_weight=1.5)
    loss, m = full({"tokens": t}, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, 0.5 * m["random_ce"] + 2.0 * m["next_ce"] + 1.5 * m["next_all_ce"])
    # a weight of 0 removes its term: the objective is then exactly the other terms' code
    alone = TokenUnify(tiny(), random_weight=1.0, next_weight=0, next_all_weight=0)
    loss_alone, m_alone = alone({"tokens": t}, generator=torch.Generator().manual_seed(3))
    assert set(m_alone) == {"loss", "random_ce"}
    torch.testing.assert_close(loss_alone, m["random_ce"])  # same generator, first draw: same mask
    loss_alone.backward()
    ref = TokenUnify(tiny())
    ref.random_loss(t, torch.Generator().manual_seed(3)).backward()
    for p, q in zip(alone.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p),
                                   q.grad if q.grad is not None else torch.zeros_like(q))


@pytest.mark.parametrize("kwargs", [dict(random_weight=0, next_weight=0, next_all_weight=0),
                                    dict(next_weight=-1.0), dict(ratio=0.0), dict(ratio=1.5)])
def test_bad_settings_are_errors(kwargs):
    with pytest.raises(ValueError):
        TokenUnify(tiny(), **kwargs)


def test_features_bidirectional_or_causal():
    obj = TokenUnify(tiny())
    t = tokens_batch()
    bi, ca = obj.features(t), obj.features(t, causal=True)
    assert bi.shape == ca.shape == (4, 6, 16)
    # causal: position 0 reads token 0 alone, as the model run on the first token only
    torch.testing.assert_close(ca[:, :1], obj.features(t[:, :1]))
    assert not torch.allclose(bi[:, 0], ca[:, 0])
