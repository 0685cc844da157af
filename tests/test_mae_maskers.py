"""The MAE family's maskers: each one's defining property, plus the exact-count contract."""

import math

import pytest
import torch

from unmask.layout import Layout
from unmask.masking import (
    ColorMask,
    DisjointViewMask,
    FrequencyMask,
    HardPatchMask,
    RandomMask,
    SelectiveMask,
)
from unmask.masking.frequency import ring
from unmask.masking.hard_patch import hard_share_at
from unmask.masking.selective import select_targets

GRID = Layout.grid(16, 16)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def band_shares(mask: torch.Tensor, h: int, w: int) -> list[float]:
    """Share of the masks' mean power spectrum at |f| < 0.15, 0.15..0.35, >= 0.35 cycles/token."""
    m = mask.double().view(-1, h, w)
    power = torch.fft.fft2(m - m.mean((1, 2), keepdim=True)).abs().pow(2).mean(0)
    f = (torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None] ** 2).sqrt()
    total = power.sum()
    return [(power[(f >= lo) & (f < hi)].sum() / total).item() for lo, hi in [(0, 0.15), (0.15, 0.35), (0.35, 1)]]


# exact counts for every new masker, with the context each needs --------------------------------
def _context(b, n, first_ratio=0.75):
    return {
        "scores": torch.rand(b, n, generator=gen(9)),
        "energy": torch.randn(b, n, generator=gen(8)),
        "first": RandomMask()(Layout.seq(n), b, ratio=first_ratio, generator=gen(7)),
    }


@pytest.mark.parametrize("masker", [ColorMask(colour=c) for c in ("red", "blue", "green", "purple")]
                         + [HardPatchMask(), DisjointViewMask(), SelectiveMask(), FrequencyMask()],
                         ids=["red", "blue", "green", "purple", "hpm", "disjoint", "selective", "frequency"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 1.0])
def test_exact_count_and_determinism(masker, ratio):
    ctx = _context(8, GRID.n)
    a = masker(GRID, 8, ratio=ratio, generator=gen(1), **ctx)
    b = masker(GRID, 8, ratio=ratio, generator=gen(1), **ctx)
    assert a.dtype == torch.bool and a.shape == (8, 256)
    assert (a.sum(1) == round(ratio * 256)).all()
    assert torch.equal(a, b)


# ColorMAE (P26) ---------------------------------------------------------------------------------
def test_color_masks_have_their_colour():
    white = band_shares(RandomMask()(GRID, 600, ratio=0.75, generator=gen()), 16, 16)
    shares = {c: band_shares(ColorMask(colour=c)(GRID, 600, ratio=0.75, generator=gen()), 16, 16)
              for c in ("red", "blue", "green", "purple")}
    low, mid, high = 0, 1, 2
    assert shares["red"][low] > 3 * white[low]  # red: power at low frequencies (blobs)
    assert shares["blue"][high] > white[high] + 0.05 and shares["blue"][low] < white[low]  # blue: fine
    assert shares["green"][mid] > white[mid] + 0.05  # green: power at mid frequencies
    assert all(shares["green"][mid] > shares[c][mid] for c in ("red", "blue", "purple"))
    assert shares["purple"][mid] < white[mid] - 0.05  # purple: mid frequencies removed


def test_color_mask_works_on_video_and_streams_and_checks_settings():
    video = Layout.video(4, 8, 8)
    assert (ColorMask()(video, 3, ratio=0.5, generator=gen()).sum(1) == 128).all()
    assert (ColorMask(colour="red")(Layout.streams(4, 32), 3, ratio=0.25, generator=gen()).sum(1) == 32).all()
    with pytest.raises(ValueError, match="colour"):
        ColorMask(colour="pink")
    with pytest.raises(ValueError, match="sigma"):
        ColorMask(sigma_small=2.0, sigma_large=1.0)


# HPM (P3) ---------------------------------------------------------------------------------------
def test_hard_patches_are_always_hidden_and_the_rest_is_random():
    b, n = 400, 64
    layout = Layout.grid(8, 8)
    scores = torch.rand(b, n, generator=gen(3))
    mask = HardPatchMask(hard_share=0.5)(layout, b, ratio=0.75, generator=gen(), scores=scores)
    n_hard = int(48 * 0.5)
    top = scores.topk(n_hard, dim=1).indices
    assert mask.gather(1, top).all()  # the predicted-hardest patches are hidden, every row
    # the other 24 hidden are uniform over the remaining 40 places: each hidden w.p. 24 / 40
    rest = torch.ones(b, n, dtype=torch.bool).scatter(1, top, False)
    assert mask[rest].double().mean().item() == pytest.approx(24 / 40, abs=0.02)


