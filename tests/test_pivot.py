"""Hi-MAR (sampling/pivot.py, masking/coarse_to_fine.py): pivots are decoded before any dense token,
the calls add up, given tokens stay, rows are their own; pivots made from images or tokens; the
two-phase training mask. The sampler contract runs in test_samplers.py."""

import pytest
import torch
import torch.nn.functional as F

from toys import Factorised, Recorder
from unmask.masking import CoarseToFineCorruption, CoarseToFineMask
from unmask.nn import MaskedTokenModel, ModelConfig
from unmask.objectives import MaskedTokenModeling
from unmask.sampling import MaskGITSampler, PivotSampler, generate
from unmask.sampling.next_scale import mode_pool
from unmask.sampling.pivot import join_pivots, pivot_layout, pivot_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

V = 7
LAYOUT = pivot_layout(4, 4)  # pivot 2 x 2 (places 0..3), dense 4 x 4 (places 4..19)
P, N = 4, 20


def sampler(pivot_steps=3, dense_steps=5, **kw):
    return PivotSampler(MaskGITSampler(pivot_steps, **kw), MaskGITSampler(dense_steps, **kw), pivot_length=P)


def tiny_model():
    torch.manual_seed(0)
    return MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=1, heads=2)).eval()


def test_pivot_layout():
    assert LAYOUT.names == ("pivot", "dense")
    assert LAYOUT.segment("pivot").shape == (2, 2) and LAYOUT.slice("dense") == slice(4, 20)
    assert pivot_layout(8, 4, factor=4).segment("pivot").shape == (2, 1)
    with pytest.raises(ValueError, match="dividing the dense grid 4 x 6"):
        pivot_layout(4, 6, factor=4)


def test_no_dense_token_is_committed_before_every_pivot_of_its_row():
    rec = Recorder(Factorised(torch.randn(N, V, generator=torch.Generator().manual_seed(0))))
    canvas = torch.full((5, N), V)
    canvas[1, :P] = torch.tensor([1, 2, 3, 4])  # a row whose pivots are given starts on dense tokens
    out = generate(rec, canvas, sampler(), mask_id=V, generator=torch.Generator().manual_seed(1))
    assert not (out.tokens == V).any()
    for x in [*rec.inputs, out.tokens]:
        dense_started = (x[:, P:] != V).any(1)
        pivots_done = (x[:, :P] != V).all(1)
        assert not (dense_started & ~pivots_done).any()
    first_dense_call = next(x for x in rec.inputs if (x[0, :P] != V).all())
    assert (first_dense_call[0, P:] == V).all()  # the dense phase starts from finished pivots and no dense token


@pytest.mark.parametrize("steps", [(1, 1), (3, 5), (4, 16)])
def test_calls_are_pivot_steps_plus_dense_steps(steps):
    rec = Recorder(Factorised(torch.randn(N, V)))
    out = generate(rec, torch.full((3, N), V), sampler(*steps), mask_id=V, generator=torch.Generator().manual_seed(0))
    assert out.nfe == rec.calls == sum(steps)
    pivot_hidden = [int((x[:, :P] == V).any()) for x in rec.inputs]
    assert pivot_hidden == [1] * steps[0] + [0] * steps[1]


def test_given_tokens_never_change():
    g = torch.Generator().manual_seed(2)
    canvas = torch.randint(0, V, (4, N), generator=g)
    hidden = torch.rand(4, N, generator=g) < 0.6
    hidden[:, 0] = hidden[:, -1] = True
    canvas = canvas.masked_fill(hidden, V)
    rec = Recorder(tiny_model())
    out = generate(rec, canvas, sampler(choice_temperature=5.0), mask_id=V, generator=g)
    for x in [*rec.inputs, out.tokens]:
        assert torch.equal(x[~hidden], canvas[~hidden])


def test_rows_are_independent_of_their_batch_mates():
    """Greedy decoding (no draw) by a real network: each row alone gives what it gives in the batch."""
    m = tiny_model()
    g = torch.Generator().manual_seed(3)
    canvas = torch.full((4, N), V)
    canvas[1, :P] = torch.randint(0, V, (P,), generator=g)  # rows in different phases at the start
    canvas[2, 10:14] = torch.randint(0, V, (4,), generator=g)
    greedy = sampler(temperature=0.0, choice_temperature=0.0)
    batch = generate(m, canvas, greedy, mask_id=V).tokens
    for b in range(4):
        assert torch.equal(generate(m, canvas[b:b + 1], greedy, mask_id=V).tokens[0], batch[b])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="inner_dense must be a sampler"):
        PivotSampler(MaskGITSampler(), 12, pivot_length=4)
    with pytest.raises(ValueError, match="pivot_length must be an integer >= 1"):
        PivotSampler(MaskGITSampler(), MaskGITSampler(), pivot_length=0)
    with pytest.raises(ValueError, match="not more than pivot_length=4"):
        generate(Factorised(torch.zeros(4, V)), torch.full((2, 4), V), sampler(), mask_id=V)


