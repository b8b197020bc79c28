"""DDPM mode's images: no one-camera-pixel grid, no negative density (the denoiser's per-phase bias).

The camera-layout denoiser predicts the 16 KDE pixels of a camera pixel as 16 channels, each with its own
small background bias; before :func:`~smlm_diffusers.pipelines.sampling.remove_phase_bias` the shipped model's
mean (2 samples x 2 steps, these frames) had background phase means spread over 2.0e-3 and dipped to -4e-3.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.pipelines import sampling

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"
UPSAMPLING = 4


@pytest.fixture(scope="module")
def pipe():
    return sd.SMLMDiffusionPipeline.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def simulated():
    return sd.simulate(n_frames=3, shape=(32, 32), density=1.0, photons=2000, background=20, sigma_px=1.0, seed=0)


def _run(pipe, frames):
    return pipe(frames, num_samples=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                sample_everywhere=True)


def _background_phase_means(kde: np.ndarray, gt: pd.DataFrame, pixel_size_nm: float) -> np.ndarray:
    """Mean of ``kde`` [F, uH, uW] over each of the 16 sub-pixel phases, on pixels more than 3 camera pixels
    from every true emitter of their frame."""
    u, px = UPSAMPLING, pixel_size_nm / UPSAMPLING
    rows, cols = np.mgrid[0:kde.shape[1], 0:kde.shape[2]]
    background = np.ones(kde.shape, bool)
    for f, x, y in zip(gt.frame, gt.x_nm, gt.y_nm):
        background[f] &= np.hypot(cols + 0.5 - x / px, rows + 0.5 - y / px) > 3 * u
    return np.array([kde[:, i::u, j::u][background[:, i::u, j::u]].mean() for i in range(u) for j in range(u)])


def test_ddpm_mean_has_no_camera_pixel_grid_and_no_negative_density(pipe, simulated):
    frames, gt = simulated
    out = _run(pipe, frames)
    assert out.kde_mean.min() >= 0.0 and out.samples.min() >= 0.0
    # the images describe the same draws: mean and variance (ddof 1) of the returned samples
    np.testing.assert_allclose(out.kde_mean, out.samples.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(out.kde_var, out.samples.var(axis=1, ddof=1), atol=1e-8)
    phases = _background_phase_means(out.kde_mean, gt, pipe.camera.pixel_size_nm)
    # 1.0e-4 after the fix, 2.0e-3 before; a molecule's peak is about 0.16
    assert phases.max() - phases.min() < 4e-4, np.round(phases.reshape(4, 4), 5)


def test_bias_removal_leaves_the_table_unchanged(pipe, simulated, monkeypatch):
    frames, _ = simulated
    fixed = _run(pipe, frames).localizations
    monkeypatch.setattr(sampling, "remove_phase_bias", lambda residuals, covered, factor: residuals)
    pd.testing.assert_frame_equal(fixed, _run(pipe, frames).localizations)


def test_remove_phase_bias_takes_out_each_phase_median_where_drawn():
    gen = torch.Generator().manual_seed(0)
    n_frames, k, f, h, w = 2, 3, 4, 8, 10
    offsets = torch.randn(n_frames, k, 1, f, 1, f, generator=gen) * 1e-2
    noise = torch.randn(n_frames, k, h, f, w, f, generator=gen) * 1e-3
    residuals = (offsets + noise).reshape(n_frames, k, h * f, w * f)
    residuals[:, :, 5, 7] += 1.5  # a molecule: sparse, so it does not move the medians
    covered = torch.zeros(n_frames, h * f, w * f, dtype=torch.bool)
    covered[0, : 4 * f] = True  # frame 0 drawn on its top half (whole camera pixels), frame 1 nowhere
    residuals[1] = 0.0  # not drawn: no residual
    out = sampling.remove_phase_bias(residuals, covered, f)
    phases = out[0, :, : 4 * f].reshape(k, 4, f, w, f)
    medians = phases.permute(0, 2, 4, 1, 3).reshape(k, f, f, -1).median(dim=-1).values
    assert medians.abs().max() < 1e-3 < offsets.abs().max()
    torch.testing.assert_close(out[0, :, 4 * f:], residuals[0, :, 4 * f:])  # undrawn pixels untouched
    assert out[1].abs().max() == 0
    assert out[0, :, 5, 7].min() > 1.4
    # one offset per sample for a UNet at the KDE resolution (factor 1)
    flat = sampling.remove_phase_bias(residuals + 0.1, torch.ones_like(covered), 1)
    assert flat.flatten(2).median(dim=-1).values.abs().max() < 1e-6
