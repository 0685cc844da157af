"""Token-Shuffle (nn/token_shuffle.py): the window permutation against a hand-written map, what the
Transformer reads and costs, and a model with the option that trains."""

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from unmask.layout import Layout
from unmask.masking import RandomMask
from unmask.nn import MaskedTokenModel, ModelConfig, TokenShuffle
from unmask.nn.token_shuffle import window_order
from unmask.objectives import MaskedTokenModeling

pytestmark = pytest.mark.usefixtures("one_thread")

# a 4 x 4 grid, row-major:    windows of 2 x 2, row-major, and their tokens row-major:
#   0  1  2  3                 window 0: 0 1 4 5      window 1: 2 3 6 7
#   4  5  6  7                 window 2: 8 9 12 13    window 3: 10 11 14 15
#   8  9 10 11
#  12 13 14 15
HAND = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
V = 6


def model(layout, shuffle=1, dim=32, depth=2, **kw):
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(V, layout, dim=dim, depth=depth, heads=2, shuffle=shuffle, **kw)).eval()


def test_window_order_is_the_hand_written_permutation():
    order = window_order(4, 4, 2)
    assert order.tolist() == sum(HAND, [])
    assert torch.equal(order.sort().values, torch.arange(16))  # a permutation
    assert torch.equal(order[order.argsort()], torch.arange(16))
    assert window_order(4, 6, 1).tolist() == list(range(24))


def test_shuffle_and_unshuffle_place_every_child_by_the_hand_map():
    """dim 1: the merge weights (1, 10, 100, 1000) write each window's four children as digits, and the
    split adds a child's own offset, so every value shows which place went where."""
    layout = Layout.seq(1, "label") + Layout.grid(4, 4, "g")
    ts = TokenShuffle(1, 2, layout)
    with torch.no_grad():
        ts.merge.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        ts.merge.bias.zero_()
        ts.split.weight.fill_(1.0)
        ts.split.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    ts.norm = nn.Identity()  # a LayerNorm over one channel would flatten everything to its bias
    x = torch.arange(17, dtype=torch.float64).float().view(1, 17, 1)  # value = place; place 0 is the label
    merged = ts.shuffle(x)
    assert merged.shape == (1, 1 + 4, 1)
    assert merged[0, 0, 0] == 0  # the label passes through
    for k, window in enumerate(HAND):
        digits = sum((1 + p) * 10**c for c, p in enumerate(window))  # grid place p is sequence place 1 + p
        assert merged[0, 1 + k, 0].item() == pytest.approx(digits)
    out = ts.unshuffle(merged)
    assert out.shape == (1, 17, 1) and out[0, 0, 0] == 0
    for k, window in enumerate(HAND):
        for c, p in enumerate(window):
            assert out[0, 1 + p, 0].item() == pytest.approx(merged[0, 1 + k, 0].item() + 0.1 * (c + 1))


def test_the_transformer_reads_n_over_s_squared_tokens():
    layout = Layout.seq(1, "label") + Layout.grid(8, 8, "pixels")
    seen = []
    for s in (1, 2, 4):
        m = model(layout, shuffle=s)
        hook = m.encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
        m(torch.randint(0, V + 1, (3, 65)))
        hook.remove()
    assert seen == [65, 1 + 64 // 4, 1 + 64 // 16]


def test_block_flops_drop_by_s_squared():
    """Linear layers cost exactly s^2 less, attention's two products s^4 less (math attention, so
    FlopCounterMode sees its matrix products)."""
    layout = Layout.grid(8, 8)
    counts = {}
    for s in (1, 2):
        m = model(layout, shuffle=s)
        inputs = []
        m.encoder.register_forward_hook(lambda mod, args, out, inputs=inputs: inputs.append(args[0]))
        m(torch.randint(0, V, (2, 64)))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            m.encoder(inputs[0])
        counts[s] = {str(op): n for op, n in fc.get_flop_counts()["Global"].items()}
        counts[s]["total"] = fc.get_total_flops()
    assert counts[1]["aten.addmm"] == 4 * counts[2]["aten.addmm"]
    assert counts[1]["aten.bmm"] == 16 * counts[2]["aten.bmm"]
    assert counts[1]["total"] >= 4 * counts[2]["total"]


def test_logits_shape_and_the_mask_id():
    layout = Layout.seq(1, "label") + Layout.grid(4, 8, "pixels")
    m = model(layout, shuffle=2)
    tokens = torch.randint(0, V, (3, 33))
    tokens[:, 5] = m.mask_id
    assert m.mask_id == V
    assert m(tokens).shape == (3, 33, V)
    where = tokens == V
    assert m(tokens, where=where).shape == (3, V)
    assert torch.allclose(m(tokens, where=where), m(tokens)[where], atol=1e-6)
    assert m.features(tokens).shape == (3, 33, 32)


@pytest.mark.parametrize("s", [3, 5])
def test_a_window_that_does_not_divide_the_grid_is_refused(s):
    with pytest.raises(ValueError, match=f"window {s} must divide both sides of grid segment 'pixels' \\(4 x 6\\)"):
        model(Layout.grid(4, 6, "pixels"), shuffle=s)


def test_other_bad_windows_are_refused():
    with pytest.raises(ValueError, match="integer >= 1, got 0"):
        model(Layout.grid(4, 4), shuffle=0)
    with pytest.raises(ValueError, match="no grid"):
        model(Layout.seq(16), shuffle=2)
    with pytest.raises(ValueError, match="does not combine with shuffle"):
        model(Layout.grid(4, 4), shuffle=2, attention="scale_causal")


def stripes(b, g):
    """Long[B, 64]: 8 x 8 grids whose rows are each one token: a hidden token is its row's token."""
    rows = torch.randint(0, V, (b, 8, 1), generator=g)
    return rows.expand(b, 8, 8).reshape(b, 64)


def test_a_shuffled_model_learns_to_denoise():
    torch.manual_seed(0)
    layout = Layout.grid(8, 8, "pixels")
    m = MaskedTokenModel(ModelConfig(V, layout, dim=32, depth=1, heads=2, shuffle=2))
    objective = MaskedTokenModeling(m, RandomMask(), ratio=0.3)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(120):
        loss = objective({"tokens": stripes(32, g)}, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 1.6  # about log 6: nothing learned yet
    assert last < 0.5 * first
