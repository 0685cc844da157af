"""A user's own point clouds (the `pointmae-shapes` recipe's `data.source`): a `.npy` array
[N, P, 3] (labels beside it in a second `.npy`, `data.labels`), or a folder (or a glob) of `.npy`
files, each one cloud [P, 3], one class per subfolder.

Each cloud is
1. checked: a file that is not a `.npy` array of numbers, a cloud that is not [P, 3] with P >= 1,
   one holding a value that is not finite, and one whose points all lie at one place (nothing to
   normalise) are counted skips;
2. resampled to `points` points, deterministically: P = points keeps the cloud as it is; P > points
   keeps a random subset of `points` (in the file's order); P < points keeps every point and
   repeats random ones. "Random" is a permutation drawn from a generator seeded by the SHA-1 of the
   cloud's key, so a cloud is resampled the same way whatever else the source holds;
3. normalised as the embedded shapes are (`points.normalise`, Point-MAE's `pc_norm`): minus the
   centroid, divided by the largest distance from it. No jitter: the shapes' noise stands in for a
   scanner's, and real clouds bring their own.

Labels, keys and the held-out split are those of the images (`user_images`): the top-level subfolder
is the class, an array's labels come from `labels`, and an example is held out by the hash of its
key (the path relative to the folder, `#i` for row i of an array).

    clouds = read_points("scans/", points=1024)
    clouds.points     # Float[M, 1024, 3]
    clouds.part("test")  # PointClouds of the held-out clouds
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UnmaskError
from .points import PointClouds, normalise
from .source import DataStats, Skips, expand, unreadable
from .user_images import array_labels, class_of, folder_classes, hash_split, value_classes

SUFFIXES = (".npy",)


class Skip(Exception):
    """One cloud left out, for the reason given (a key of `Skips`)."""


@dataclass(frozen=True)
class UserClouds:
    points: torch.Tensor        # Float[M, points, 3], normalised
    labels: torch.Tensor        # Long[M], index into `classes`; -1 where there is no label
    classes: tuple[str, ...]    # class names in label order; () without labels
    held_out: torch.Tensor      # Bool[M]
    stats: DataStats
    keys: tuple[str, ...]       # what each cloud is called: its path relative to the folder, or FILE#i

    @property
    def labelled(self) -> bool:
        """Whether there is something for labels to tell apart: two classes or more."""
        return len(self.classes) >= 2

    def part(self, split: str) -> PointClouds:
        """The clouds of 'train' (not held out) or 'test' (held out)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rows = self.held_out if split == "test" else ~self.held_out
        return PointClouds(self.points[rows], self.labels[rows])

    def to_dict(self) -> dict:
        """What `RUN/data.json` records: the `DataStats`, the classes with their counts, the split."""
        counts = {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}
        return {**self.stats.to_dict(), "classes": counts, "held_out": int(self.held_out.sum()),
                "points": self.points.shape[1]}


def resample(cloud: np.ndarray, points: int, key: str) -> np.ndarray:
    """[P, 3] -> [points, 3] by the rule of the module docstring."""
    n = len(cloud)
    if n == points:
        return cloud
    seed = int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    if n > points:
        return cloud[np.sort(order[:points])]
    extra = np.resize(order, points - n)  # the permutation again and again
    return np.concatenate([cloud, cloud[extra]])


def checked(cloud: np.ndarray, points: int, key: str) -> np.ndarray:
    """One cloud as read -> float32 [points, 3], resampled and normalised, or `Skip`."""
    if cloud.dtype.kind not in "fiu":
        raise Skip("not numbers")
    if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) < 1:
        raise Skip("not an array of points [P, 3]")
    cloud = cloud.astype(np.float64)
    if not np.isfinite(cloud).all():
        raise Skip("non-finite values")
    if np.ptp(cloud, axis=0).max() == 0:
        raise Skip("all points at one place")
    out = normalise(torch.from_numpy(resample(cloud, points, key)))
    return out.float().numpy()


def read_points(source, *, points: int = 1024, labels: str = "", test_share: float = 0.2) -> UserClouds:
    """The usable clouds of `source` (see the module docstring); none usable is an `UnmaskError`."""
    files = expand(source, SUFFIXES)
    root = Path(str(source)).expanduser()
    if len(files) == 1 and root.is_file():
        return _read_array(files[0], points, labels, test_share)
    if labels:
        raise UnmaskError(f"data.labels={labels} goes with a .npy array of clouds [N, P, 3]; a folder's classes "
                          "are its subfolders")
    root = root if root.is_dir() else None
    skips, clouds, keys, names = Skips(), [], [], []
    for f in files:
        rel = f.relative_to(root) if root is not None else f
        try:
            try:
                cloud = np.load(f, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                raise Skip("not a .npy array") from None
            clouds.append(checked(cloud, points, rel.as_posix()))
        except Skip as why:
            skips.add(f, str(why))
            continue
        keys.append(rel.as_posix())
        names.append(class_of(root, rel))
    if not clouds:
        raise UnmaskError(f"none of the {len(files)} files of {source} is a usable cloud "
                          f"({'; '.join(f'{r}: {n}' for r, n in skips.counts.items())})")
    classes, label_ids = folder_classes(root, keys, names)
    return _made(np.stack(clouds), label_ids, classes, keys, DataStats(str(source), len(files), len(clouds), skips),
                 test_share)


def _read_array(path: Path, points: int, labels: str, test_share: float) -> UserClouds:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise unreadable(path, f"not a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if array.ndim != 3 or array.shape[2] != 3 or not array.shape[1]:
        raise unreadable(path, f"clouds must be an array [N, P, 3], got shape {list(array.shape)}")
    names = array_labels(labels, len(array))
    skips, clouds, keep = Skips(), [], []
    for i, cloud in enumerate(array):
        try:
            clouds.append(checked(cloud, points, f"{path.name}#{i}"))
        except Skip as why:
            skips.add(f"{path}[{i}]", str(why))
            continue
        keep.append(i)
    if not clouds:
        raise unreadable(path, f"none of its {len(array)} clouds is usable")
    classes, label_ids = (), torch.full((len(keep),), -1, dtype=torch.long)
    if names is not None:
        classes, label_ids = value_classes(names[keep])
    keys = [f"{path.name}#{i}" for i in keep]
    return _made(np.stack(clouds), label_ids, classes, keys, DataStats(str(path), 1, len(keep), skips), test_share)


def _made(clouds, labels, classes, keys, stats, test_share) -> UserClouds:
    if len(keys) < 2:
        raise UnmaskError(f"{stats.source} gives {len(keys)} usable cloud; at least 2 are needed (one to train on, "
                          "one held out)")
    return UserClouds(torch.from_numpy(clouds), labels, classes, hash_split(keys, test_share), stats, tuple(keys))
