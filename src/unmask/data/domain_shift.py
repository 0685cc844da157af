"""A domain shift for unsupervised domain adaptation, made at run time from embedded data: the
labelled source domain is scikit-learn's handwritten digits (8 x 8, enlarged by nearest neighbour,
so blocky with 17 grey levels), the target domain is the typeset characters '0'..'9' of the glyph
set (DejaVu faces, smooth anti-aliased strokes, each scaled to fill the image as the handwritten
digits fill theirs) with a random shift, scale and blur per render. The shift is one of style, not of
size or place: a small source-only ViT that reaches about 94% on held-out handwritten digits reads
about 58% of the held-out typeset ones (chance: 10%; `benchmarks/mfm_uda.py`), which leaves room
for adaptation to show.

Target train and test never share a face: `TEST_FACES` (one face of each DejaVu family) render
the held-out target images, the other nine faces render the unlabelled training images. Target
labels are returned for the held-out figure and for checks only; training never reads them.

    >>> d = digit_domains(size=16, target_train=512, target_test=300)   # doctest: +SKIP
    >>> d.source_train.images.shape, d.target_train.images.shape        # doctest: +SKIP
    (torch.Size([1437, 1, 16, 16]), torch.Size([512, 1, 16, 16]))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import image_sets

DIGIT_CHARACTERS = "0123456789"
TEST_FACES = ("DejaVuSans-Oblique.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Italic.ttf")


@dataclass(frozen=True)
class Domain:
    images: torch.Tensor  # Float[M, 1, S, S] on [0, 1]
    labels: torch.Tensor  # Long[M], 0..9


@dataclass(frozen=True)
class DomainShift:
    source_train: Domain
    source_test: Domain
    target_train: Domain  # labels kept for checks only: training never reads them
    target_test: Domain


@dataclass(frozen=True)
class RenderShift:
    """How far each target render is moved: a shift of up to `shift` of the image side, a scale in
    [1 - scale, 1 + scale], a Gaussian blur with sigma drawn on [0, blur] pixels."""

    shift: float = 0.05
    scale: float = 0.1
    blur: float = 1.0

    def __post_init__(self):
        for name in ("shift", "scale", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.scale >= 1:
            raise ValueError(f"scale must be < 1, got {self.scale}")


def source_digits(split: str, size: int = 16) -> Domain:
    """The handwritten digits of `split` ("train" / "test") at size x size."""
    s = image_sets.load("digits", split, size)
    return Domain(s.images.float() / 255, s.labels.clone())


def typeset_glyphs(faces: tuple[str, ...], size: int = 16, fill: float = 1.0) -> Domain:
    """The clean characters '0'..'9' of each face: Float[len(faces) * 10, 1, S, S]. Each glyph's ink
    is scaled (aspect kept) so that its longer side spans `fill` of the image, as the handwritten
    digits fill their 8 x 8 box."""
    known = image_sets.glyph_fonts()
    for face in faces:
        if face not in known:
            raise ValueError(f"unknown face {face!r}; the faces are {', '.join(known)}")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill}")
    images = [_filled(image_sets.render_glyph(f, ch, 4 * size), size, fill) for f in faces for ch in DIGIT_CHARACTERS]
    labels = torch.arange(len(DIGIT_CHARACTERS)).repeat(len(faces))
    return Domain(torch.stack(images).unsqueeze(1), labels)


def _filled(glyph: np.ndarray, size: int, fill: float) -> torch.Tensor:
    """Uint8[R, R] white-on-black glyph -> Float[size, size] on [0, 1], its ink box scaled to fill."""
    from PIL import Image

    rows, cols = np.nonzero(glyph)
    ink = Image.fromarray(glyph[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    scale = fill * size / max(ink.size)
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(ink.resize((w, h), Image.Resampling.BOX), ((size - w) // 2, (size - h) // 2))
    return torch.from_numpy(np.asarray(canvas).copy()).float() / 255


def render(base: Domain, count: int, shift: RenderShift, generator: torch.Generator | None = None) -> Domain:
    """`count` random renders of the images of `base` (drawn uniformly, with replacement), each moved
    by its own shift, scale and blur."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    pick = torch.randint(base.images.shape[0], (count,), generator=generator)
    return Domain(perturb(base.images[pick], shift, generator), base.labels[pick])


def perturb(images: torch.Tensor, shift: RenderShift, generator: torch.Generator | None = None) -> torch.Tensor:
    """Float[M, 1, S, S] on [0, 1] -> the same images, each with its own random shift, scale and blur."""
    m = images.shape[0]
    u = torch.rand(m, 4, generator=generator)
    zoom = 1 + shift.scale * (2 * u[:, 0] - 1)  # > 1 enlarges the glyph
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = 2 * shift.shift * (2 * u[:, 1:3] - 1)  # in grid units: the side spans [-1, 1]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode="zeros", align_corners=False)
    return gaussian_blur(x, (shift.blur * u[:, 3]).to(x)).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """images: Float[M, 1, S, S], sigma: Float[M] pixels (0 = unchanged) -> Float[M, 1, S, S]."""
    radius = 3
    d = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    # a tiny floor keeps sigma = 0 finite: its kernel is then exactly the centre tap
    k = torch.exp(-d**2 / (2 * sigma.clamp_min(1e-3).unsqueeze(1) ** 2))  # [M, 7]
    k = k / k.sum(1, keepdim=True)
    m = images.shape[0]
    x = images.transpose(0, 1)  # [1, M, S, S]: one group per image
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), k.view(m, 1, 1, -1), groups=m)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), k.view(m, 1, -1, 1), groups=m)
    return x.transpose(0, 1)


def digit_domains(size: int = 16, target_train: int = 1437, target_test: int = 600,
                  shift: RenderShift | None = None, seed: int = 0) -> DomainShift:
    """Source = handwritten digits (their fixed train / test split); target train = `target_train`
    renders of the nine training faces, target test = `target_test` renders of `TEST_FACES`."""
    shift = shift or RenderShift()
    train_faces = tuple(f for f in image_sets.glyph_fonts() if f not in TEST_FACES)
    g = torch.Generator().manual_seed(seed)
    return DomainShift(
        source_train=source_digits("train", size),
        source_test=source_digits("test", size),
        target_train=render(typeset_glyphs(train_faces, size), target_train, shift, g),
        target_test=render(typeset_glyphs(TEST_FACES, size), target_test, shift, g),
    )
