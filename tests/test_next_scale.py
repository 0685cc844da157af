"""Next-scale prediction with masked steps inside each scale (HMAR; sampling/next_scale.py,
nn/scale_attention.py): the attention pattern by hand, scales decoded coarse to fine, the calls add
up, one step per scale is VAR's decoding; multi-scale targets. The sampler contract runs in
test_samplers.py."""

import pytest
import torch
import torch.nn.functional as F

from toys import Factorised, Recorder
from unmask.layout import Layout
from unmask.masking import CoarseToFineMask
from unmask.nn import MaskedTokenModel, ModelConfig, scale_causal_mask
from unmask.sampling import FirstHittingSampler, MaskGITSampler, NextScaleSampler, generate
from unmask.sampling.next_scale import scale_layout, scale_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

V = 5
SIDES = [1, 2, 4]
LENGTHS = (1, 4, 16)
N = 21


def test_scale_causal_mask_by_hand():
    # scales of 1, 2 and 3 tokens: places 0 | 1 2 | 3 4 5
    full = [[1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1]]
    markov = [[1, 0, 0, 0, 0, 0],
              [1, 1, 1, 0, 0, 0],
              [1, 1, 1, 0, 0, 0],
              [0, 1, 1, 1, 1, 1],
              [0, 1, 1, 1, 1, 1],
              [0, 1, 1, 1, 1, 1]]
    assert scale_causal_mask([1, 2, 3]).int().tolist() == full
    assert scale_causal_mask([1, 2, 3], markov=True).int().tolist() == markov
    assert scale_causal_mask([1, 2, 3]).dtype == torch.bool
    with pytest.raises(ValueError, match="sizes"):
        scale_causal_mask([1, 0])


def test_a_scale_causal_model_never_reads_finer_scales():
    layout = scale_layout(SIDES)
    torch.manual_seed(0)
    m = MaskedTokenModel(ModelConfig(V, layout, dim=16, depth=2, heads=2, attention="scale_causal")).eval()
    assert torch.equal(m.attn_mask, scale_causal_mask(LENGTHS))
    a = torch.randint(0, V + 1, (2, N))
    b = a.clone()
    b[:, 5:] = torch.randint(0, V + 1, (2, 16))  # change the finest scale only
    assert torch.allclose(m(a)[:, :5], m(b)[:, :5], atol=1e-6)
    assert not torch.allclose(m(a)[:, 5:], m(b)[:, 5:])
    where = a == V
    assert torch.allclose(m(a, where=where), m(a)[where], atol=1e-6)  # the last-block shortcut keeps the mask
    with pytest.raises(ValueError, match="attention must be"):
        MaskedTokenModel(ModelConfig(V, layout, attention="causal"))


def scales_done(x: torch.Tensor) -> torch.Tensor:
    """Bool[B, S]: every token of the scale committed."""
    return torch.stack([(x[:, w] != V).all(1) for w in _slices()], 1)


