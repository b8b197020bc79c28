"""Simulation of SMLM frames by the paper's image-formation model (eqs. 1-6)."""

from ..optics.gaussian import render_psfs  # the simulator's Gaussian (re-exported; it lives in optics)
from .camera import PAPER_CAMERA, Camera, CameraMaps
from .emitters import Emitters, filament_paths, sample_disc, sample_grid, sample_on_filaments, sample_uniform
from .movies import Blinking, drift_trace, simulate_movie
from .simulator import FrameSimulator, SimulatedBatch, emitters_to_dataframe, simulate, smooth_background

__all__ = [
    "Blinking",
    "Camera",
    "CameraMaps",
    "PAPER_CAMERA",
    "Emitters",
    "FrameSimulator",
    "SimulatedBatch",
    "drift_trace",
    "emitters_to_dataframe",
    "filament_paths",
    "render_psfs",
    "sample_disc",
    "sample_grid",
    "sample_on_filaments",
    "sample_uniform",
    "simulate",
    "simulate_movie",
    "smooth_background",
]
