"""Figures of digit grids (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digit_grid(images: np.ndarray, rows: int, cols: int, path: Path, title: str = "",
               row_labels: list[str] | None = None) -> None:
    """images: [M, S * S] grey levels 0..16 of square S x S images (M <= rows * cols), drawn row by row
    into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = round(images.shape[1] ** 0.5)
    if side * side != images.shape[1]:
        raise ValueError(f"digit_grid draws square images; got {images.shape[1]} pixels per image")
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7 + 0.4))
    axes = np.atleast_2d(axes)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.axis("off")
            continue
        ax.imshow(images[i].reshape(side, side), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        if row_labels and i % cols == 0:
            ax.set_ylabel(row_labels[i // cols], rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
