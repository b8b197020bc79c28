"""PSF estimation recovers the simulator's sigma, background and photons on sparse frames."""

import numpy as np
import pytest

import smlm_diffusers as sd
from smlm_diffusers.psf_estimation import estimate_psf, fit_spots


@pytest.mark.parametrize("sigma_px, background, photons", [(1.0, 20.0, 2000.0), (1.3, 50.0, 1000.0)])
def test_recovers_simulated_psf(sigma_px, background, photons):
    camera = sd.Camera(pixel_size_nm=108.0, offset=100.0, gain=1.0, read_noise=1.6)
    frames, _ = sd.simulate(n_frames=80, shape=(48, 48), density=0.1, photons=photons, background=background,
                            sigma_px=sigma_px, seed=7, camera=camera)
    est = estimate_psf(frames, camera)
    assert est["n_spots"] >= 40
    assert est["sigma_px"] == pytest.approx(sigma_px, rel=0.05)
    assert est["sigma_nm"] == pytest.approx(sigma_px * 108.0, rel=0.05)
    assert est["background"] == pytest.approx(background, rel=0.05)
    assert est["photons"] == pytest.approx(photons, rel=0.10)
    spots = est["spots"]
    assert len(spots) == est["n_spots"] and spots["frame"].between(0, 79).all()
    assert spots["x_px"].between(0, 48).all() and spots["y_px"].between(0, 48).all()


def test_camera_gain_and_offset_are_undone():
    camera = sd.Camera(pixel_size_nm=160.0, offset=400.0, gain=2.5, read_noise=3.0)
    frames, _ = sd.simulate(n_frames=60, shape=(40, 40), density=0.1, photons=1500, background=30, sigma_px=1.2,
                            seed=1, camera=camera)
    est = estimate_psf(frames, camera)
    assert est["sigma_px"] == pytest.approx(1.2, rel=0.05)
    assert est["background"] == pytest.approx(30, rel=0.05)
    assert est["photons"] == pytest.approx(1500, rel=0.1)


def test_estimate_document_data_block_loads_as_a_training_config(tmp_path):
    import yaml

    from smlm_diffusers.psf_report import estimate_document
    from smlm_diffusers.training import SimulationRanges, load_config

    camera = sd.Camera(pixel_size_nm=160.0, offset=400.0, gain=2.5, read_noise=3.0)
    frames, _ = sd.simulate(n_frames=30, shape=(40, 40), density=0.1, photons=1500, background=30, sigma_px=1.2,
                            seed=1, camera=camera)
    doc = estimate_document(estimate_psf(frames, camera), camera, "beads.tif", 30, 30)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(doc["data"]))  # the block a user pastes under data:
    ranges = load_config(SimulationRanges, path)
    assert ranges.camera == camera
    assert ranges.sigma_px == pytest.approx(1.2, rel=0.05)


def test_fit_recovers_noise_free_spot():
    import torch

    from smlm_diffusers.simulation import render_psfs  # the simulator's own PSF model

    x = torch.tensor([[4.3], [5.1]], dtype=torch.float64)
    y = torch.tensor([[4.8], [4.4]], dtype=torch.float64)
    n = torch.tensor([[1000.0], [3000.0]], dtype=torch.float64)
    img = render_psfs(x, y, n, (9, 9), torch.tensor([[1.1], [1.4]], dtype=torch.float64)).numpy() + 10.0
    theta, ok = fit_spots(img, read_noise=0.0, sigma_guess_px=1.0)
    assert ok.all()
    np.testing.assert_allclose(theta[:, 0], [4.3, 5.1], atol=1e-4)
    np.testing.assert_allclose(theta[:, 1], [4.8, 4.4], atol=1e-4)
    np.testing.assert_allclose(theta[:, 4], [1.1, 1.4], rtol=1e-3)
    np.testing.assert_allclose(theta[:, 3], [10, 10], rtol=1e-2)
    np.testing.assert_allclose(theta[:, 2], [1000, 3000], rtol=1e-3)


def test_no_spots_and_bad_input():
    est = estimate_psf(np.full((3, 32, 32), 100.0, np.float32))
    assert est["n_spots"] == 0 and np.isnan(est["sigma_px"]) and est["background_frame_median"] == 0
    with pytest.raises(ValueError, match="NaN"):
        estimate_psf(np.full((2, 16, 16), np.nan))
    with pytest.raises(ValueError, match="too small"):
        estimate_psf(np.zeros((2, 6, 6)))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        estimate_psf(np.zeros((2, 2, 16, 16)))