def test_hard_share_zero_is_random_masking_and_schedule_is_easy_to_hard():
    scores = torch.arange(64.0).expand(2000, 64)
    mask = HardPatchMask(hard_share=0.0)(Layout.grid(8, 8), 2000, ratio=0.5, generator=gen(), scores=scores)
    freq = mask.double().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.05)  # no preference for high scores
    assert hard_share_at(0.0) == 0.0 and hard_share_at(1.0) == 0.5 and hard_share_at(0.5) == 0.25
    with pytest.raises(ValueError, match="scores"):
        HardPatchMask()(Layout.grid(8, 8), 2, ratio=0.5)


# DMJD (P72) and LUT (P1) disjoint views ---------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.6, 0.75, 0.9])
def test_second_view_sees_what_the_first_does_not(ratio):
    layout = Layout.grid(8, 8)
    first = RandomMask()(layout, 32, ratio=ratio, generator=gen(1))
    second = DisjointViewMask()(layout, 32, ratio=ratio, generator=gen(2), first=first)
    assert torch.equal(second.sum(1), first.sum(1))  # same exact count
    assert not ((~first) & (~second)).any()  # visible sets disjoint
    assert (first | second).all()  # every token reconstructed in at least one view


def test_second_view_with_a_lower_prediction_ratio_takes_n_extra_from_the_visible():
    layout = Layout.grid(8, 8)
    first = RandomMask()(layout, 16, ratio=0.6, generator=gen(1))
    second = DisjointViewMask(pred_ratio=0.8)(layout, 16, ratio=0.6, generator=gen(2), first=first)
    n_extra = math.floor(min(0.8 - 38 / 64, 38 / 64) * 64 + 1e-9)
    assert ((~first) & second).sum(1).tolist() == [n_extra] * 16


# SelectiveMAE (P64) -----------------------------------------------------------------------------
def test_selective_mask_keeps_rich_tokens_visible():
    b, n = 3000, 16
    energy = torch.linspace(-2, 2, n).expand(b, n)
    mask = SelectiveMask(seed_share=1.0)(Layout.grid(4, 4), b, ratio=15 / 16, generator=gen(), energy=energy)
    # one visible token, drawn from softmax(energy): the empirical law matches p
    p = torch.softmax(energy[0].double(), 0)
    freq = (~mask).double().mean(0)
    assert torch.allclose(freq, p, atol=0.02)


def test_selected_targets_are_hidden_and_follow_energy():
    b, n = 2000, 16
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, 8:] = True
    energy = torch.zeros(b, n)
    energy[:, 15] = 3.0
    t = select_targets(mask, energy, 1, generator=gen())
    assert (t >= 8).all()  # targets are hidden places
    p15 = math.exp(3) / (math.exp(3) + 7)
    assert (t == 15).double().mean().item() == pytest.approx(p15, abs=0.03)
    with pytest.raises(ValueError, match="targets"):
        select_targets(mask, energy, 9)


# MFM (P43) --------------------------------------------------------------------------------------
@pytest.mark.parametrize("band", ["low", "high"])
def test_frequency_mask_hides_a_disc_or_its_outside(band):
    layout = Layout.grid(8, 8)
    mask = FrequencyMask(band=band)(layout, 50, ratio=0.3, generator=gen())
    key = ring(8, 8)
    for row in mask:
        hidden, visible = key[row], key[~row]
        if band == "low":
            assert hidden.max() <= visible.min()
        else:
            assert hidden.min() >= visible.max()


def test_frequency_mask_either_band_and_conjugate_pairs():
    layout = Layout.grid(8, 8)
    mask = FrequencyMask()(layout, 400, ratio=0.5, generator=gen())
    has_dc = mask[:, 0].double().mean().item()  # the zero frequency is hidden by low-pass rows only
    assert has_dc == pytest.approx(0.5, abs=0.07)
    from unmask.masking.frequency import conjugate_index

    split = (mask != mask[:, conjugate_index(8, 8)]).sum(1)
    assert (split <= 2).all()  # at most one conjugate pair is cut by the exact count
    with pytest.raises(ValueError, match="grid"):
        FrequencyMask()(Layout.seq(8), 2, ratio=0.5)
