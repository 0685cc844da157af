"""Recorded multichannel time series from the `.ts` files bundled with aeon, read without importing aeon
(which pulls numba in): the package folder is found by `importlib.util.find_spec`.

- `JapaneseVowels` (Kudo, Toyama & Shimbo, 1999, "Multidimensional curve classification using
  passing-through regions", Pattern Recognition Letters 20): 9 male speakers saying the vowels /ae/,
  12 LPC cepstral coefficients per frame, 7 to 29 frames per utterance; 270 training utterances (30 per
  speaker) and 370 test utterances. Class = the speaker, "1".."9". Real recorded speech.
- `BasicMotions`: a smartwatch's 3-axis accelerometer and 3-axis gyroscope (6 channels) at 10 Hz,
  100 steps, 4 activities (Standing, Running, Walking, Badminton); 40 training and 40 test series.

Splits are the files' own (`NAME_TRAIN.ts`, `NAME_TEST.ts`). A `.ts` file has header lines starting with
`@` (`@classLabel true A B ...` names the classes in order) or `#` (comments), then one series per
line: `ch1:ch2:...:label`, each channel comma-separated values. Series shorter than the longest in the
split are zero-padded at the end; `lengths` says how many steps are real.

    >>> s = load_ts("JapaneseVowels", "train")    # doctest: +SKIP
    >>> s.x.shape, s.classes                       # doctest: +SKIP
    (torch.Size([270, 12, 26]), ('1', '2', '3', '4', '5', '6', '7', '8', '9'))
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import UnmaskError

NAMES = ("JapaneseVowels", "BasicMotions")
SPLITS = ("train", "test")


class Series(NamedTuple):
    x: torch.Tensor  # Float32[M, C, T], zero-padded after each series' length
    lengths: torch.Tensor  # Long[M] real steps
    labels: torch.Tensor  # Long[M] index into `classes`
    classes: tuple[str, ...]  # class names in the file's `@classLabel` order


def data_folder() -> Path:
    """aeon's bundled `datasets/data` folder, or an UnmaskError naming the extra."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise UnmaskError("aeon's time series need aeon: pip install 'unmask[audio]' "
                          "(or 'unmask[motion]')")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def parse_ts(text: str) -> Series:
    """The text of a `.ts` file with class labels -> Series (format in the module docstring)."""
    classes: tuple[str, ...] = ()
    rows, labels = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            fields = line.split()
            if fields[0].lower() == "@classlabel" and len(fields) > 2 and fields[1].lower() == "true":
                classes = tuple(fields[2:])
            continue
        *channels, label = line.split(":")
        rows.append([[float(v) for v in c.split(",")] for c in channels])
        labels.append(label.strip())
    if not rows:
        raise UnmaskError("the .ts file holds no series")
    if not classes:
        raise UnmaskError("the .ts file has no '@classLabel true ...' line naming its classes")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise UnmaskError(f"labels {unknown} are not among the declared classes {list(classes)}")
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise UnmaskError("the .ts file's series have different numbers of channels")
    lengths = torch.tensor([max(len(c) for c in r) for r in rows], dtype=torch.long)
    x = torch.zeros(len(rows), width, int(lengths.max()), dtype=torch.float32)
    for i, r in enumerate(rows):
        for c, values in enumerate(r):
            x[i, c, :len(values)] = torch.tensor(values, dtype=torch.float32)
    index = {name: k for k, name in enumerate(classes)}
    return Series(x, lengths, torch.tensor([index[v] for v in labels], dtype=torch.long), classes)


@lru_cache(maxsize=8)
def load_ts(name: str, split: str) -> Series:
    """One of `NAMES`, split "train" or "test" -> Series."""
    if name not in NAMES:
        raise UnmaskError(f"time series name must be one of {', '.join(NAMES)}, got {name!r}")
    if split not in SPLITS:
        raise UnmaskError(f"time series split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = data_folder() / name / f"{name}_{split.upper()}.ts"
    if not path.is_file():
        raise UnmaskError(f"aeon has no file {path}; reinstall it: pip install 'unmask[audio]'")
    return parse_ts(path.read_text(encoding="utf-8"))
