"""An EMCCD as its equivalent Poisson-normal camera (Camera.emccd): its moments, its bound, the CLI and the 3D fit."""

import argparse

import numpy as np
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.camera_check import check_camera
from smlm_diffusers.fisher import crlb
from smlm_diffusers.simulation import Camera

EM = Camera.emccd(pixel_size_nm=100.0, offset=100.0, gain=6.0, read_noise=1.0, excess_noise=2.0)


def test_an_emccd_pixel_has_the_mean_and_twice_the_shot_noise_variance():
    """Monte Carlo of exposed pixels against the EMCCD's moments (Robbins & Hadwen: var = F^2 g^2 lambda + g^2 rn^2)."""
    lam, g, rn = 150.0, 6.0, 1.0
    adu = EM.expose(torch.full((400_000,), lam, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    adu = adu.double().numpy()
    assert np.mean(adu - 100.0) / g == pytest.approx(lam, rel=2e-3)
    assert np.var(adu) == pytest.approx(2.0 * g**2 * lam + g**2 * rn**2, rel=1e-2)
    # what the likelihoods use: the camera's own pixel variance, in its electrons, times its gain squared
    assert float(EM.pixel_variance(lam)) * EM.gain**2 == pytest.approx(2.0 * g**2 * lam + g**2 * rn**2)


def test_an_emccds_bound_is_twice_a_noiseless_gain_cameras():
    """Without read noise the Fisher information of every parameter halves (signal and background scaled alike)."""
    plain = Camera(pixel_size_nm=100.0, read_noise=0.0)
    em = Camera.emccd(pixel_size_nm=100.0, read_noise=0.0, excess_noise=2.0)
    cx, cy = crlb(photons=1500.0, background=30.0, sigma_px=1.2, camera=plain)
    ex, ey = crlb(photons=1500.0, background=30.0, sigma_px=1.2, camera=em)
    np.testing.assert_allclose([ex, ey], [2.0 * cx, 2.0 * cy], rtol=1e-9)
    with pytest.raises(ValueError, match="excess noise factor squared"):
        Camera.emccd(excess_noise=10.0)


def test_the_cli_builds_the_emccd_camera_and_keeps_the_models_qe(capsys):
    args = argparse.Namespace(pixel_size=None, offset=None, gain=6.0, read_noise=1.0, excess_noise=2.0)
    cam = cli.camera_from_args(args, Camera(pixel_size_nm=100.0, qe=0.9))
    assert cam.isclose(Camera.emccd(100.0, 100.0, 6.0, 1.0, qe=0.9, excess_noise=2.0))
    args.excess_noise = None
    assert cli.camera_from_args(args, Camera(pixel_size_nm=100.0, qe=0.9)).qe == pytest.approx(0.9)
    with pytest.raises(SystemExit):
        cli.main(["localize", "--help"])
    assert "--excess-noise F2" in capsys.readouterr().out


def test_the_camera_check_names_the_emccd_when_frames_are_twice_as_noisy():
    frames, _ = sd.simulate(n_frames=8, shape=(64, 64), density=0.2, photons=1500, background=60, camera=EM, seed=1)
    plain = Camera(pixel_size_nm=100.0, offset=100.0, gain=6.0, read_noise=1.0)
    assert check_camera(frames, EM).ok and not check_camera(frames, EM).warnings
    assert any("--excess-noise 2" in w for w in check_camera(frames, plain).warnings)


def test_3d_photons_are_incident_photons_with_an_emccd():
    """The 3D fit works in the camera's counts and reports photons / qe: an EMCCD's photons come back right."""
    from smlm_diffusers.localization import match
    from smlm_diffusers.localization.localize3d import localize_3d
    from smlm_diffusers.optics import AstigmaticPSF, Optics

    psf = AstigmaticPSF(sigma0_x_px=1.2, sigma0_y_px=1.2, focus_x_nm=-250.0, focus_y_nm=250.0, depth_x_nm=400.0,
                        depth_y_nm=400.0, z_range_nm=(-600.0, 600.0))
    frames, gt = sd.simulate(n_frames=6, shape=(48, 48), photons=5000, background=50, seed=2, structure="grid",
                             spacing_px=16, jitter_px=2, camera=EM, psf=psf, z_nm=(-300, 300))
    locs = localize_3d(frames, Optics(EM, psf))
    pairs = match(gt, locs)
    assert len(pairs["gt_index"]) == len(gt)
    assert np.median(locs["photons"].to_numpy()[pairs["pred_index"]]) == pytest.approx(5000, rel=0.05)
    assert np.median(locs["background"]) == pytest.approx(50, rel=0.05)
