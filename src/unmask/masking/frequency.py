"""Frequency masks (Masked Frequency Modeling, Xie et al., ICLR 2023, P43): hide a band of the
image's 2-D Fourier spectrum instead of patches, and let the model restore the missing frequencies.

The tokens are the frequencies of an `h x w` grid in `torch.fft.fft2` order (row-major, not
shifted): token (i, j) is the frequency (fftfreq(h)[i], fftfreq(w)[j]). MFM hides one disc of radius
r around zero (low-pass hidden: `band="low"`) or everything outside it (`band="high"`), with
probability 0.5 each (`band="either"`). Here the count is exact, round(ratio * L): the hidden set is
the `count` frequencies of lowest (or highest) radius, so every hidden frequency is nearer to (or
farther from) zero than every visible one. Ties on the cut ring are broken by noise shared by each
frequency and its conjugate (-i, -j), so conjugate pairs are taken together and at most one pair is
split by the exact count; the corrupted image is the real part of the inverse transform, as in MFM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, uniform

BANDS = ("low", "high", "either")


def ring(h: int, w: int) -> torch.Tensor:
    """Long[h * w]: |f|^2 h^2 w^2 of each frequency of an h x w grid, in fft2 order: an integer that
    orders the frequencies by radius, with exact ties on a ring."""
    ky = torch.fft.fftfreq(h, d=1 / h).round().long()  # integer frequencies 0, 1, ..., -1
    kx = torch.fft.fftfreq(w, d=1 / w).round().long()
    return ((ky[:, None] * w) ** 2 + (kx[None, :] * h) ** 2).flatten()


def conjugate_index(h: int, w: int) -> torch.Tensor:
    """Long[h * w]: the flat index of (-i mod h, -j mod w) for each (i, j)."""
    i = (-torch.arange(h)) % h
    j = (-torch.arange(w)) % w
    return (i[:, None] * w + j[None, :]).flatten()


@dataclass(frozen=True)
class FrequencyMask(Masker):
    band: str = "either"

    def __post_init__(self):
        if self.band not in BANDS:
            raise ValueError(f"FrequencyMask band must be one of {BANDS}, got {self.band!r}")

    def scores(self, segment, counts, generator, **context):
        if segment.kind != "grid":
            raise ValueError(f"FrequencyMask needs a grid segment, {segment.name!r} is {segment.kind}")
        h, w = segment.shape
        b = counts.shape[0]
        key = ring(h, w).double() * 4.0  # rings lie >= 4 apart, more than the tie noise below
        noise = uniform((b, h * w), generator)
        noise = noise + noise[:, conjugate_index(h, w)]  # in [0, 2), equal for conjugate pairs
        if self.band == "either":
            high = uniform((b, 1), generator) < 0.5
        else:
            high = torch.full((b, 1), self.band == "high")
        return torch.where(high, key, -key) + noise
