"""Poisson MLE of one emitter per window, batched over windows: the 3D fit and the elliptical Gaussian.

Model of a window (photo-electrons): ``mu = N * F(x, y[, z]) + b`` with ``F`` the PSF's pixel
fractions (:mod:`smlm_diffusers.optics`); read noise is folded in by the Poisson-normal
approximation of docs/conventions.md (data and model shifted by ``read_noise^2``, eqs. 5-7; by each
pixel's own ``sigma_k^2 / g_k^2`` with an sCMOS camera's maps, ``read_var``), so the fit maximises eq. 7
and its Fisher matrix is eq. 14. Levenberg-Marquardt on the Fisher-scoring Hessian, all windows at once
(torch, float64), by the engine of the frame fit (:func:`smlm_diffusers.localization.mle.levenberg_marquardt`);
positions in window pixels (edge convention: 0 is the window's outer corner), z in nm.

- :func:`fit_elliptical`: (x, y, photons, background, sigma_x, sigma_y), the fit a bead
  calibration measures widths with (``calibrate-z``) and the seed of z in :func:`fit_3d`.
- :func:`fit_3d`: (x, y, z, photons, background) for a 3D PSF, z seeded by the spot's width ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..fisher import inverse_diagonal
from ..optics.gaussian import integrated_gaussian
from ..optics.psf import PSF
from .mle import levenberg_marquardt

_FLOOR = 1e-6  # smallest shifted expectation, keeps log(mu) finite


@dataclass
class SpotFit:
    """Fitted parameters [K, P], the diagonal of the inverse Fisher matrix [K, P] and a validity flag [K]."""

    theta: np.ndarray
    crlb: np.ndarray
    ok: np.ndarray
    nll: np.ndarray
    names: tuple


@dataclass
class _SpotProblem:
    """One-emitter windows as :func:`levenberg_marquardt` problems: ``model(theta [K, P])`` -> (mu' [K, M],
    jac [K, M, P]) on shifted data [K, M]; steps clipped to ``max_step`` [P], parameters to ``lower``,
    ``upper`` ([P] or [K, P])."""

    model: object
    data: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    max_step: torch.Tensor
    free = None

    def evaluate(self, theta):
        mu, jac = self.model(theta.T)
        w = 1.0 / mu
        grad = torch.einsum("kmp,km->pk", jac, 1.0 - self.data * w)
        fisher = torch.einsum("kmp,km,kmq->pqk", jac, w, jac)
        return (mu - self.data * torch.log(mu)).sum(1), grad, fisher, None

    def converged(self, theta, step):
        return None

    def propose(self, theta, step):
        step = torch.maximum(torch.minimum(step, self.max_step[:, None]), -self.max_step[:, None])
        lower, upper = (v[:, None] if v.ndim == 1 else v.T for v in (self.lower, self.upper))
        return torch.minimum(torch.maximum(theta + step, lower), upper)


def _lm(model, data, theta, lower, upper, max_step, n_iter: int):
    """The fit of windows ``theta`` [K, P]; returns theta [K, P], the Fisher matrices [K, P, P] and the NLL [K]."""
    theta, nll, fisher, _ = levenberg_marquardt(_SpotProblem(model, data, lower, upper, max_step), theta.T, n_iter)
    return theta.T, fisher.permute(2, 0, 1), nll


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


def _prepare(windows, read_noise, read_var=None):
    """The windows as a tensor and the read-noise variance: ``read_noise**2``, or ``read_var`` [K, R, R]."""
    data = torch.as_tensor(np.asarray(windows, dtype=np.float64))
    if data.ndim != 3 or data.shape[1] != data.shape[2] or data.shape[1] < 5:
        raise ValueError(f"windows must be [K, R, R] with R >= 5, got {tuple(data.shape)}")
    if read_var is None:
        return data, float(read_noise) ** 2
    rv = torch.as_tensor(np.asarray(read_var, dtype=np.float64))
    if rv.shape != data.shape:
        raise ValueError(f"read_var must have the windows' shape {tuple(data.shape)}, got {tuple(rv.shape)}")
    return data, rv


def _noise_terms(rn2, lower: torch.Tensor, b_index: int):
    """The read-noise shift of the flattened model (a float or [K, R*R]) and the lower bounds with the
    background's at ``1e-3 - r^2`` (each window's least r_k^2 with per-pixel values: mu' stays positive)."""
    if not isinstance(rn2, torch.Tensor):
        lower[b_index] = 1e-3 - rn2
        return rn2, lower
    flat = rn2.flatten(1)
    lower = lower.expand(len(flat), -1).clone()
    lower[:, b_index] = 1e-3 - flat.amin(1)
    return flat, lower


