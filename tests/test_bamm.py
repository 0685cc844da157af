"""BAMM: the hybrid attention mask, the network's causal-plus-revealed reads, the END token and length
decoding, the left-to-right step policy and the cascade, the training rule, and the recipe's settings."""

import pytest
import torch
import torch.nn.functional as F

from toys import Factorised
from unmask.errors import UnmaskError
from unmask.layout import Layout
from unmask.nn import ModelConfig
from unmask.nn.bamm import HybridCausalTokenModel, hybrid_attention_mask
from unmask.objectives.bamm import BAMMTokenModeling
from unmask.sampling import BAMMSampler, bamm_cascade, generate
from unmask.sampling.bamm import end_lengths

pytestmark = pytest.mark.usefixtures("one_thread")

K, END, PAD, LABEL = 4, 4, 5, 6  # codes 0..3, END, PAD, one clip name; mask id 7
V = 7


def model(n=8, seed=0):
    torch.manual_seed(seed)
    lay = Layout.seq(1, "label") + Layout.seq(n - 2, "motion") + Layout.seq(1, "end")
    cfg = ModelConfig(V, lay, dim=16, depth=2, heads=2,
                      segment_vocab={"label": (LABEL, V), "motion": (0, END + 1), "end": (END, END + 1)})
    return HybridCausalTokenModel(cfg).eval()


def test_hybrid_mask_by_hand():
    revealed = torch.tensor([[False, True, False, False], [True, False, False, True]])
    got = hybrid_attention_mask(revealed)[:, 0].int().tolist()
    assert got[0] == [[1, 1, 0, 0],  # causal (itself) + the revealed column 1
                      [0, 1, 0, 0],  # a revealed query reads revealed keys only
                      [1, 1, 1, 0],
                      [1, 1, 1, 1]]
    assert got[1] == [[1, 0, 0, 1],  # revealed: keys 0 and 3 only
                      [1, 1, 0, 1],
                      [1, 1, 1, 1],
                      [1, 0, 0, 1]]
    none = hybrid_attention_mask(torch.zeros(1, 5, dtype=torch.bool))[0, 0]
    assert torch.equal(none, torch.ones(5, 5, dtype=torch.bool).tril())


def test_logits_read_only_earlier_and_revealed_tokens():
    m = model()
    tokens = torch.tensor([[LABEL, 0, 1, 2, 3, 0, 1, END]])
    base = m(tokens)
    changed = tokens.clone()
    changed[0, 4] = 2  # token 4, not revealed: logits at places <= 4 must not move
    out = m(changed)
    assert torch.allclose(out[:, :5], base[:, :5], atol=1e-6)
    assert not torch.allclose(out[:, 5:], base[:, 5:], atol=1e-4)
    revealed = torch.zeros_like(tokens, dtype=torch.bool)
    revealed[0, 4] = True  # revealed: every place may read it
    a, b = m(tokens, revealed), m(changed, revealed)
    assert not torch.allclose(a[:, 1:4], b[:, 1:4], atol=1e-4)


class ByPlace:
    """A denoiser with fixed logits per place, ignoring the tokens and the revealed set."""

    def __init__(self, logits):
        self.logits = logits
        self.mask_id = logits.shape[-1]
        self.calls = 0

    def __call__(self, tokens, revealed=None):
        self.calls += 1
        return self.logits.expand(tokens.shape[0], -1, -1).clone()


def peaked(targets, v=V):
    logits = torch.full((len(targets), v), -1e4)
    logits[torch.arange(len(targets)), torch.tensor(targets)] = 0.0
    return logits


def test_end_sets_the_length_and_pads_the_rest():
    denoiser = ByPlace(peaked([LABEL, 1, 2, 3, END, 0, 0, END]))
    canvas = torch.full((2, 8), V)
    canvas[:, 0] = LABEL
    out = generate(denoiser, canvas, BAMMSampler(END, PAD), mask_id=V)
    assert out.tokens[0].tolist() == [LABEL, 1, 2, 3, END, PAD, PAD, PAD]
    assert out.nfe == 4  # one place per step until END, then the rest in the same step
    assert end_lengths(out.tokens, END, prefix=1).tolist() == [3, 3]
    assert end_lengths(torch.tensor([[LABEL, 1, 1, 1]]), END, prefix=1).tolist() == [3]  # no END: all places