def scales_started(x: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """Bool[B, S]: some token of the scale committed by the sampler (not given in the canvas)."""
    return torch.stack([((x[:, w] != V) & (canvas[:, w] == V)).any(1) for w in _slices()], 1)


def _slices():
    return [scale_layout(SIDES).slice(f"scale{k}") for k in range(len(SIDES))]


def test_no_scale_is_decoded_before_the_coarser_ones_finish():
    rec = Recorder(Factorised(torch.randn(N, V, generator=torch.Generator().manual_seed(1))))
    canvas = torch.full((4, N), V)
    canvas[2, 1:5] = torch.arange(4)  # a row whose scale 1 is given
    out = generate(rec, canvas, NextScaleSampler(3, LENGTHS), mask_id=V, generator=torch.Generator().manual_seed(2))
    for x in [*rec.inputs, out.tokens]:
        started, done = scales_started(x, canvas), scales_done(x)
        for k in range(1, len(SIDES)):
            assert not (started[:, k] & ~done[:, :k].all(1)).any()
    for before, after in zip(rec.inputs, [*rec.inputs[1:], out.tokens], strict=True):
        changed = torch.stack([(before[:, w] != after[:, w]).any() for w in _slices()])
        assert int(changed.sum()) == 1  # each call commits tokens of one scale only


@pytest.mark.parametrize("steps, expected", [(1, 3), (3, 1 + 3 + 3), ((1, 2, 5), 8), (4, 1 + 4 + 4), (6, 1 + 4 + 6)])
def test_calls_are_the_sum_of_the_steps_per_scale(steps, expected):
    """A scale of n tokens takes min(steps, n) calls: MaskGIT commits at least one token per call."""
    rec = Recorder(Factorised(torch.randn(N, V)))
    out = generate(rec, torch.full((2, N), V), NextScaleSampler(steps, LENGTHS), mask_id=V,
                   generator=torch.Generator().manual_seed(0))
    assert out.nfe == rec.calls == expected


def test_one_step_per_scale_is_var_decoding():
    """steps_per_scale=1: one call per scale, and the scale's tokens are drawn at once from that call,
    which sees every coarser scale filled and this and every finer one hidden. Greedy, so each scale
    must equal the argmax of its call's logits, computed here by hand with the network."""
    torch.manual_seed(0)
    m = MaskedTokenModel(ModelConfig(V, scale_layout(SIDES), dim=16, depth=2, heads=2,
                                     attention="scale_causal")).eval()
    rec = Recorder(m)
    canvas = torch.full((3, N), V)
    out = generate(rec, canvas, NextScaleSampler(1, LENGTHS, MaskGITSampler(temperature=0.0)), mask_id=V)
    assert out.nfe == rec.calls == len(SIDES)
    by_hand = canvas.clone()
    for k, w in enumerate(_slices()):
        assert torch.equal(rec.inputs[k], by_hand)
        with torch.no_grad():
            by_hand[:, w] = m(by_hand)[:, w].argmax(-1)
    assert torch.equal(out.tokens, by_hand)


def test_a_given_label_prefix_is_skipped():
    layout = scale_layout(SIDES, prefix=Layout.seq(1, "label"))
    assert layout.names == ("label", "scale0", "scale1", "scale2") and layout.n == 1 + N
    canvas = torch.full((2, 1 + N), V)
    canvas[:, 0] = torch.tensor([3, 1])
    rec = Recorder(Factorised(torch.randn(1 + N, V)))
    out = generate(rec, canvas, NextScaleSampler((1, 1, 2, 3), (1, *LENGTHS)), mask_id=V)
    assert out.nfe == 1 + 2 + 3
    assert torch.equal(out.tokens[:, 0], canvas[:, 0])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="one per scale"):
        NextScaleSampler((1, 2), LENGTHS)
    with pytest.raises(ValueError, match="lengths must be token counts"):
        NextScaleSampler(2, (1, 0))
    with pytest.raises(ValueError, match="FirstHittingSampler has none"):
        NextScaleSampler(2, LENGTHS, FirstHittingSampler())
    with pytest.raises(ValueError, match="add up to 21, but the canvas has 12"):
        generate(Factorised(torch.zeros(12, V)), torch.full((1, 12), V), NextScaleSampler(2, LENGTHS), mask_id=V)


def test_scale_tokens_tokenize_each_area_resized_image():
    def quantise(images):  # a toy tokenizer of stride 2
        return (F.avg_pool2d(images, 2).squeeze(1) * V).clamp(0, V - 1).long()

    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = scale_tokens(images, quantise, SIDES, stride=2)
    assert [tuple(t.shape) for t in maps] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]
    assert torch.equal(maps[2], quantise(images))
    assert torch.equal(maps[0][:, 0, 0], (images.mean((1, 2, 3)) * V).clamp(0, V - 1).long())
    with pytest.raises(ValueError, match="expected Long\\[B, 2, 2\\] with stride 4"):
        scale_tokens(images, quantise, [2], stride=4)


def test_the_training_mask_trains_one_scale_per_row_in_proportion_to_its_tokens():
    mask = CoarseToFineMask()(scale_layout(SIDES), 4200, ratio=0.5, generator=torch.Generator().manual_seed(4))
    rows = torch.stack([mask[:, w].any(1) for w in _slices()], 1)  # [B, S]
    assert (rows.sum(1) == 1).all()
    share = rows.double().mean(0)
    assert torch.allclose(share, torch.tensor(LENGTHS, dtype=torch.float64) / N, atol=0.03)