def fit_elliptical(windows, read_noise: float = 0.0, sigma_guess_px: float = 1.3, n_iter: int = 60,
                   read_var=None) -> SpotFit:
    """Fit an elliptical pixel-integrated Gaussian + flat background to each window [K, R, R] (electrons).

    ``read_var`` [K, R, R]: each pixel's read-noise variance (e-^2, an sCMOS camera's maps) instead of
    ``read_noise**2``. Returns :class:`SpotFit` with ``theta`` columns x, y (window pixels), photons, background
    (per pixel), sigma_x, sigma_y (pixels).
    """
    data, rn2 = _prepare(windows, read_noise, read_var)
    lower = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.3, 0.3], dtype=data.dtype)
    shift, lower = _noise_terms(rn2, lower, 3)
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
        mu = (n * frac + t[:, 3, None, None]).flatten(1) + shift
        return mu.clamp_min(_FLOOR), jac

    upper = torch.tensor([r, r, 1e9, 1e9, r / 2.0, r / 2.0], dtype=data.dtype)
    step = torch.tensor([0.5, 0.5, 1e9, 1e9, 0.3, 0.3], dtype=data.dtype)
    shifted = (data + rn2).clamp_min(0.0).flatten(1)
    theta, fisher, nll = _lm(model, shifted, theta, lower, upper, step, n_iter)
    crlb = inverse_diagonal(fisher)
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
           extra_starts_nm: tuple = (), read_var=None) -> SpotFit:
    """3D Poisson MLE of one emitter per window [K, R, R] (electrons) under ``psf``.

    ``z0_nm`` [K] seeds z (e.g. from a network); by default the widths of :func:`fit_elliptical`
    through :func:`seed_z`. ``extra_starts_nm`` are further z starts (each a full fit); the
    fit of the lowest NLL wins. Returns :class:`SpotFit` with ``theta`` columns x, y (window
    pixels), z (nm), photons, background and ``crlb`` their inverse-Fisher variances
    (px^2, nm^2, photons^2, ...). ``read_var`` as :func:`fit_elliptical`'s.
    """
    data, rn2 = _prepare(windows, read_noise, read_var)
    k, r, _ = data.shape
    if z0_nm is None:
        ell = fit_elliptical(windows, read_noise, psf.sigma_px, n_iter=30, read_var=read_var)
        z0_nm = seed_z(psf, ell.theta[:, 4], ell.theta[:, 5])
    x0, y0, n0, b0 = _start(data)
    lo, hi = getattr(psf, "z_range_nm", (-1e4, 1e4))

    def model(t):
        frac, d = psf.fractions(t[:, 0], t[:, 1], (r, r), z_nm=t[:, 2], derivatives=True)
        n = t[:, 3, None, None]
        jac = torch.stack([n * d["x"], n * d["y"], n * d["z"], frac, torch.ones_like(frac)], dim=-1).flatten(1, 2)
        mu = (n * frac + t[:, 4, None, None]).flatten(1) + shift
        return mu.clamp_min(_FLOOR), jac

    margin = 0.1 * (hi - lo)
    shift, lower = _noise_terms(rn2, torch.tensor([0.0, 0.0, lo - margin, 1.0, 0.0], dtype=data.dtype), 4)
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
    crlb = inverse_diagonal(fisher)
    ok = torch.isfinite(theta).all(1) & ((theta[:, :2] - r / 2.0).abs() < 2.0).all(1)
    return SpotFit(theta.numpy(), crlb.numpy(), ok.numpy(), nll.numpy(), ("x", "y", "z", "photons", "background"))
