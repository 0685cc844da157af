"""Training: the one Trainer, its checkpoints, and the parallelism applied to it (`distributed.py`)."""

from .checkpoint import find_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import is_main, print0
from .trainer import TrainConfig, Trainer, fit, learning_rate, step_generator

__all__ = ["Trainer", "TrainConfig", "fit", "learning_rate", "step_generator", "save_checkpoint",
           "load_checkpoint", "latest_checkpoint", "find_checkpoint", "is_main", "print0"]
