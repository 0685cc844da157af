"""A user's own images as grey-level grids (the digit recipes' `data.source`): a folder of PNG / JPEG
files read with Pillow (one class per subfolder), a glob of them, one image, or a `.npy` array
[N, H, W] (labels beside it in a second `.npy`, `data.labels`).

Every image goes through the same steps, in this order:
1. mode: 16-bit grey (`I;16`, `I`) is read as 0..65535; every other mode Pillow can turn into RGBA
   (grey, grey + alpha, palette with or without transparency, RGB, CMYK, YCbCr) is turned into it;
   a mode it cannot (such as `La`) is a counted skip. A JPEG is first turned upright by its EXIF tag.
2. grey: the mean of red, green and blue, each on 0..1 (not a luma weighting: a colour counts as
   much as its brightness, whatever its hue).
3. alpha: composited on the background, so that a transparent pixel ends as level 0 (black when
   `invert` is off, white before the inversion when it is on).
4. invert: grey g becomes 1 - g. The embedded digits are bright ink (16) on a dark ground (0); a
   scan of dark ink on light paper needs `data.invert=true`.
5. size: resized to the recipe's grid with Pillow's box filter (each pixel the mean of the area it
   covers; the aspect ratio is not kept). An image already of that size is left as it is.
6. levels: g in [0, 1] becomes round(g * (levels - 1)), halves up: 17 levels 0..16 for the digits.
   A level L stored as round(L * 255 / 16) in an 8-bit PNG reads back as L exactly.

A `.npy` array skips steps 1 to 3: its values are divided by `white` (by default its dtype's: 255 for
uint8, 65535 for uint16, 1 for floats and booleans; other integer types must name it). A row with a
value that is not finite or lies outside 0..white is a counted skip.

Labels: in a folder, an image inside a subfolder has that (top-level) subfolder's name as its class;
an image directly in the folder has none. Classes are numbered in sorted name order. A folder that
holds images both ways is refused. A glob or a single image has no labels.

Held out: an example is held out when the SHA-1 of its key (its path relative to the folder, and
`#i` for row i of an array) falls in the lowest `share` of the hash range (`music.is_held_out`, the
chorales' rule), so the split never depends on which other files exist; if that holds out none (or
all), the example of the lowest (highest) hash moves, so both sides have one. `hash_split` is the
rule every user reader (`user_music`, `user_points`) follows.

    images = read_images("my_digits/", size=(8, 8), levels=17)
    images.images     # Long[M, 64] grey levels 0..16, row-major
    images.labels     # Long[M], index into images.classes; -1 without labels
    images.part("train")  # (images, labels) not held out
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UnmaskError
from .music import is_held_out
from .source import DataStats, Skips, expand, unreadable

SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY = ".npy"
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
WHITE_BY_DTYPE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class Skip(Exception):
    """One example left out, for the reason given (a key of `Skips`)."""


@dataclass(frozen=True)
class UserImages:
    images: torch.Tensor        # Long[M, H * W], grey levels 0..levels-1, row-major
    labels: torch.Tensor        # Long[M], index into `classes`; -1 where there is no label
    classes: tuple[str, ...]    # class names in label order; () without labels
    held_out: torch.Tensor      # Bool[M]
    stats: DataStats
    grid: tuple[int, int]       # (H, W) of every image
    keys: tuple[str, ...]       # what each image is called: its path relative to the folder, or FILE#i

    @property
    def labelled(self) -> bool:
        """Whether there is something for labels to tell apart: two classes or more."""
        return len(self.classes) >= 2

    def part(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of 'train' (not held out) or 'test' (held out)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rows = self.held_out if split == "test" else ~self.held_out
        return self.images[rows], self.labels[rows]

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}

    def to_dict(self) -> dict:
        """What `RUN/data.json` records: the `DataStats`, the classes with their counts, the split."""
        return {**self.stats.to_dict(), "classes": self.class_counts(),
                "held_out": int(self.held_out.sum()), "grid": list(self.grid)}


def hash_split(keys: list[str], share: float) -> torch.Tensor:
    """Bool[M], True = held out: the SHA-1 rule of the module docstring, with at least one example on
    each side when there are two or more."""
    out = torch.tensor([is_held_out(k, share) for k in keys], dtype=torch.bool)
    if len(keys) >= 2 and (out.all() or not out.any()):
        order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
        if out.any():  # all held out: the highest hash goes back to training
            out[order[-1]] = False
        else:  # none held out: the lowest hash is
            out[order[0]] = True
    return out


def quantise(grey: np.ndarray, levels: int) -> np.ndarray:
    """Float grey in [0, 1] -> int64 levels 0..levels-1, nearest with halves up."""
    return np.floor(np.clip(grey, 0.0, 1.0) * (levels - 1) + 0.5).astype(np.int64)


def resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float [h, w] -> float [H, W] with Pillow's box filter; unchanged when already [H, W]."""
    if grey.shape == tuple(size):
        return grey
    from PIL import Image

    height, width = size
    img = Image.fromarray(grey.astype(np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BOX), dtype=np.float64)


