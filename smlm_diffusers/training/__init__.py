"""Shared pieces of the training scripts in ``train/``: configs, on-the-fly data, the one loop, logging."""

from .config import load_config
from .data import SimulationRanges, TrainingBatch, make_training_batch, make_validation_set
from .loop import train_loop
from .utils import CSVLogger, finish_step, latest_checkpoint, plot_log, resume_from_checkpoint, save_checkpoint, seeded_generator

__all__ = [
    "CSVLogger",
    "finish_step",
    "SimulationRanges",
    "TrainingBatch",
    "latest_checkpoint",
    "load_config",
    "make_training_batch",
    "make_validation_set",
    "plot_log",
    "resume_from_checkpoint",
    "save_checkpoint",
    "seeded_generator",
    "train_loop",
]