# --- pivots for training ------------------------------------------------------------------------


def quantise(images):
    """A toy tokenizer of stride 2: each 2 x 2 pixel patch's mean grey level in V bins."""
    return (F.avg_pool2d(images, 2).squeeze(1) * V).clamp(0, V - 1).long()


def test_pivot_tokens_tokenize_the_downsampled_image():
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    pivots = pivot_tokens(images, quantise)
    assert pivots.shape == (3, 4, 4)
    assert torch.equal(pivots, quantise(F.avg_pool2d(images, 2)))  # area resize by 2 is a 2 x 2 mean
    dense = quantise(images)
    seq = join_pivots(pivots, dense)
    assert seq.shape == (3, 16 + 64)
    assert torch.equal(seq[:, pivot_layout(8, 8).slice("dense")], dense.flatten(1))
    with pytest.raises(ValueError, match="Long\\[B, h, w\\]"):
        pivot_tokens(images, lambda x: x.flatten(1).long())
    with pytest.raises(ValueError, match="dividing the image size 16 x 16"):
        pivot_tokens(images, quantise, factor=3)


def test_mode_pool_takes_each_windows_most_frequent_token():
    tokens = torch.tensor([[[1, 1, 2, 3],
                            [4, 1, 3, 2],
                            [5, 6, 0, 0],
                            [7, 6, 0, 9]]])
    # windows: {1, 1, 4, 1} -> 1; {2, 3, 3, 2} -> tie, the smaller 2; {5, 6, 7, 6} -> 6; {0, 0, 0, 9} -> 0
    assert mode_pool(tokens, 2).tolist() == [[[1, 2], [6, 0]]]
    assert torch.equal(mode_pool(tokens, 1), tokens)
    with pytest.raises(ValueError, match="factor"):
        mode_pool(tokens, 3)


# --- the two training phases --------------------------------------------------------------------


def test_each_row_trains_one_phase():
    masker = CoarseToFineMask(("pivot", "dense"), weights=(0.5, 0.5))
    ratio = torch.rand(400, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mask = masker(LAYOUT, 400, ratio=ratio, generator=torch.Generator().manual_seed(6))
    pivot_rows = mask[:, :P].any(1)
    dense_rows = mask[:, P:].any(1)
    assert torch.equal(pivot_rows, ~dense_rows)  # exactly one phase per row
    assert 150 < int(pivot_rows.sum()) < 250
    expect = torch.where(pivot_rows, torch.round(ratio * P), torch.round(ratio * (N - P))).clamp(min=1).long()
    assert torch.equal(mask.sum(1), expect)
    only_pivots = CoarseToFineMask(("pivot", "dense"), weights=(1.0, 0.0))(LAYOUT, 50, ratio=0.5)
    assert not only_pivots[:, P:].any() and (only_pivots[:, :P].sum(1) == 2).all()
    with pytest.raises(ValueError, match="2 values for 1 stages"):
        CoarseToFineMask(("dense",), weights=(1.0, 1.0))(LAYOUT, 2)


def test_pivot_rows_read_no_dense_token_and_dense_rows_read_every_pivot():
    tokens = torch.randint(0, V, (2, N), generator=torch.Generator().manual_seed(7))
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[0, 1] = True  # a pivot row
    mask[1, [5, 9]] = True  # a dense row
    inputs = CoarseToFineCorruption(LAYOUT, ("pivot", "dense"))(tokens, mask, V)
    assert inputs[0].tolist() == [tokens[0, 0], V, *tokens[0, 2:P].tolist()] + [V] * (N - P)
    expect = tokens[1].clone()
    expect[[5, 9]] = V
    assert torch.equal(inputs[1], expect)


def test_two_phase_training_scores_only_the_rows_phase():
    m = MaskedTokenModel(ModelConfig(V, LAYOUT, dim=16, depth=1, heads=2))
    stages = ("pivot", "dense")
    objective = MaskedTokenModeling(m, CoarseToFineMask(stages), corruption=CoarseToFineCorruption(LAYOUT, stages))
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append((args[0].clone(), out.shape[0])))
    tokens = torch.randint(0, V, (16, N), generator=torch.Generator().manual_seed(8))
    out = objective({"tokens": tokens}, generator=torch.Generator().manual_seed(9))
    out.loss.backward()
    inputs, scored = seen[0]
    pivot_rows = (inputs[:, :P] == V).any(1)
    assert (inputs[pivot_rows, P:] == V).all()
    assert scored == int((inputs[pivot_rows, :P] == V).sum() + (inputs[~pivot_rows] == V).sum())


def test_stages_are_named_in_layout_order():
    with pytest.raises(ValueError, match="coarse to fine"):
        CoarseToFineMask(("dense", "pivot"), weights=(0.7, 0.3))(LAYOUT, 2)