def image_grey(path: Path, invert: bool) -> np.ndarray:
    """One image file -> float64 grey [h, w] on 0..1 (steps 1 to 4), or `Skip`."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError:
        raise Skip("larger than Pillow's size limit") from None
    except (OSError, ValueError, SyntaxError, EOFError):  # what Pillow raises for a file it cannot decode
        raise Skip("not an image") from None
    if img.mode in SIXTEEN_BIT:
        grey, alpha = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 65535.0, None
    else:
        try:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        except (ValueError, OSError):
            raise Skip(f"image mode {img.mode} cannot be converted to grey") from None
        grey, alpha = rgba[..., :3].mean(-1), rgba[..., 3]
    if alpha is not None:
        grey = alpha * grey + (1.0 - alpha) * (1.0 if invert else 0.0)
    return 1.0 - grey if invert else grey


def read_images(source, *, size: tuple[int, int] = (8, 8), levels: int = 17, labels: str = "",
                invert: bool = False, white: float = 0.0, test_share: float = 0.2) -> UserImages:
    """The usable images of `source` (see the module docstring); none usable is an `UnmaskError`."""
    files = expand(source, SUFFIXES)
    if len(files) == 1 and files[0].suffix.lower() == ARRAY:
        return _read_array(files[0], size, levels, labels, invert, white, test_share)
    if labels:
        raise UnmaskError(f"data.labels={labels} goes with a .npy array source; a folder's classes are "
                          "its subfolders")
    root = Path(str(source)).expanduser()
    root = root if root.is_dir() else None
    skips, grids, keys, names = Skips(), [], [], []
    for f in files:
        try:
            grey = image_grey(f, invert)
        except Skip as why:
            skips.add(f, str(why))
            continue
        grids.append(quantise(resize(grey, size), levels).reshape(-1))
        rel = f.relative_to(root) if root is not None else f
        keys.append(rel.as_posix())
        names.append(class_of(root, rel))
    if not grids:
        raise UnmaskError(f"none of the {len(files)} files of {source} is a usable image "
                          f"({'; '.join(f'{r}: {n}' for r, n in skips.counts.items())})")
    classes, label_ids = folder_classes(root, keys, names)
    return _made(np.stack(grids), label_ids, classes, keys, DataStats(str(source), len(files), len(grids), skips),
                 size, test_share)


def class_of(root: Path | None, rel: Path) -> str | None:
    """The class of a file at `rel` under the source folder `root`: its top-level subfolder, if any."""
    return rel.parts[0] if root is not None and len(rel.parts) > 1 else None


def folder_classes(root, keys: list[str], names: list[str | None]) -> tuple[tuple[str, ...], torch.Tensor]:
    """(class names sorted, Long[M] index into them, -1 without a class) of the kept files; a folder
    with files both in class subfolders and directly inside is refused."""
    loose = [k for k, n in zip(keys, names, strict=True) if n is None]
    if loose and len(loose) < len(keys):
        raise UnmaskError(f"{root} holds files both in class subfolders and directly inside (e.g. {loose[0]}); "
                          "put every file in a class subfolder, or none")
    classes = tuple(sorted({n for n in names if n is not None}))
    index = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([index.get(n, -1) for n in names], dtype=torch.long)


def value_classes(values: np.ndarray) -> tuple[tuple[str, ...], torch.Tensor]:
    """(class names, Long[M] index into them) of label values: numbers in numeric order, strings in
    sorted order, so integer labels 0..9 keep their numbers."""
    distinct = sorted(set(values.tolist()))
    index = {c: i for i, c in enumerate(distinct)}
    return tuple(str(c) for c in distinct), torch.tensor([index[v] for v in values.tolist()], dtype=torch.long)


def _read_array(path: Path, size, levels, labels, invert, white, test_share) -> UserImages:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise unreadable(path, f"not a .npy array ({str(e).splitlines()[0]})") from None
    if array.ndim != 3 or not min(array.shape[1:]):
        raise unreadable(path, f"images must be an array [N, H, W], got shape {list(array.shape)}")
    if array.dtype.kind not in "fbiu":
        raise unreadable(path, f"images must be numbers, got dtype {array.dtype}")
    white = white or WHITE_BY_DTYPE.get(array.dtype, 1.0 if array.dtype.kind in "fb" else 0.0)
    if not white:
        raise unreadable(path, f"dtype {array.dtype} has no white level; set data.white (16 for grey levels 0..16)")
    names = array_labels(labels, len(array))
    skips, grids, keep = Skips(), [], []
    for i, row in enumerate(array.astype(np.float64)):
        if not np.isfinite(row).all():
            skips.add(f"{path}[{i}]", "non-finite values")
        elif row.min() < 0 or row.max() > white:
            skips.add(f"{path}[{i}]", f"values outside 0..{white:g}")
        else:
            grey = row / white
            grids.append(quantise(resize(1.0 - grey if invert else grey, size), levels).reshape(-1))
            keep.append(i)
    if not grids:
        raise unreadable(path, f"none of its {len(array)} images is usable")
    classes, label_ids = (), torch.full((len(keep),), -1, dtype=torch.long)
    if names is not None:
        classes, label_ids = value_classes(names[keep])
    keys = [f"{path.name}#{i}" for i in keep]
    return _made(np.stack(grids), label_ids, classes, keys, DataStats(str(path), 1, len(keep), skips), size,
                 test_share)


def array_labels(labels: str, n: int) -> np.ndarray | None:
    """The labels of a .npy array of n examples: a 1-D array of n integers or strings, or None."""
    if not labels:
        return None
    path = Path(labels).expanduser()
    try:
        names = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise unreadable(path, "no such file") from None
    except (OSError, ValueError) as e:
        raise unreadable(path, f"not a .npy array ({str(e).splitlines()[0]})") from None
    if names.ndim != 1 or len(names) != n:
        raise unreadable(path, f"labels must be an array [{n}], one per example, got shape {list(names.shape)}")
    if names.dtype.kind not in "iuUb":
        raise unreadable(path, f"labels must be integers or strings, got dtype {names.dtype}")
    return names


def _made(grids, labels, classes, keys, stats, size, test_share) -> UserImages:
    if len(keys) < 2:
        raise UnmaskError(f"{stats.source} gives {len(keys)} usable image; at least 2 are needed (one to train on, "
                          "one held out)")
    return UserImages(torch.from_numpy(grids), labels, classes, hash_split(keys, test_share), stats, tuple(size),
                      tuple(keys))
