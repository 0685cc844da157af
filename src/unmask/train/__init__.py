"""Training: the one Trainer and its checkpoints."""

from .checkpoint import find_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from .trainer import TrainConfig, Trainer, learning_rate, step_generator

__all__ = ["Trainer", "TrainConfig", "learning_rate", "step_generator", "save_checkpoint",
           "load_checkpoint", "latest_checkpoint", "find_checkpoint"]
