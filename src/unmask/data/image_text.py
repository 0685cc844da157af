"""Image-text pairs, offline: each image with a short caption that names what it shows, for masked
modeling across an image and its text (UNITER, M3AE).

- `glyphs` (grey, 1 x 32 x 32): the glyphs of `image_sets` with their Unicode names, lower-cased
  ("greek small letter alpha"); 12 faces per character, so one caption has 12 images.
- `emoji` (RGB, 3 x 32 x 32): the Twemoji images with the `emoji` package's English names ("grinning
  face"). That package gives no categories (`EMOJI_DATA` holds the name, status and version only), so
  a caption is the name alone.
- `moving_digits` (grey, `frames` x 32 x 32): clips of `data/video.py` with the frames as channels
  and a generated caption "a 3 moving up left" (the digit, then the direction of its first step,
  y downwards: E is "right", NE "up right").

Held out: the image sets' own rules (`image_sets.load`: a glyph's face by the hash of its key, every
character on both sides; an emoji by the hash of its name, so test emoji and most of their words
are unseen), and for moving digits the clips of the held-out digits (`digits.load("test")`).

Text: `Vocab.build(captions)` is a word-level vocabulary of the training captions, sorted for a
stable order: id 0 is `[pad]`, id 1 `[unk]` (a test word never seen in training), then the words;
`mask_id = len(words)` (the project's rule: V data tokens, the mask token is id V). `encode` pads or
cuts every caption to `length` words and returns Long[M, T] tokens and Long[M] lengths.

    >>> train = load("glyphs", "train")                    # doctest: +SKIP
    >>> vocab = Vocab.build(train.captions)                # doctest: +SKIP
    >>> tokens, lengths = vocab.encode(train.captions, 6)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from . import image_sets

NAMES = ("glyphs", "emoji", "moving_digits")
SPLITS = ("train", "test")
PAD, UNK = "[pad]", "[unk]"
# words for video.DIRECTIONS (E, NE, N, NW, W, SW, S, SE), y downwards
DIRECTION_WORDS = ("right", "up right", "up", "up left", "left", "down left", "down", "down right")


@dataclass(frozen=True)
class ImageText:
    images: torch.Tensor  # Uint8[M, C, S, S], 0..255
    captions: tuple[str, ...]  # one caption per image, lower case, words split by single spaces
    labels: torch.Tensor  # Long[M]: index into `classes` (glyph character, emoji, digit x direction)
    classes: tuple[str, ...]
    keys: tuple[str, ...]  # a stable id per image (the image set's key; "clip:SPLIT:i" for clips)

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]  # words[0] = PAD, words[1] = UNK

    @staticmethod
    def build(captions) -> Vocab:
        """The sorted word set of `captions` after PAD and UNK."""
        seen = sorted({w for c in captions for w in c.split()} - {PAD, UNK})
        return Vocab((PAD, UNK, *seen))

    @property
    def size(self) -> int:
        """V, the number of data tokens (PAD and UNK included)."""
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def mask_id(self) -> int:
        return len(self.words)

    def encode(self, captions, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Long[M, length] ids padded with pad_id, Long[M] words kept per caption, at most length)."""
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        index = {w: i for i, w in enumerate(self.words)}
        tokens = torch.full((len(captions), length), self.pad_id, dtype=torch.long)
        lengths = torch.zeros(len(captions), dtype=torch.long)
        for i, c in enumerate(captions):
            ids = [index.get(w, 1) for w in c.split()][:length]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            lengths[i] = len(ids)
        return tokens, lengths

    def decode(self, ids) -> str:
        """Ids (any iterable of ints) -> the words, pads left out."""
        return " ".join(self.words[int(i)] for i in ids if int(i) != self.pad_id)


def caption_of_clip(digit: int, direction: int) -> str:
    return f"a {digit} moving {DIRECTION_WORDS[direction]}"


def _from_image_set(name: str, split: str) -> ImageText:
    s = image_sets.load(name, split)
    captions = tuple(s.classes[i].lower() for i in s.labels.tolist())
    return ImageText(s.images, captions, s.labels, tuple(c.lower() for c in s.classes), s.keys)


def _clips(split: str, frames: int, seed: int) -> ImageText:
    from .video import moving_digits

    clips = moving_digits(split, frames=frames, seed=seed + (split == "test"))
    images = (clips.videos[:, 0] * 255).round().to(torch.uint8)  # [M, T, 32, 32]: frames as channels
    digit, direction = clips.digit[:, 0], clips.direction[:, 0]
    captions = tuple(caption_of_clip(d, r) for d, r in zip(digit.tolist(), direction.tolist(), strict=True))
    classes = tuple(caption_of_clip(d, r) for d in range(10) for r in range(len(DIRECTION_WORDS)))
    keys = tuple(f"clip:{split}:{i}" for i in range(len(captions)))
    return ImageText(images, captions, digit * len(DIRECTION_WORDS) + direction, classes, keys)


@cache
def _build(name: str, split: str, frames: int, seed: int) -> ImageText:
    if name == "moving_digits":
        return _clips(split, frames, seed)
    return _from_image_set(name, split)


def load(name: str, split: str = "train", *, frames: int = 4, seed: int = 0) -> ImageText:
    """One split of a named set (`NAMES`); `frames` and `seed` shape the moving digits only."""
    if name not in NAMES:
        raise ValueError(f"unknown image-text set {name!r}; the sets are {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if frames < 2:
        raise ValueError(f"moving digits need frames >= 2, got {frames}")
    return _build(name, split, frames, seed)
