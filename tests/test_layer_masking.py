"""Layer masking (arXiv:2211.14646): the mask grows by max-pool over each layer's window, hidden
positions next to visible ones are filled with their visible neighbours' mean before each conv, the
final pool averages visible positions, and nothing hidden is ever read; the missingness measures."""

import math

import pytest
import torch

from unmask.eval.layer_masking import (
    class_kl,
    ink_free,
    missingness,
    paint,
    patch_masks,
    predict,
)
from unmask.nn.masked_cnn import (
    LAYER_MASKING,
    SPARSE,
    CNNClassifier,
    CNNConfig,
    carry_keep,
    cell_keep,
    neighbour_fill,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small convs on a shared CPU run 30x slower on two threads than on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def classifier(seed=0):
    torch.manual_seed(seed)
    model = CNNClassifier(5, CNNConfig(widths=(8, 16), stem_stride=1))
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.rand(16, 1, 16, 16))
    return model.eval()


def test_neighbour_fill_by_hand():
    x = torch.zeros(1, 1, 4, 5)
    keep = torch.zeros(1, 1, 4, 5, dtype=torch.bool)
    x[0, 0, 1, 1], x[0, 0, 1, 3] = 2.0, 4.0
    keep[0, 0, 1, 1] = keep[0, 0, 1, 3] = True
    one = neighbour_fill(x, keep, 1)[0, 0]
    assert one[1, 2] == 3.0  # both neighbours: their mean
    assert one[0, 0] == 2.0 and one[2, 4] == 4.0  # one neighbour
    assert one[3, 0] == 0.0  # no known neighbour yet
    assert one[1, 1] == 2.0 and one[1, 3] == 4.0  # known values stay
    two = neighbour_fill(x, keep, 2)[0, 0]
    # (3, 0) sees (2, 0) = 2 and (2, 1) = 2 filled in round one
    assert two[3, 0] == 2.0
    # (3, 2) sees (2, 1) = 2, (2, 2) = 3, (2, 3) = 4 from round one
    assert two[3, 2] == pytest.approx(3.0)


def test_mask_grows_by_max_pool_of_the_window():
    keep = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    keep[0, 0, 2, 2] = True
    grown = carry_keep(keep, LAYER_MASKING, 3, 1, 1)[0, 0]
    want = torch.zeros(6, 6, dtype=torch.bool)
    want[1:4, 1:4] = True
    assert torch.equal(grown, want)
    strided = carry_keep(keep, LAYER_MASKING, 3, 2, 1)[0, 0]  # windows centred at 0, 2, 4
    want = torch.zeros(3, 3, dtype=torch.bool)
    want[1, 1] = True  # only the window centred at 2 (reading 1..3) holds it
    assert torch.equal(strided, want)
    # SparK's rule, for contrast: only the centre decides, so nothing grows
    assert carry_keep(keep, SPARSE, 3, 1, 1).sum() == 1


def test_layer_masking_never_reads_hidden_pixels():
    model = classifier()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=g)
    mask = patch_masks(x, 4, 6, g)
    grey, black = paint(x, mask, 4, 0.5), paint(x, mask, 4, 0.0)
    a = predict(model, grey, mask, 4, "layer")
    with torch.no_grad():
        keep = cell_keep(mask, (4, 4), 4)
        assert torch.equal(model(grey, keep), model(black, keep))
    assert torch.equal(a, predict(model, black, mask, 4, "layer"))
    # painting changes what a plain model sees: the test can tell the two apart
    with torch.no_grad():
        assert not torch.equal(model(grey), model(black))


def test_all_visible_equals_the_plain_network():
    model = classifier()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x, torch.ones(3, 1, 16, 16, dtype=torch.bool)), model(x), atol=1e-6)


def test_final_pool_averages_visible_positions_by_hand():
    model = classifier()
    x = torch.rand(2, 1, 16, 16)
    keep = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    keep[:, :, :8, :8] = True
    with torch.no_grad():
        out = model.body(x, keep)
        last, k = out.maps[-1], out.keeps[-1]  # [2, 16, 8, 8], grown from the 4x4 visible corner
        want = torch.stack([last[b].permute(1, 2, 0)[k[b, 0]].mean(0) for b in range(2)])
        assert torch.allclose(model.body.pooled(x, keep), want, atol=1e-6)
        assert 16 < k[0].sum() < 64  # grown past the corner, not everywhere


def test_patch_masks_counts_and_ink_free_choice():
    x = torch.zeros(3, 1, 16, 16)
    x[0, 0, 5, 5] = 1.0  # ink in patch (1, 1) only
    x[1, 0, :, :12] = 1.0  # ink in the first three columns of patches: 4 ink-free patches
    x[2] = 1.0  # no ink-free patch
    free = ink_free(x, 4)
    assert free.sum(1).tolist() == [15, 4, 0]
    mask = patch_masks(x, 4, 6, torch.Generator().manual_seed(0), ink_free_only=True)
    assert mask.sum(1).tolist() == [6, 4, 0]  # exact, or every ink-free patch where fewer
    assert not (mask & ~free).any()
    mask = patch_masks(x, 4, 6, torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 6).all()
    # black over ink-free patches changes no pixel of a white-on-black image
    free_mask = patch_masks(x, 4, 6, torch.Generator().manual_seed(1), ink_free_only=True)
    assert torch.equal(paint(x, free_mask, 4, 0.0), x)
    assert not torch.equal(paint(x, free_mask, 4, 0.5), x)
    with pytest.raises(ValueError, match="count"):
        patch_masks(x, 4, 17)


def test_missingness_measures_by_hand():
    labels = torch.tensor([0, 0, 1, 2])
    whole = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 2])
    s = missingness(pred, whole, labels, 3)
    assert s.agreement == 0.5 and s.accuracy == 0.75 and s.top_share == 0.75
    # P_pred = (3/4, 0, 1/4), P_true = (1/2, 1/4, 1/4)
    assert s.class_kl == pytest.approx(0.75 * math.log(1.5))
    assert class_kl(labels, labels, 3) == 0.0
    with pytest.raises(ValueError, match="infinite"):
        class_kl(torch.tensor([2, 2]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="how"):
        predict(classifier(), torch.rand(1, 1, 16, 16), None, 4, "white")


def test_gradient_reaches_visible_pixels_through_the_fill():
    x = torch.rand(1, 2, 6, 6, requires_grad=True)
    keep = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    keep[..., :3, :3] = True
    neighbour_fill(x * keep, keep, 3).sum().backward()
    assert (x.grad[..., :3, :3] == 1).all() and (x.grad[..., 3:, :] == 0).all()
