"""Physics of the simulator: noise statistics, pixel geometry, seeds, densities, KDE targets.

Expected images are recomputed here with scipy.special.erf, independently of
smlm_diffusers.optics.gaussian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

import smlm_diffusers as sd
from smlm_diffusers import KDEScaling, render_kde
from smlm_diffusers.simulation import (
    Emitters,
    FrameSimulator,
    filament_paths,
    render_psfs,
    sample_on_filaments,
)


def erf_image(x_px, y_px, photons, shape, sigma_px):
    """Expected photons of one emitter: the 2D Gaussian integrated over [j, j+1) x [i, i+1)."""
    h, w = shape
    s = math.sqrt(2.0) * sigma_px
    ex = 0.5 * np.diff(erf((np.arange(w + 1) - x_px) / s))
    ey = 0.5 * np.diff(erf((np.arange(h + 1) - y_px) / s))
    return photons * np.outer(ey, ex)


def one_emitter(x_px, y_px, photons, batch=1):
    full = lambda v: torch.full((batch, 1), float(v), dtype=torch.float64)  # noqa: E731
    return Emitters(x_px=full(x_px), y_px=full(y_px), photons=full(photons),
                    mask=torch.ones(batch, 1, dtype=torch.bool))


# ---------------------------------------------------------------------------------------
# Camera noise model (eqs. 3-6)
# ---------------------------------------------------------------------------------------


def test_frame_mean_and_variance_match_poisson_normal_model():
    n_frames, shape, sigma, bg = 20000, (7, 7), 1.0, 15.0
    cam = sd.Camera(pixel_size_nm=100.0, offset=250.0, gain=3.5, read_noise=2.5, qe=0.85)
    x0, y0, photons = 3.3, 3.7, 1500.0
    sim = FrameSimulator(shape=shape, camera=cam, sigma_px=sigma, background=bg)
    batch = sim.render(one_emitter(x0, y0, photons, n_frames), generator=torch.Generator().manual_seed(3))
    electrons = cam.adu_to_photons(batch.frames_adu.double()).numpy()

    expected = erf_image(x0, y0, photons, shape, sigma) + bg  # incident photons
    np.testing.assert_allclose(batch.expected_photons[0].numpy(), expected, rtol=1e-10)
    mean_e = cam.qe * expected
    var_e = cam.qe * expected + cam.read_noise**2
    np.testing.assert_allclose(cam.pixel_variance(expected), var_e)

    # Per-pixel z-scores of the sample mean and variance (variance's standard error is
    # about var * sqrt(2 / n) for these near-Gaussian counts); 49 pixels, 5 sigma.
    z_mean = (electrons.mean(0) - mean_e) / np.sqrt(var_e / n_frames)
    z_var = (electrons.var(0, ddof=1) - var_e) / (var_e * math.sqrt(2.0 / (n_frames - 1)))
    assert np.abs(z_mean).max() < 5, z_mean
    assert np.abs(z_var).max() < 5, z_var
    # Pooled over pixels the checks are much tighter: a wrong gain, offset or read noise
    # by a few percent would show here.
    assert abs(z_mean.mean()) < 5 / math.sqrt(z_mean.size)
    assert abs(z_var.mean()) < 5 / math.sqrt(z_var.size)


def test_camera_adu_round_trip_and_validation():
    cam = sd.Camera(offset=123.0, gain=0.7)
    e = np.array([0.0, 10.0, 1234.5])
    np.testing.assert_allclose(cam.adu_to_photons(cam.photons_to_adu(e)), e)
    np.testing.assert_allclose(cam.photons_to_adu(e), e * 0.7 + 123.0)
    for bad in (dict(gain=0.0), dict(read_noise=-1.0), dict(qe=1.5), dict(pixel_size_nm=0.0)):
        with pytest.raises(ValueError):
            sd.Camera(**bad)


def test_noiseless_camera_only_applies_gain_and_offset():
    cam = sd.Camera(offset=50.0, gain=2.0, read_noise=0.0)
    expected = torch.full((2000, 3, 3), 7.0, dtype=torch.float64)
    adu = cam.expose(expected, generator=torch.Generator().manual_seed(0))
    e = cam.adu_to_photons(adu.double())
    assert torch.equal(e, e.round())  # pure Poisson: integer electrons
    assert float(e.mean()) == pytest.approx(7.0, rel=0.02)


# ---------------------------------------------------------------------------------------
# Pixel geometry (docs/conventions.md: pixel j covers [j, j+1), x is the column)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("i, j", [(3, 5), (0, 0), (6, 2)])
def test_emitter_at_pixel_centre_is_symmetric_about_that_pixel(i, j):
    a, shape = 108.0, (9, 11)
    x_nm, y_nm = (j + 0.5) * a, (i + 0.5) * a
    img = render_psfs(torch.tensor([[x_nm / a]], dtype=torch.float64), torch.tensor([[y_nm / a]], dtype=torch.float64),
                      torch.tensor([[1000.0]], dtype=torch.float64), shape, 1.0)[0].numpy()
    assert np.unravel_index(img.argmax(), shape) == (i, j)
    # Mirror pairs about (i, j) that lie inside the frame carry equal light.
    for di in range(-3, 4):
        for dj in range(-3, 4):
            p, q = (i + di, j + dj), (i - di, j - dj)
            if all(0 <= r < n for r, n in zip(p, shape)) and all(0 <= r < n for r, n in zip(q, shape)):
                assert img[p] == pytest.approx(img[q], rel=1e-12)
    np.testing.assert_allclose(img, erf_image(j + 0.5, i + 0.5, 1000.0, shape, 1.0), rtol=1e-10, atol=1e-12)


def test_emitter_on_pixel_edge_splits_light_between_columns():
    shape, j = (9, 9), 4
    img = render_psfs(torch.tensor([[float(j)]], dtype=torch.float64), torch.tensor([[4.5]], dtype=torch.float64),
                      torch.tensor([[1000.0]], dtype=torch.float64), shape, 1.0)[0].numpy()
    cols = img.sum(0)
    assert cols[j - 1] == pytest.approx(cols[j], rel=1e-12)
    assert cols[j - 1] == cols.max()
    assert cols[j - 1] > 1.5 * cols[j + 1]


def test_simulate_ground_truth_is_where_the_light_lands():
    # One bright emitter per frame (when there is exactly one): the background-subtracted
    # centroid of each frame must sit on the gt position. A half-pixel shift anywhere in
    # simulate (sampler, renderer or table) is 54 nm; we allow 0.05 px.
    a, shape, n_frames = 108.0, (16, 16), 400
    density = 1.0 / (shape[0] * shape[1] * (a / 1000) ** 2)  # one emitter per frame on average
    frames, gt = sd.simulate(n_frames=n_frames, shape=shape, density=density, photons=1e5,
                             background=2.0, sigma_px=1.0, seed=5)
    cam = sd.Camera()
    counts = np.bincount(gt.frame, minlength=n_frames)
    single = gt[counts[gt.frame] == 1]
    x_px, y_px = single.x_nm.to_numpy() / a, single.y_nm.to_numpy() / a
    inner = (x_px > 4) & (x_px < shape[1] - 4) & (y_px > 4) & (y_px < shape[0] - 4)
    single, x_px, y_px = single[inner], x_px[inner], y_px[inner]
    assert len(single) > 30

    img = cam.adu_to_photons(frames[single.frame.to_numpy()].astype(np.float64))
    img = img - single.background.to_numpy()[:, None, None]
    centres = np.arange(shape[0]) + 0.5
    total = img.sum(axis=(1, 2))
    cx = (img.sum(1) * centres).sum(1) / total
    cy = (img.sum(2) * centres).sum(1) / total
    assert np.abs(cx - x_px).max() < 0.05
    assert np.abs(cy - y_px).max() < 0.05
    assert abs(np.mean(cx - x_px)) < 0.01 and abs(np.mean(cy - y_px)) < 0.01
    np.testing.assert_allclose(total, single.photons.to_numpy(), rtol=0.02)


def test_gt_background_and_columns():
    frames, gt = sd.simulate(n_frames=20, shape=(12, 10), density=5.0, background=17.0, seed=1)
    assert frames.dtype == np.float32 and frames.shape == (20, 12, 10)
    assert list(gt.columns[:4]) == ["frame", "x_nm", "y_nm", "photons"]
    np.testing.assert_allclose(gt.background, 17.0)
    assert gt.frame.min() >= 0 and gt.frame.max() < 20


# ---------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["uniform", "filaments", "disc"])
def test_same_seed_same_result_different_seed_different(structure):
    kw = dict(n_frames=8, shape=(16, 16), density=3.0, photons=(500, 3000), background=(5, 30),
              structure=structure)
    f1, g1 = sd.simulate(seed=42, **kw)
    f2, g2 = sd.simulate(seed=42, **kw)
    f3, g3 = sd.simulate(seed=43, **kw)
    np.testing.assert_array_equal(f1, f2)
    assert g1.equals(g2)
    assert not np.array_equal(f1, f3)
    assert not (len(g1) == len(g3) and np.allclose(g1.x_nm, g3.x_nm))


def test_batching_does_not_change_the_number_of_frames():
    frames, gt = sd.simulate(n_frames=5, shape=(8, 8), density=10.0, seed=0, batch_size=2)
    assert frames.shape == (5, 8, 8)
    assert gt.frame.max() <= 4


# ---------------------------------------------------------------------------------------
# Densities, structures and photon ranges
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.5, 2.0])
def test_uniform_density_gives_expected_count(density):
    a, shape, n_frames = 108.0, (32, 32), 400
    _, gt = sd.simulate(n_frames=n_frames, shape=shape, density=density, seed=7)
    mean_count = density * shape[0] * shape[1] * (a / 1000) ** 2
    counts = np.bincount(gt.frame, minlength=n_frames)
    # Poisson counts: the mean over frames has standard error sqrt(mean / n_frames).
    assert abs(counts.mean() - mean_count) < 5 * math.sqrt(mean_count / n_frames)
    assert counts.var(ddof=1) == pytest.approx(mean_count, rel=0.25)  # Poisson: var = mean
    assert gt.x_nm.between(0, shape[1] * a).all() and gt.y_nm.between(0, shape[0] * a).all()


def test_density_range_is_drawn_per_frame():
    a, shape, n_frames = 108.0, (32, 32), 400
    _, gt = sd.simulate(n_frames=n_frames, shape=shape, density=(0.5, 3.5), seed=2)
    area = shape[0] * shape[1] * (a / 1000) ** 2
    counts = np.bincount(gt.frame, minlength=n_frames)
    assert counts.mean() == pytest.approx(2.0 * area, rel=0.05)
    # Mixed Poisson: the spread exceeds a single Poisson of the same mean.
    assert counts.var() > 2 * counts.mean()


def test_disc_structure_stays_in_the_disc_at_the_right_count():
    a, shape, n_frames, density = 108.0, (32, 24), 400, 2.0
    _, gt = sd.simulate(n_frames=n_frames, shape=shape, density=density, structure="disc", seed=4)
    radius = min(shape) / 2
    r = np.hypot(gt.x_nm / a - shape[1] / 2, gt.y_nm / a - shape[0] / 2)
    assert (r <= radius + 1e-6).all()
    mean_count = density * math.pi * (radius * a / 1000) ** 2
    counts = np.bincount(gt.frame, minlength=n_frames)
    assert abs(counts.mean() - mean_count) < 5 * math.sqrt(mean_count / n_frames)
    # Uniform in the disc: the fraction inside half the radius is 1/4.
    assert np.mean(r < radius / 2) == pytest.approx(0.25, abs=0.03)


def test_filament_structure_lies_on_filaments_inside_the_field():
    a, shape, n_frames, density = 108.0, (32, 32), 200, 2.0
    _, gt = sd.simulate(n_frames=n_frames, shape=shape, density=density, structure="filaments", seed=9)
    assert gt.x_nm.between(0, shape[1] * a).all() and gt.y_nm.between(0, shape[0] * a).all()
    # Labels spread a little off the axes and filaments run 2 px past the border, so a
    # few of the density * area draws fall outside and leave the table.
    mean_count = density * shape[0] * shape[1] * (a / 1000) ** 2
    counts = np.bincount(gt.frame, minlength=n_frames)
    assert 0.7 * mean_count < counts.mean() < 1.02 * mean_count

    gen = torch.Generator().manual_seed(0)
    paths = filament_paths(shape, n_filaments=3, generator=gen)
    width_nm = 25.0
    em = sample_on_filaments(50, shape, density, a, paths, width_nm=width_nm, generator=gen)
    pts = torch.stack([em.x_px[em.mask], em.y_px[em.mask]], dim=1)
    verts = torch.cat(paths)  # vertices 0.25 px apart: nearest vertex ~ distance to the curve
    dist_nm = torch.cdist(pts.double(), verts.double()).min(dim=1).values * a
    assert dist_nm.max() < 6 * width_nm + 0.125 * a
    # Lateral Gaussian spread of width_nm: 2D distance to the line has rms width_nm.
    assert float(dist_nm.pow(2).mean().sqrt()) == pytest.approx(width_nm, rel=0.2)


def test_photon_ranges_are_respected():
    _, gt = sd.simulate(n_frames=100, shape=(32, 32), density=3.0, photons=(500, 1500), seed=3)
    assert gt.photons.between(500, 1500).all()
    assert gt.photons.min() < 520 and gt.photons.max() > 1480
    assert gt.photons.mean() == pytest.approx(1000, rel=0.03)
    _, gt = sd.simulate(n_frames=10, shape=(16, 16), density=3.0, photons=2500, seed=3)
    np.testing.assert_allclose(gt.photons, 2500.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sd.simulate(n_frames=0)
    with pytest.raises(ValueError):
        sd.simulate(n_frames=2, structure="spiral")


# ---------------------------------------------------------------------------------------
# KDE targets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_px, y_px", [(5.3, 6.7), (8.01, 7.99), (4.6, 10.2)])
def test_kde_of_one_emitter_has_unit_mass_and_peaks_at_its_upsampled_pixel(x_px, y_px):
    u, shape = 4, (16, 16)
    kde = render_kde(torch.tensor([[x_px]]), torch.tensor([[y_px]]), torch.ones(1, 1), shape, upsampling=u, sigma=1.0)
    assert kde.shape == (1, 1, shape[0] * u, shape[1] * u)
    img = kde[0, 0].double().numpy()
    assert img.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(img.argmax(), img.shape) == (math.floor(y_px * u), math.floor(x_px * u))
    np.testing.assert_allclose(img, erf_image(x_px * u, y_px * u, 1.0, img.shape, 1.0), atol=1e-6)


def test_kde_mass_counts_emitters_and_ignores_padding():
    x = torch.tensor([[3.2, 9.9, 0.0]])
    y = torch.tensor([[4.4, 12.1, 0.0]])
    mask = torch.tensor([[True, True, False]])
    kde = render_kde(x, y, mask, (16, 16))
    assert float(kde.sum()) == pytest.approx(2.0, abs=1e-5)


def test_kde_scaling_round_trip():
    scaling = KDEScaling(sigma=1.0)
    kde = render_kde(torch.tensor([[5.3, 5.6]]), torch.tensor([[6.7, 7.0]]), torch.ones(1, 2), (16, 16))
    torch.testing.assert_close(scaling.from_unit(scaling.to_unit(kde)), kde)
    assert torch.all(scaling.to_unit(torch.zeros(3, 3)) == -1.0)
    assert scaling.to_unit(scaling.peak) == pytest.approx(1.0)
    # An isolated emitter at an upsampled pixel centre reaches about +0.84.
    one = render_kde(torch.tensor([[5.125]]), torch.tensor([[5.125]]), torch.ones(1, 1), (16, 16))
    assert float(scaling.to_unit(one).max()) == pytest.approx(0.84, abs=0.01)
