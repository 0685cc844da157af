"""GETMusic's track mask: only content tracks are hidden, exact counts, uniform content choice."""

import pytest
import torch

from unmask.layout import Layout
from unmask.masking.tracks import TrackMask

VOICES = Layout.streams(4, 16, name="voices")


def per_track(mask):
    return mask.view(mask.shape[0], 4, 16).sum(2)  # [B, 4] hidden tokens per track


def test_given_content_hides_exactly_its_share_and_never_a_condition_track():
    g = torch.Generator().manual_seed(0)
    for ratio in (0.0, 0.3, 0.5, 1.0):
        mask = TrackMask()(VOICES, 64, ratio=ratio, generator=g, content=torch.tensor([False, True, True, True]))
        assert (mask.sum(1) == round(ratio * 48)).all()
        assert not per_track(mask)[:, 0].any()  # the soprano is a condition
    whole = TrackMask()(VOICES, 4, ratio=1.0, content=torch.tensor([False, True, True, True]))
    assert per_track(whole).tolist() == [[0, 16, 16, 16]] * 4


def test_per_row_content():
    content = torch.tensor([[True, False, False, False], [False, False, True, True]])
    mask = TrackMask()(VOICES, 2, ratio=torch.tensor([1.0, 0.5]), content=content)
    assert per_track(mask)[0].tolist() == [16, 0, 0, 0]
    assert mask[1].sum() == 16 and per_track(mask)[1, :2].sum() == 0


def test_drawn_content_counts_and_uniform_choice():
    g = torch.Generator().manual_seed(1)
    mask = TrackMask()(VOICES, 8000, ratio=1.0, generator=g)
    hidden = per_track(mask)
    assert ((hidden == 0) | (hidden == 16)).all()  # at ratio 1 a content track is hidden whole
    k = (hidden == 16).sum(1)
    assert k.min() == 1 and k.max() == 4
    for j in range(1, 5):  # the number of content tracks is uniform on 1..4
        assert abs((k == j).double().mean().item() - 0.25) < 0.02
    freq = (hidden == 16).double().mean(0)  # each track is content with probability E[k] / 4 = 0.625
    assert torch.allclose(freq, torch.full((4,), 0.625, dtype=torch.float64), atol=0.02)


def test_partial_ratio_is_exact_for_the_drawn_number_of_tracks():
    mask = TrackMask()(VOICES, 500, ratio=0.5, generator=torch.Generator().manual_seed(2))
    count = mask.sum(1)
    assert set(count.tolist()) <= {8, 16, 24, 32}  # round(0.5 * k * 16), k = 1..4
    touched = (per_track(mask) > 0).sum(1)
    assert (touched <= count // 8).all()  # never more tracks than the k drawn


def test_fixed_number_of_content_tracks():
    mask = TrackMask(min_content=3, max_content=3)(VOICES, 50, ratio=1.0, generator=torch.Generator().manual_seed(3))
    assert ((per_track(mask) == 16).sum(1) == 3).all()


def test_same_generator_same_mask_and_bad_inputs():
    a = TrackMask()(VOICES, 8, ratio=0.6, generator=torch.Generator().manual_seed(4))
    b = TrackMask()(VOICES, 8, ratio=0.6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="streams"):
        TrackMask()(Layout.grid(4, 4), 2, ratio=0.5)
    with pytest.raises(ValueError, match="content must be"):
        TrackMask()(VOICES, 2, ratio=0.5, content=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="exceeds"):
        TrackMask(max_content=5)(VOICES, 2, ratio=0.5)
    with pytest.raises(ValueError, match="min_content"):
        TrackMask(min_content=0)
