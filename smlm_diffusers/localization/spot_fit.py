"""Poisson MLE of one emitter per window, batched over windows: the 3D fit and the elliptical Gaussian.

Model of a window (photo-electrons): ``mu = N * F(x, y[, z]) + b`` with ``F`` the PSF's pixel
fractions (:mod:`smlm_diffusers.optics`); read noise is folded in by the Poisson-normal
approximation of docs/conventions.md (data and model shifted by ``read_noise^2``, eqs. 5-7), so the
fit maximises eq. 7 and its Fisher matrix is eq. 14. Levenberg-Marquardt on the Fisher-scoring
Hessian, all windows at once (torch, float64); positions in window pixels (edge convention:
0 is the window's outer corner), z in nm.

- :func:`fit_elliptical`: (x, y, photons, background, sigma_x, sigma_y), the fit a bead
  calibration measures widths with (``calibrate-z``) and the seed of z in :func:`fit_3d`.
- :func:`fit_3d`: (x, y, z, photons, background) for a 3D PSF, z seeded by the spot's width ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..optics.gaussian import integrated_gaussian
from ..optics.psf import PSF

_FLOOR = 1e-6  # smallest shifted expectation, keeps log(mu) finite


@dataclass
class SpotFit:
    """Fitted parameters [K, P], the diagonal of the inverse Fisher matrix [K, P] and a validity flag [K]."""

    theta: np.ndarray
    crlb: np.ndarray
    ok: np.ndarray
    nll: np.ndarray
    names: tuple


def _nll(data, mu):
    return (mu - data * torch.log(mu)).sum(1)


def _lm(model, data, theta, lower, upper, max_step, n_iter: int):
    """Levenberg-Marquardt on shifted data ``data`` [K, M]; ``model(theta)`` -> (mu' [K, M], jac [K, M, P])."""
    mu, jac = model(theta)
    nll = _nll(data, mu)
    lam = torch.full_like(nll, 1e-3)
    eye = torch.eye(theta.shape[1], dtype=theta.dtype)
    for _ in range(n_iter):
        w = 1.0 / mu
        grad = torch.einsum("kmp,km->kp", jac, 1.0 - data * w)
        fisher = torch.einsum("kmp,km,kmq->kpq", jac, w, jac)
        diag = torch.diagonal(fisher, dim1=-2, dim2=-1).clamp_min(1e-12)
        a = fisher + lam[:, None, None] * diag[:, :, None] * eye
        step = -torch.nan_to_num(torch.linalg.solve_ex(a, grad.unsqueeze(-1))[0].squeeze(-1))
        step = torch.maximum(torch.minimum(step, max_step), -max_step)
        trial = torch.minimum(torch.maximum(theta + step, lower), upper)
        mu_t, jac_t = model(trial)
        nll_t = _nll(data, mu_t)
        better = nll_t < nll  # NaN is never better
        theta = torch.where(better[:, None], trial, theta)
        mu, jac = torch.where(better[:, None], mu_t, mu), torch.where(better[:, None, None], jac_t, jac)
        nll = torch.where(better, nll_t, nll)
        lam = torch.where(better, lam * 0.2, lam * 5.0).clamp(1e-7, 1e7)
    w = 1.0 / mu
    fisher = torch.einsum("kmp,km,kmq->kpq", jac, w, jac)
    return theta, fisher, nll


def _inverse_diag(fisher):
    s = torch.diagonal(fisher, dim1=-2, dim2=-1).clamp_min(1e-30).rsqrt()
    inv = torch.linalg.inv_ex(fisher * s[:, :, None] * s[:, None, :])[0]
    return torch.diagonal(inv, dim1=-2, dim2=-1) * s * s


def _start(data: torch.Tensor):
    """Centroid of the central 3x3 (window pixels), background from the rim, photons from the excess."""
    k, r, _ = data.shape
    rim = torch.cat([data[:, 0], data[:, -1], data[:, 1:-1, 0], data[:, 1:-1, -1]], dim=1)
    b0 = rim.median(dim=1).values.clamp_min(0.1)
    c = r // 2
    core = (data[:, c - 1:c + 2, c - 1:c + 2] - b0[:, None, None]).clamp_min(0.0) + 1e-9
    offs = torch.tensor([-1.0, 0.0, 1.0], dtype=data.dtype)
    x0 = c + 0.5 + (core.sum(1) * offs).sum(1) / core.sum((1, 2))
    y0 = c + 0.5 + (core.sum(2) * offs).sum(1) / core.sum((1, 2))
    n0 = (data - b0[:, None, None]).sum((1, 2)).clamp_min(10.0)
    return x0, y0, n0, b0


def _prepare(windows, read_noise):
    data = torch.as_tensor(np.asarray(windows, dtype=np.float64))
    if data.ndim != 3 or data.shape[1] != data.shape[2] or data.shape[1] < 5:
        raise ValueError(f"windows must be [K, R, R] with R >= 5, got {tuple(data.shape)}")
    return data, float(read_noise) ** 2


def fit_elliptical(windows, read_noise: float = 0.0, sigma_guess_px: float = 1.3, n_iter: int = 60) -> SpotFit:
    """Fit an elliptical pixel-integrated Gaussian + flat background to each window [K, R, R] (electrons).

    Returns :class:`SpotFit` with ``theta`` columns x, y (window pixels), photons, background
    (per pixel), sigma_x, sigma_y (pixels).
    """
    data, rn2 = _prepare(windows, read_noise)
    k, r, _ = data.shape
    x0, y0, n0, b0 = _start(data)
    theta = torch.stack([x0, y0, n0, b0, torch.full_like(x0, sigma_guess_px), torch.full_like(x0, sigma_guess_px)], 1)

    def model(t):
        ex, dex, sex = integrated_gaussian(t[:, 0], r, t[:, 4], True)
        ey, dey, sey = integrated_gaussian(t[:, 1], r, t[:, 5], True)
        frac = ey[:, :, None] * ex[:, None, :]
        n = t[:, 2, None, None]
        jac = torch.stack([n * ey[:, :, None] * dex[:, None, :], n * dey[:, :, None] * ex[:, None, :], frac,
                           torch.ones_like(frac), n * ey[:, :, None] * sex[:, None, :],
                           n * sey[:, :, None] * ex[:, None, :]], dim=-1).flatten(1, 2)
        mu = (n * frac + t[:, 3, None, None]).flatten(1) + rn2
        return mu.clamp_min(_FLOOR), jac

    lower = torch.tensor([0.0, 0.0, 1.0, 1e-3 - rn2, 0.3, 0.3], dtype=data.dtype)
    upper = torch.tensor([r, r, 1e9, 1e9, r / 2.0, r / 2.0], dtype=data.dtype)
    step = torch.tensor([0.5, 0.5, 1e9, 1e9, 0.3, 0.3], dtype=data.dtype)
    shifted = (data + rn2).clamp_min(0.0).flatten(1)
    theta, fisher, nll = _lm(model, shifted, theta, lower, upper, step, n_iter)
    crlb = _inverse_diag(fisher)
    ok = torch.isfinite(theta).all(1) & ((theta[:, :2] - r / 2.0).abs() < 2.0).all(1)
    return SpotFit(theta.numpy(), crlb.numpy(), ok.numpy(), nll.numpy(),
                   ("x", "y", "photons", "background", "sigma_x", "sigma_y"))


def seed_z(psf: PSF, sigma_x, sigma_y, n_grid: int = 241) -> np.ndarray:
    """z (nm) whose model widths best match fitted widths: mostly their ratio, a little their size."""
    lo, hi = getattr(psf, "z_range_nm", (-750.0, 750.0))
    grid = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    sx, sy = (torch.log(torch.as_tensor(v, dtype=torch.float64)).reshape(-1, 1) for v in psf.widths(grid))
    fx = torch.log(torch.as_tensor(np.asarray(sigma_x, np.float64)).clamp_min(0.1))[:, None]
    fy = torch.log(torch.as_tensor(np.asarray(sigma_y, np.float64)).clamp_min(0.1))[:, None]
    cost = ((fx - fy) - (sx - sy).T) ** 2 + 0.25 * ((fx + fy) - (sx + sy).T) ** 2
    return grid[cost.argmin(1)].numpy()


def fit_3d(windows, psf: PSF, read_noise: float = 0.0, z0_nm=None, n_iter: int = 60,
           extra_starts_nm: tuple = ()) -> SpotFit:
    """3D Poisson MLE of one emitter per window [K, R, R] (electrons) under ``psf``.

    ``z0_nm`` [K] seeds z (e.g. from a network); by default the widths of :func:`fit_elliptical`
    through :func:`seed_z`. ``extra_starts_nm`` are further z starts (each a full fit); the
    fit of the lowest NLL wins. Returns :class:`SpotFit` with ``theta`` columns x, y (window
    pixels), z (nm), photons, background and ``crlb`` their inverse-Fisher variances
    (px^2, nm^2, photons^2, ...).
    """
    data, rn2 = _prepare(windows, read_noise)
    k, r, _ = data.shape
    if z0_nm is None:
        ell = fit_elliptical(windows, read_noise, psf.sigma_px, n_iter=30)
        z0_nm = seed_z(psf, ell.theta[:, 4], ell.theta[:, 5])
    x0, y0, n0, b0 = _start(data)
    lo, hi = getattr(psf, "z_range_nm", (-1e4, 1e4))

    def model(t):
        frac, d = psf.fractions(t[:, 0], t[:, 1], (r, r), z_nm=t[:, 2], derivatives=True)
        n = t[:, 3, None, None]
        jac = torch.stack([n * d["x"], n * d["y"], n * d["z"], frac, torch.ones_like(frac)], dim=-1).flatten(1, 2)
        mu = (n * frac + t[:, 4, None, None]).flatten(1) + rn2
        return mu.clamp_min(_FLOOR), jac

    margin = 0.1 * (hi - lo)
    lower = torch.tensor([0.0, 0.0, lo - margin, 1.0, 1e-3 - rn2], dtype=data.dtype)
    upper = torch.tensor([r, r, hi + margin, 1e9, 1e9], dtype=data.dtype)
    step = torch.tensor([0.5, 0.5, 150.0, 1e9, 1e9], dtype=data.dtype)
    shifted = (data + rn2).clamp_min(0.0).flatten(1)
    best = None
    for start in [torch.as_tensor(np.asarray(z0_nm, np.float64))] + [torch.full((k,), float(z)) for z in extra_starts_nm]:
        theta = torch.stack([x0, y0, start.to(data.dtype).reshape(k), n0, b0], 1)
        res = _lm(model, shifted, theta, lower, upper, step, n_iter)
        if best is None:
            best = res
        else:
            win = res[2] < best[2]
            best = tuple(torch.where(win.view(-1, *([1] * (a.ndim - 1))), a, b) for a, b in zip(res, best))
    theta, fisher, nll = best
    crlb = _inverse_diag(fisher)
    ok = torch.isfinite(theta).all(1) & ((theta[:, :2] - r / 2.0).abs() < 2.0).all(1)
    return SpotFit(theta.numpy(), crlb.numpy(), ok.numpy(), nll.numpy(), ("x", "y", "z", "photons", "background"))
