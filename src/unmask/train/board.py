"""TensorBoard events beside metrics.csv (`train.log=tensorboard`): every logged metric (loss,
learning rate, gradient norm, the objective's own) as a scalar at its step, and after evaluation
the recipe's metrics and figures. Written by rank 0 into `RUN/tensorboard/`.

    unmask train digits --out runs/d train.log=tensorboard
    tensorboard --logdir runs/d/tensorboard

A resumed run purges events past the step it resumes from, so curves never fold back on themselves
(as metrics.csv is truncated to that step). Needs the `tensorboard` extra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnmaskError

FOLDER = "tensorboard"


class Board:
    """A thin owner of one `SummaryWriter`."""

    def __init__(self, run_dir: Path, step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UnmaskError("train.log=tensorboard needs the tensorboard package: "
                              "pip install 'unmask[tensorboard]'") from None
        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=step + 1 if step > 0 else None)

    def scalars(self, row: dict, prefix: str = "train/") -> None:
        """Each number of a metrics row (`step` gives the step) as a scalar."""
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + key, value, step)
        self.writer.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        """A PNG figure of the run (an [H, W, C] uint8 image)."""
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def open_board(log: str, run_dir: Path, step: int) -> Board | None:
    """A `Board` if `log` asks for TensorBoard, else None."""
    return Board(run_dir, step) if log == "tensorboard" else None


def write_results(run_dir: Path, step: int, metrics: dict, figures) -> None:
    """The recipe's evaluation metrics (numbers only) and figures (`(caption, file name)` pairs of
    PNGs in the run folder) at the final step."""
    board = Board(run_dir, 0)
    try:
        board.scalars({"step": step, **metrics}, prefix="eval/")
        for caption, name in figures:
            path = Path(run_dir) / name
            if path.suffix == ".png" and path.is_file():
                board.image(f"figures/{caption}", path, step)
    finally:
        board.close()
