"""Fisher information and CRLB (smlm_diffusers.fisher) against independent references.

References used here do not share code with the module: the expected image comes from a
2D Gauss-Legendre quadrature of the Gaussian PSF over each pixel, derivatives from finite
differences, the asymptotic limit from Thompson/Mortensen, and the attainability of the
bound from a Monte Carlo maximum-likelihood fit of simulated emitters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

import smlm_diffusers as sd
from smlm_diffusers.fisher import default_roi_size
from smlm_diffusers.simulation import render_psfs

FULL = ("x", "y", "photons", "background")
XY = ("x", "y")


# ---------------------------------------------------------------------------------------
# Independent reference: expected image by 2D quadrature, Fisher matrix by finite differences
# ---------------------------------------------------------------------------------------


def quadrature_image(theta, sigma, roi, qe, read_noise, order=24):
    """mu'_k = qe * (N * integral of the 2D Gaussian over pixel k + b) + read_noise^2.

    theta = (x, y, N, b); the integral uses a Gauss-Legendre rule of ``order`` nodes per
    axis inside every pixel, on the non-separated 2D density.
    """
    x0, y0, n, b = theta
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes, weights = 0.5 * (nodes + 1.0), 0.5 * weights  # rule on [0, 1]
    u = np.arange(roi)[:, None] + nodes[None, :]  # [R, order] positions inside pixels
    # [rows i, node v, cols j, node u]
    dx = u[None, None, :, :] - x0
    dy = u[:, :, None, None] - y0
    dens = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    frac = np.einsum("ivju,v,u->ij", dens, weights, weights)
    return qe * (n * frac + b) + read_noise**2


def finite_difference_fisher(theta, sigma, roi, qe, read_noise, params):
    """Eq. 14 with central-difference derivatives of :func:`quadrature_image`."""
    index = {"x": 0, "y": 1, "photons": 2, "background": 3}
    steps = {"x": 1e-4, "y": 1e-4, "photons": 1e-2, "background": 1e-3}
    mu = quadrature_image(theta, sigma, roi, qe, read_noise)
    grads = []
    for p in params:
        hi, lo = np.array(theta, float), np.array(theta, float)
        hi[index[p]] += steps[p]
        lo[index[p]] -= steps[p]
        d = quadrature_image(hi, sigma, roi, qe, read_noise) - quadrature_image(lo, sigma, roi, qe, read_noise)
        grads.append((d / (2 * steps[p])).ravel())
    g = np.stack(grads)
    return (g / mu.ravel()) @ g.T


def assert_fisher_close(actual, expected, rtol):
    """Entry-wise relative check, cross terms scaled by sqrt(I_ii I_jj)."""
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    np.testing.assert_array_less(np.abs(actual - expected) / scale, rtol)


def test_quadrature_reference_matches_erf_formula():
    # Guards the reference itself: the quadrature equals the closed-form erf integral.
    sigma, roi, x0, y0 = 1.3, 11, 5.2, 6.1
    edges = np.arange(roi + 1)
    ex = 0.5 * np.diff(erf((edges - x0) / (math.sqrt(2) * sigma)))
    ey = 0.5 * np.diff(erf((edges - y0) / (math.sqrt(2) * sigma)))
    img = quadrature_image((x0, y0, 1.0, 0.0), sigma, roi, qe=1.0, read_noise=0.0)
    np.testing.assert_allclose(img, np.outer(ey, ex), rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize(
    "theta, sigma, roi, qe, read_noise",
    [
        ((4.5, 4.5, 2000.0, 20.0), 1.0, None, 1.0, 1.6),  # the paper's camera, ROI centre
        ((5.2, 6.1, 1500.0, 35.0), 1.3, 11, 0.8, 2.0),  # off-centre: all cross terms non-zero
        ((2.7, 3.9, 400.0, 5.0), 0.8, 7, 0.9, 0.0),  # near the ROI edge, no read noise
    ],
)
@pytest.mark.parametrize("params", [FULL, XY, ("background", "x", "photons", "y")])
def test_fisher_matches_finite_differences(theta, sigma, roi, qe, read_noise, params):
    roi_eff = default_roi_size(sigma) if roi is None else roi
    expected = finite_difference_fisher(theta, sigma, roi_eff, qe, read_noise, params)
    actual = sd.fisher_information(
        theta[2], theta[3], sigma_px=sigma, x_px=theta[0], y_px=theta[1], roi_size=roi,
        read_noise=read_noise, qe=qe, params=params,
    )
    assert actual.shape == (len(params), len(params))
    assert_fisher_close(actual, expected, rtol=1e-5)


def test_default_roi_and_position():
    assert default_roi_size(1.0) == 9
    assert default_roi_size(0.5) == 7
    assert default_roi_size(2.2) == 19
    # Default position is the ROI centre, so the information in x and y is equal.
    info = sd.fisher_information(2000, 20)
    np.testing.assert_allclose(info[0, 0], info[1, 1], rtol=1e-12)
    np.testing.assert_allclose(info, sd.fisher_information(2000, 20, x_px=4.5, y_px=4.5, roi_size=9))


def test_vectorized_over_broadcast_shapes():
    photons = np.array([[500.0], [2000.0], [6000.0]])  # [3, 1]
    background = np.array([5.0, 60.0])  # [2]
    x = np.array([[4.1, 4.9]])  # [1, 2]
    info = sd.fisher_information(photons, background, x_px=x, y_px=4.3)
    assert info.shape == (3, 2, 4, 4)
    cx, cy = sd.crlb(photons, background, x_px=x, y_px=4.3)
    assert cx.shape == cy.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            one = sd.fisher_information(photons[i, 0], background[j], x_px=x[0, j], y_px=4.3)
            np.testing.assert_allclose(info[i, j], one, rtol=1e-12)
            sx, sy = sd.crlb(photons[i, 0], background[j], x_px=x[0, j], y_px=4.3)
            assert isinstance(sx, float) and isinstance(sy, float)
            np.testing.assert_allclose((cx[i, j], cy[i, j]), (sx, sy), rtol=1e-12)


def test_crlb_is_inverse_fisher_diagonal_in_nm2():
    info = sd.fisher_information(1200, 30, x_px=3.8, y_px=5.6)
    inv = np.linalg.inv(info)
    cx, cy = sd.crlb(1200, 30, x_px=3.8, y_px=5.6, pixel_size_nm=100.0)
    np.testing.assert_allclose((cx, cy), (inv[0, 0] * 1e4, inv[1, 1] * 1e4), rtol=1e-9)


def test_camera_argument_supplies_pixel_size_read_noise_and_qe():
    cam = sd.Camera(pixel_size_nm=95.0, read_noise=3.0, qe=0.7, gain=4.0, offset=400.0)
    by_camera = sd.crlb(1500, 25, camera=cam)
    by_args = sd.crlb(1500, 25, pixel_size_nm=95.0, read_noise=3.0, qe=0.7)
    np.testing.assert_allclose(by_camera, by_args, rtol=1e-12)
    assert by_camera[0] != pytest.approx(sd.crlb(1500, 25)[0], rel=1e-3)


def test_qe_is_equivalent_to_fewer_photons_without_read_noise():
    # Detection thins the Poisson process: N photons at qe q carry the information of q*N.
    a = sd.crlb(2000, 20, qe=0.6, read_noise=0.0, x_px=4.2, y_px=4.7)
    b = sd.crlb(1200, 12, qe=1.0, read_noise=0.0, x_px=4.2, y_px=4.7)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_bound_grows_with_background_and_read_noise():
    cx_bg = sd.crlb(2000, np.array([0.0, 5.0, 20.0, 60.0]))[0]
    assert np.all(np.diff(cx_bg) > 0)
    cx_rn = np.array([sd.crlb(2000, 20, read_noise=r)[0] for r in (0.0, 1.6, 5.0)])
    assert np.all(np.diff(cx_rn) > 0)


@pytest.mark.parametrize("params", [FULL, XY])
def test_crlb_scales_as_one_over_photons_without_noise_floor(params):
    photons = np.array([100.0, 1e3, 1e4, 1e5])
    cx, cy = sd.crlb(photons, 0.0, read_noise=0.0, x_px=4.3, y_px=4.8, params=params)
    np.testing.assert_allclose(cx * photons, cx[0] * photons[0], rtol=1e-8)
    np.testing.assert_allclose(cy * photons, cy[0] * photons[0], rtol=1e-8)


@pytest.mark.parametrize("sigma_px", [1.0, 1.5, 2.0, 3.0])
def test_xy_crlb_reaches_mortensen_limit(sigma_px):
    # No background, no read noise, ROI much larger than the PSF: var >= (s^2 + a^2/12) / N.
    a, n = 108.0, 1000.0
    cx, cy = sd.crlb(n, 0.0, sigma_px=sigma_px, pixel_size_nm=a, read_noise=0.0, params=XY,
                     roi_size=2 * math.ceil(8 * sigma_px) + 1)
    s_nm = sigma_px * a
    limit = (s_nm**2 + a**2 / 12) / n
    assert cx == pytest.approx(limit, rel=0.02)
    assert cy == pytest.approx(limit, rel=0.02)
    if sigma_px == 1.0:
        # The pixelation term is resolvable: sigma^2 / N alone is 8% too low.
        assert cx > 1.05 * s_nm**2 / n


def test_full_bound_never_below_xy_bound():
    photons = np.array([300.0, 2000.0, 6000.0])[:, None, None]
    background = np.array([0.5, 20.0, 60.0])[None, :, None]
    pos = np.linspace(1.0, 8.0, 8)[None, None, :]  # includes positions near the ROI edge
    c4 = np.stack(sd.crlb(photons, background, x_px=pos, y_px=4.5 + 0.3 * (pos - 4.5)))
    c2 = np.stack(sd.crlb(photons, background, x_px=pos, y_px=4.5 + 0.3 * (pos - 4.5), params=XY))
    assert np.all(c4 >= c2 * (1 - 1e-10))
    # Off-centre, (N, b) correlate with x: estimating them costs real precision.
    assert np.max(c4 / c2) > 1.1
    # At the ROI centre x decouples from (N, b) by symmetry: the bounds coincide.
    np.testing.assert_allclose(sd.crlb(2000, 20), sd.crlb(2000, 20, params=XY), rtol=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sd.crlb(1000, 20, params=("photons", "background"))
    with pytest.raises(ValueError):
        sd.fisher_information(1000, 20, params=("x", "z"))
    with pytest.raises(ValueError):
        sd.fisher_information(1000, 20, sigma_px=0.0)


# ---------------------------------------------------------------------------------------
# Monte Carlo: a maximum-likelihood fit of simulated emitters attains the bound
# ---------------------------------------------------------------------------------------


def _model(theta, sigma, roi, qe, read_noise):
    """mu' [T, R, R] and d mu'/d theta [T, 4, R, R] for theta = (x, y, N, b) [T, 4]."""
    edges = torch.arange(roi + 1, dtype=theta.dtype)
    x, y, n, b = theta.unbind(1)

    def axis(c):
        z = (edges - c[:, None]) / sigma
        cdf = 0.5 * torch.special.erf(z / math.sqrt(2.0))
        pdf = torch.exp(-0.5 * z**2) / (math.sqrt(2 * math.pi) * sigma)
        return cdf[:, 1:] - cdf[:, :-1], pdf[:, :-1] - pdf[:, 1:]

    ex, dex = axis(x)
    ey, dey = axis(y)
    psf = ey[:, :, None] * ex[:, None, :]
    mu = qe * (n[:, None, None] * psf + b[:, None, None]) + read_noise**2
    grads = torch.stack(
        [
            qe * n[:, None, None] * ey[:, :, None] * dex[:, None, :],
            qe * n[:, None, None] * dey[:, :, None] * ex[:, None, :],
            qe * psf,
            torch.full_like(psf, qe),
        ],
        dim=1,
    )
    return mu, grads


def fit_mle(data_e, sigma, qe, read_noise, n_iter=60):
    """Vectorized Levenberg-Marquardt (Fisher scoring) on the Poisson-normal likelihood, eq. 7.

    data_e : [T, R, R] photo-electrons ((ADU - offset) / gain). Returns theta [T, 4] and a
    convergence mask. Started from the background-subtracted centroid.
    """
    t, roi, _ = data_e.shape
    n_prime = data_e + read_noise**2  # eq. 6: x' ~ Poisson(mu')
    border = torch.cat([data_e[:, 0], data_e[:, -1], data_e[:, 1:-1, 0], data_e[:, 1:-1, -1]], dim=1)
    b0 = border.median(dim=1).values.clamp_min(1.0)
    sig = (data_e - b0[:, None, None]).clamp_min(0.0)
    centres = torch.arange(roi, dtype=data_e.dtype) + 0.5
    total = sig.sum(dim=(1, 2)).clamp_min(1.0)
    x0 = (sig.sum(dim=1) * centres).sum(dim=1) / total
    y0 = (sig.sum(dim=2) * centres).sum(dim=1) / total
    theta = torch.stack([x0, y0, total / qe, b0 / qe], dim=1)

    def loss(th):
        mu, _ = _model(th, sigma, roi, qe, read_noise)
        return (mu - n_prime * torch.log(mu)).sum(dim=(1, 2))

    lam = torch.full((t,), 1e-3, dtype=data_e.dtype)
    current = loss(theta)
    for _ in range(n_iter):
        mu, grads = _model(theta, sigma, roi, qe, read_noise)
        g = grads.flatten(2)
        grad = torch.einsum("tpk,tk->tp", g, (1 - n_prime / mu).flatten(1))
        info = torch.einsum("tpk,tqk->tpq", g / mu.flatten(1)[:, None], g)
        damped = info + lam[:, None, None] * torch.diag_embed(torch.diagonal(info, dim1=1, dim2=2))
        step = torch.linalg.solve(damped, -grad)
        proposal = theta + step
        # Keep the model physical: positive photons and background.
        proposal[:, 2:] = proposal[:, 2:].clamp_min(1e-3)
        new = loss(proposal)
        better = new < current
        theta = torch.where(better[:, None], proposal, theta)
        current = torch.where(better, new, current)
        lam = torch.where(better, lam / 10, lam * 10).clamp(1e-9, 1e9)
    # Converged: the Newton step in units of the CRLB is negligible.
    mu, grads = _model(theta, sigma, roi, qe, read_noise)
    g = grads.flatten(2)
    grad = torch.einsum("tpk,tk->tp", g, (1 - n_prime / mu).flatten(1))
    info = torch.einsum("tpk,tqk->tpq", g / mu.flatten(1)[:, None], g)
    step = torch.linalg.solve(info, -grad)
    crlb_diag = torch.diagonal(torch.linalg.inv(info), dim1=1, dim2=2)
    converged = (step.abs() / crlb_diag.sqrt()).amax(dim=1) < 1e-3
    return theta, converged


def simulate_isolated(n_trials, photons, background, sigma, roi, camera, seed):
    """ADU ROIs of one emitter each, uniformly placed in the central pixel (simulator pieces)."""
    gen = torch.Generator().manual_seed(seed)
    c = roi // 2
    x = c + torch.rand(n_trials, 1, generator=gen, dtype=torch.float64)
    y = c + torch.rand(n_trials, 1, generator=gen, dtype=torch.float64)
    n = torch.full((n_trials, 1), float(photons), dtype=torch.float64)
    expected = render_psfs(x, y, n, (roi, roi), sigma) + background
    adu = camera.expose(expected, generator=gen)
    return adu, x[:, 0], y[:, 0]


@pytest.mark.slow
@pytest.mark.parametrize("photons, background", [(2000.0, 20.0), (1000.0, 50.0)])
def test_mle_attains_crlb_monte_carlo(photons, background):
    n_trials, sigma = 10000, 1.0
    roi = default_roi_size(sigma)
    cam = sd.Camera(pixel_size_nm=108.0, gain=2.0, offset=300.0, read_noise=1.6, qe=0.9)
    adu, x_true, y_true = simulate_isolated(n_trials, photons, background, sigma, roi, cam, seed=11)
    data_e = cam.adu_to_photons(adu.to(torch.float64))
    theta, converged = fit_mle(data_e, sigma, cam.qe, cam.read_noise)
    assert converged.float().mean() > 0.995
    theta, x_true, y_true = theta[converged], x_true[converged], y_true[converged]

    a = cam.pixel_size_nm
    err_x = ((theta[:, 0] - x_true) * a).numpy()
    err_y = ((theta[:, 1] - y_true) * a).numpy()
    # The bound varies with sub-pixel position: compare against its average over the trials.
    cx, cy = sd.crlb(photons, background, sigma_px=sigma, x_px=x_true.numpy(), y_px=y_true.numpy(),
                     roi_size=roi, camera=cam)
    ratio_x = np.mean(err_x**2) / np.mean(cx)
    ratio_y = np.mean(err_y**2) / np.mean(cy)
    print(f"N={photons:g} b={background:g}: MSE/CRLB x {ratio_x:.3f}, y {ratio_y:.3f}; "
          f"sqrt(CRLB) {np.sqrt(np.mean(cx)):.2f} nm")
    # 10000 trials: the MSE's relative standard error is about 1.4%, so 10% is 7 sigma.
    assert 0.9 < ratio_x < 1.1
    assert 0.9 < ratio_y < 1.1
    # The estimator is unbiased to well within its spread, and so are N and b.
    assert abs(err_x.mean()) < 3 * err_x.std() / math.sqrt(len(err_x))
    assert abs(err_y.mean()) < 3 * err_y.std() / math.sqrt(len(err_y))
    assert float(theta[:, 2].mean()) == pytest.approx(photons, rel=0.01)
    assert float(theta[:, 3].mean()) == pytest.approx(background, rel=0.01)


def test_configuration_bound_of_an_isolated_emitter_is_the_single_emitter_bound():
    """crlb_configuration (the dense benchmark's multi-emitter bound): one emitter far from the frame's edge
    gets crlb()'s bound of a large ROI; a second emitter 1.5 sigma away raises both bounds."""
    from smlm_diffusers.fisher import crlb, crlb_configuration

    cx, cy = crlb_configuration([20.3], [19.6], [2000.0], 20.0, (40, 40), 1.2)
    rx, ry = crlb(2000.0, 20.0, 1.2, x_px=15.3, y_px=14.6, roi_size=30)
    assert cx[0] == pytest.approx(float(rx), rel=1e-3) and cy[0] == pytest.approx(float(ry), rel=1e-3)
    px, py = crlb_configuration([20.3, 22.1], [19.6, 19.6], [2000.0, 2000.0], 20.0, (40, 40), 1.2)
    assert (px > 1.2 * cx[0]).all() and (py > cy[0]).all()
