"""Photons and background of emitters at known positions, against the simulator's truth."""

import numpy as np
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.localization import photometry
from smlm_diffusers.localization.photometry import estimate_photometry, fit_frame
from smlm_diffusers.optics.gaussian import render_psfs


@pytest.mark.parametrize("solver", ["dense", "sparse"])
def test_noise_free_overlapping_pair_is_split_exactly(solver, monkeypatch):
    """Two emitters 1.2 px apart share their light; the joint fit gives each its own photons."""
    if solver == "sparse":
        monkeypatch.setattr(photometry, "_DENSE_LIMIT", 0)
    x = torch.tensor([[10.3, 11.5, 4.7]], dtype=torch.float64)
    y = torch.tensor([[9.6, 9.9, 15.2]], dtype=torch.float64)
    n = torch.tensor([[1000.0, 3000.0, 500.0]], dtype=torch.float64)
    image = render_psfs(x, y, n, (20, 24), 1.1)[0].numpy() + 12.0
    photons, background, bg_map = fit_frame(image, x[0].numpy(), y[0].numpy(), 1.1)
    np.testing.assert_allclose(photons, [1000.0, 3000.0, 500.0], rtol=2e-3)
    np.testing.assert_allclose(background, 12.0, rtol=2e-3)
    np.testing.assert_allclose(bg_map, 12.0, rtol=5e-3)


@pytest.mark.parametrize("density, photons, background", [(0.5, 2000.0, 20.0), (4.0, 500.0, 50.0)])
def test_simulated_frames_unbiased(density, photons, background):
    camera = sd.Camera(offset=100.0, gain=2.0, read_noise=3.0, qe=0.8)
    frames, gt = sd.simulate(n_frames=3, shape=(48, 48), density=density, photons=photons, background=background,
                             sigma_px=1.0, seed=3, camera=camera)
    est = estimate_photometry(frames, gt, camera, sigma_px=1.0)
    ratio = est["photons"] / gt["photons"]
    assert ratio.median() == pytest.approx(1.0, abs=0.03)
    # the spread of the estimates is of the order of the Poisson noise of the photons, not more
    assert ratio.std() < 4.0 / np.sqrt(photons)
    assert (est["background"] / gt["background"]).mean() == pytest.approx(1.0, abs=0.03)


def test_bad_input():
    with pytest.raises(ValueError, match="H, W"):
        fit_frame(np.zeros(5), [1.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="sigma_px"):
        fit_frame(np.zeros((5, 5)), [1.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="F, H, W"):
        estimate_photometry(np.zeros((5, 5)), None, sd.Camera(), 1.0)
