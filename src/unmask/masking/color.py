"""ColorMAE masks (Hinojosa et al., ECCV 2024, P26): hide patches by thresholding filtered random
noise, so that data-independent masks get a chosen spatial frequency content.

White noise on the segment's shape (any rank: a sequence, a grid, a video, streams) is filtered in
the Fourier domain with Gaussian transfer functions `G_s(f) = exp(-2 pi^2 s^2 |f|^2)` (the Fourier
pair of a Gaussian blur of width s tokens), then the tokens with the *lowest* filtered noise are
hidden, exactly round(ratio * L) of them (ColorMAE keeps the highest values visible):

| colour | filter | masks look like |
|---|---|---|
| red    | low-pass  `G_large`                  | large blobs |
| blue   | high-pass `1 - G_small`              | fine, evenly spread dots |
| green  | band-pass `G_small - G_large`        | mid-sized blobs, evenly spread (ColorMAE's best) |
| purple | band-stop `1 - G_small + G_large`    | blobs plus fine dots |

The noise is drawn on a periodic canvas twice the segment's size per axis and cropped, so the masks
do not wrap around the edges. ColorMAE loads pre-generated pattern stacks; here the pattern is drawn
per row from the generator, which gives the same kind of masks without files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Masker

COLOURS = ("red", "blue", "green", "purple")


def filtered_noise(shape: tuple[int, ...], batch: int, colour: str, sigma_small: float, sigma_large: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Float64[B, prod(shape)]: white noise of the given colour, row-major over `shape`."""
    canvas = tuple(2 * s for s in shape)
    dims = tuple(range(1, len(shape) + 1))
    white = torch.randn((batch, *canvas), generator=generator, dtype=torch.float64)
    f2 = torch.zeros(canvas, dtype=torch.float64)
    for axis, n in enumerate(canvas):
        f = torch.fft.fftfreq(n, dtype=torch.float64) ** 2  # cycles per token, squared
        f2 = f2 + f.view(*[n if a == axis else 1 for a in range(len(canvas))])

    def gauss(s):
        return torch.exp(-2 * math.pi**2 * s**2 * f2)

    transfer = {
        "red": gauss(sigma_large),
        "blue": 1 - gauss(sigma_small),
        "green": gauss(sigma_small) - gauss(sigma_large),
        "purple": 1 - gauss(sigma_small) + gauss(sigma_large),
    }[colour]
    out = torch.fft.ifftn(torch.fft.fftn(white, dim=dims) * transfer, dim=dims).real
    crop = out[(slice(None), *[slice(0, s) for s in shape])]
    return crop.reshape(batch, -1)


@dataclass(frozen=True)
class ColorMask(Masker):
    """Hide the round(ratio * L) tokens whose coloured noise is lowest. Widths are in tokens."""

    colour: str = "green"
    sigma_small: float = 0.5
    sigma_large: float = 1.5

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"ColorMask colour must be one of {COLOURS}, got {self.colour!r}")
        if not 0 < self.sigma_small < self.sigma_large:
            raise ValueError(f"ColorMask needs 0 < sigma_small < sigma_large, got {self.sigma_small}, "
                             f"{self.sigma_large}")

    def scores(self, segment, counts, generator, **context):
        noise = filtered_noise(segment.shape, counts.shape[0], self.colour, self.sigma_small, self.sigma_large,
                               generator)
        return -noise  # the lowest noise is hidden first
