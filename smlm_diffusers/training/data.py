"""On-the-fly training data: simulated frames and their true KDEs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..kde import KDEScaling, render_kde
from ..simulation import PAPER_CAMERA, Camera, FrameSimulator, sample_uniform, simulate


@dataclass
class SimulationRanges:
    """What the training simulator draws from (DESIGN.md training ranges by default).

    Ranges are ``[low, high]`` drawn uniformly: density per frame (emitters per square
    micrometre), photons per emitter, background per frame (photons per pixel).
    """

    patch_size: int = 32
    margin_px: float = 3.0
    density: tuple[float, float] = (0.05, 5.0)
    photons: tuple[float, float] = (200.0, 6000.0)
    background: tuple[float, float] = (5.0, 60.0)
    background_variation: float = 0.3
    sigma_px: float | tuple[float, float] = 1.0
    pixel_size_nm: float = PAPER_CAMERA.pixel_size_nm
    camera_offset: float = PAPER_CAMERA.offset
    camera_gain: float = PAPER_CAMERA.gain
    read_noise: float = PAPER_CAMERA.read_noise
    upsampling: int = 4
    kde_sigma: float = 1.0

    @property
    def camera(self) -> Camera:
        return Camera(self.pixel_size_nm, self.camera_offset, self.camera_gain, self.read_noise)


@dataclass
class TrainingBatch:
    frames_adu: torch.Tensor  # [B, H, W]
    kde_unit: torch.Tensor  # [B, 1, uH, uW] in the networks' [-1, 1] scale


def make_training_batch(
    ranges: SimulationRanges, batch_size: int, generator: torch.Generator, device="cpu"
) -> TrainingBatch:
    """Simulate a batch of square patches and render their true KDEs.

    Emitters are also drawn ``margin_px`` outside the patch so that the network learns
    what light entering from outside looks like; their KDE mass outside the patch is cut.
    """
    shape = (ranges.patch_size, ranges.patch_size)
    sim = FrameSimulator(shape, ranges.camera, _tuple(ranges.sigma_px), _tuple(ranges.background),
                         ranges.background_variation)
    em = sample_uniform(batch_size, shape, _tuple(ranges.density), ranges.pixel_size_nm,
                        _tuple(ranges.photons), ranges.margin_px, generator, device)
    batch = sim.render(em, generator=generator)
    kde = render_kde(em.x_px, em.y_px, em.mask, shape, ranges.upsampling, ranges.kde_sigma)
    return TrainingBatch(batch.frames_adu, KDEScaling(ranges.kde_sigma).to_unit(kde))


def make_validation_set(
    ranges: SimulationRanges,
    densities=(1.0, 2.0, 4.0),
    n_frames: int = 16,
    shape=(64, 64),
    photons: float = 2000.0,
    background: float = 20.0,
    seed: int = 1234,
) -> list[tuple[float, np.ndarray, pd.DataFrame]]:
    """Fixed-seed validation frames ``(density, frames_adu, gt)`` at the benchmark's optics."""
    sigma = ranges.sigma_px if np.isscalar(ranges.sigma_px) else float(np.mean(ranges.sigma_px))
    out = []
    for k, d in enumerate(densities):
        frames, gt = simulate(n_frames=n_frames, shape=shape, density=d, photons=photons, background=background,
                              sigma_px=sigma, seed=seed + k, camera=ranges.camera, margin_px=ranges.margin_px)
        out.append((d, frames, gt))
    return out


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v