def test_stop_false_never_draws_end_and_fills_left_to_right():
    denoiser = ByPlace(peaked([LABEL, END, 2, END, 1, 0, 0, END]))
    canvas = torch.tensor([[LABEL, V, V, 3, V, V, V, END]])
    seen = []
    out = generate(denoiser, canvas, BAMMSampler(END, PAD, stop=False), mask_id=V,
                   on_step=lambda tokens, new, logits: seen.append((new != tokens).nonzero()[:, 1].tolist()))
    assert seen == [[1], [2], [4], [5], [6]]
    assert END not in out.tokens[0, 1:7].tolist()
    assert out.tokens[0, 3] == 3 and out.tokens[0, 7] == END


def test_sampler_never_changes_given_tokens():
    g = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, K, (5, 10), generator=g)
    canvas[torch.rand(5, 10, generator=g) < 0.6] = V
    logits = torch.randn(10, V, generator=g)
    out = generate(Factorised(logits), canvas, BAMMSampler(), mask_id=V, generator=g)
    given = canvas != V
    assert torch.equal(out.tokens[given], canvas[given]) and not (out.tokens == V).any()


def test_cascade_keeps_given_tokens_and_the_length():
    m = model()
    canvas = torch.full((6, 8), V)
    canvas[:, 0] = LABEL
    canvas[:, 1] = 2  # a one-frame prefix
    g = torch.Generator().manual_seed(1)
    first = bamm_cascade(m, canvas, end_id=END, pad_id=PAD, prefix=1, refinements=0, generator=g)
    g = torch.Generator().manual_seed(1)
    refined = bamm_cascade(m, canvas, end_id=END, pad_id=PAD, prefix=1, refinements=2, generator=g)
    assert torch.equal(refined.tokens[:, :2], canvas[:, :2])
    assert torch.equal(refined.lengths, first.lengths)  # refinement never moves END
    assert torch.equal(refined.tokens == PAD, first.tokens == PAD)
    assert (refined.lengths >= 1).all() and refined.nfe > first.nfe
    body = torch.arange(8)[None] <= first.lengths[:, None]  # label .. last motion token
    assert ((refined.tokens[:, 1:] < K) == body[:, 1:]).all()


def objective(**kw):
    return BAMMTokenModeling(model(), codes=K, end_id=END, pad_id=PAD, **kw)


def batch():
    return torch.tensor([[LABEL, 0, 1, 2, END, PAD, PAD, PAD],
                         [LABEL, 3, 3, 1, 0, 2, 1, END]])


def test_draw_reveals_and_corrupts_only_motion():
    obj = objective(reveal_prob=1.0, reveal_max=1.0, corrupt_max=1.0)
    tokens = batch()
    for seed in range(5):
        revealed, inputs = obj.draw(tokens, torch.Generator().manual_seed(seed))
        assert revealed[:, 0].all() and not revealed[tokens == PAD].any()
        assert torch.equal(inputs[:, 0], tokens[:, 0])
        stay = tokens >= K  # END and PAD never replaced
        assert torch.equal(inputs[stay], tokens[stay]) and (inputs[tokens < K] < K).all()
    revealed, inputs = objective(reveal_prob=0.0, corrupt_max=0.0).draw(tokens, torch.Generator().manual_seed(0))
    assert revealed.sum() == 2 and torch.equal(inputs, tokens)


def test_loss_is_the_row_mean_of_next_token_cross_entropy():
    obj = objective(reveal_prob=0.0, corrupt_max=0.0)
    tokens = batch()
    loss, metrics = obj({"tokens": tokens}, torch.Generator().manual_seed(0))
    revealed = torch.zeros_like(tokens, dtype=torch.bool)
    revealed[:, 0] = True
    logits = obj.model(tokens, revealed)
    rows = [F.cross_entropy(logits[0, 1:5], tokens[0, 1:5]), F.cross_entropy(logits[1, 1:8], tokens[1, 1:8])]
    assert torch.allclose(loss, torch.stack(rows).mean(), atol=1e-6)
    assert 0 <= metrics["end_accuracy"] <= 1 and torch.isfinite(loss)
    loss.backward()


def test_recipe_is_registered_and_checks_settings():
    from unmask.recipes import get

    cls = get("bamm")
    with pytest.raises(UnmaskError, match="eval.prefix"):
        cls().with_overrides(["eval.prefix=4"])
    with pytest.raises(UnmaskError, match="min_frames"):
        cls().with_overrides(["data.min_frames=20"])
    r = cls()
    end, pad, first_clip = r.ids()
    assert (end, pad, first_clip) == (64, 65, 66) and r.model_config().vocab_size == 66 + 15
