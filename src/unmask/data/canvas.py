"""Emoji scenes for segmentation: a few Twemoji objects pasted on a white canvas, each with its exact
visible mask (from the emoji's alpha) and its class name, for mask classification (Mask-Adapter) and
prompt-guided mask proposals (PMP). Made at run time from the emoji of `image_sets` (offline).

A scene of `size x size` holds `objects` emoji (drawn from the range given), each of one class of
`CLASSES`, rendered at a side drawn from `sides` and placed uniformly at random inside the canvas;
later objects are pasted over earlier ones, so an object's mask is its alpha minus what covers it.
An object covered so far that fewer than `min_visible` of its pixels show is drawn again. The
classes of a scene are distinct. Slots beyond a scene's object count hold an empty mask and label -1.

`CLASSES` are 36 everyday emoji; `SEEN` (the first 24) and `UNSEEN` (the last 12) split them for
open-vocabulary checks. Train and test scenes differ by seed only (`split` picks a disjoint stream of
the same generator family): the same classes, new sizes, places and overlaps.

    images: Uint8[M, 3, S, S]   masks: Bool[M, K, S, S]   labels: Long[M, K] (index into `classes`, -1 = none)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

CLASSES = (
    "red apple", "banana", "grapes", "watermelon", "cherries", "strawberry", "carrot", "hot pepper",
    "mushroom", "pizza", "doughnut", "cookie", "sun", "cloud", "snowflake", "fire", "droplet", "star",
    "rocket", "automobile", "bicycle", "house", "soccer ball", "basketball",
    "guitar", "bell", "key", "light bulb", "books", "gem stone", "dog face", "cat face", "fish", "turtle",
    "butterfly", "maple leaf",
)
SEEN, UNSEEN = CLASSES[:24], CLASSES[24:]
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Scenes:
    images: torch.Tensor  # Uint8[M, 3, S, S], 0..255 on white
    masks: torch.Tensor  # Bool[M, K, S, S]: the visible pixels of each object slot
    labels: torch.Tensor  # Long[M, K]: index into `classes`, -1 for an empty slot
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]


@cache
def _sprite(name: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(Uint8[3, side, side] RGB, Bool[side, side] alpha > 127) of a named emoji."""
    from .image_sets import emoji_names, render_emoji

    stems = {v: k for k, v in emoji_names().items()}
    if name not in stems:
        raise ValueError(f"no Twemoji named {name!r}")
    return render_emoji(stems[name], side)


def scenes(split: str = "train", n: int = 1000, *, size: int = 64, objects: tuple[int, int] = (2, 3),
           sides: tuple[int, ...] = (20, 24, 28, 32), classes: tuple[str, ...] = SEEN, min_visible: int = 40,
           seed: int = 0) -> Scenes:
    """`n` scenes of one split; deterministic in (split, n, size, objects, sides, classes, min_visible, seed)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    low, high = objects
    if not 1 <= low <= high <= len(classes):
        raise ValueError(f"objects must be (low, high) with 1 <= low <= high <= {len(classes)} classes, got {objects}")
    if n < 1 or not sides or max(sides) > size or min(sides) < 4:
        raise ValueError(f"need n >= 1 and 4 <= every side <= size {size}; got n={n}, sides={sides}")
    if len(set(classes)) != len(classes):
        raise ValueError("classes must be distinct")
    return _scenes(split, n, size, objects, tuple(sides), tuple(classes), min_visible, seed)


@cache
def _scenes(split, n, size, objects, sides, classes, min_visible, seed) -> Scenes:
    rng = np.random.default_rng([seed, SPLITS.index(split), 0x5CE7E])
    k = objects[1]
    images = np.full((n, 3, size, size), 255, dtype=np.uint8)
    masks = np.zeros((n, k, size, size), dtype=bool)
    labels = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        while True:
            count = int(rng.integers(objects[0], objects[1] + 1))
            picks = rng.choice(len(classes), size=count, replace=False)
            canvas = np.full((3, size, size), 255, dtype=np.uint8)
            owner = np.full((size, size), -1, dtype=np.int64)  # which slot shows at each pixel
            for slot, c in enumerate(picks):
                side = int(rng.choice(sides))
                y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                rgb, alpha = _sprite(classes[c], side)
                region = (slice(y, y + side), slice(x, x + side))
                canvas[:, region[0], region[1]][:, alpha] = rgb[:, alpha]
                owner[region][alpha] = slot
            visible = np.stack([owner == s for s in range(count)])
            if visible.sum(axis=(1, 2)).min() >= min_visible:
                break
        images[i], masks[i, :count], labels[i, :count] = canvas, visible, picks
    return Scenes(torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(labels), classes)
