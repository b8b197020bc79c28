"""The pixel-integrated Gaussian (paper eq. 2): the one place it is written, in torch and numpy.

Pixel geometry (docs/conventions.md): pixel ``j`` covers ``[j, j + 1)`` in pixel units, so the outer
border is 0 and pixel ``j`` is centred at ``j + 0.5``. A unit Gaussian at ``c`` with standard
deviation ``s`` puts ``E_j = 0.5 (erf((j + 1 - c) / (sqrt(2) s)) - erf((j - c) / (sqrt(2) s)))``
into pixel ``j``. With ``g(d) = exp(-d^2 / 2 s^2) / (sqrt(2 pi) s)`` and ``d_j = j - c``:

    dE_j/dc = g(d_j) - g(d_{j+1}),     dE_j/ds = (d_j g(d_j) - d_{j+1} g(d_{j+1})) / s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erf

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def integrated_gaussian(centres: torch.Tensor, n_pixels: int, sigma_px, derivatives: bool = False):
    """Pixel fractions [..., E, n_pixels] of unit Gaussians at ``centres`` [..., E] (pixels).

    ``sigma_px`` is a float or a tensor broadcastable to ``centres``. With ``derivatives`` also
    returns ``d/dcentre`` and ``d/dsigma`` (1/pixel), each of the same shape.
    """
    edges = torch.arange(n_pixels + 1, dtype=centres.dtype, device=centres.device)
    sigma = torch.as_tensor(sigma_px, dtype=centres.dtype, device=centres.device)
    if sigma.ndim:
        sigma = sigma.unsqueeze(-1)
    d = edges - centres.unsqueeze(-1)
    cdf = torch.special.erf(d / (_SQRT2 * sigma))
    frac = 0.5 * (cdf[..., 1:] - cdf[..., :-1])
    if not derivatives:
        return frac
    g = torch.exp(-0.5 * (d / sigma) ** 2) * (_INV_SQRT_2PI / sigma)
    dg = d * g
    return frac, g[..., :-1] - g[..., 1:], (dg[..., :-1] - dg[..., 1:]) / sigma


def integrated_gaussian_np(centre: np.ndarray, sigma: np.ndarray, n_pixels: int):
    """Numpy twin of :func:`integrated_gaussian` with the pixel axis first.

    ``centre``, ``sigma`` [N] (pixels). Returns (E, dE/dcentre, dE/dsigma), each [n_pixels, N].
    """
    centre = np.asarray(centre, np.float64)
    d = np.arange(n_pixels + 1, dtype=np.float64)[:, None] - centre[None, :]
    inv = 1.0 / np.asarray(sigma, np.float64)[None, :]
    u = d * inv
    cdf = 0.5 * erf(u * (1.0 / _SQRT2))
    g = np.exp(-0.5 * u * u) * (inv * _INV_SQRT_2PI)
    dg = d * g
    return cdf[1:] - cdf[:-1], g[:-1] - g[1:], (dg[:-1] - dg[1:]) * inv


def render_psfs(x_px: torch.Tensor, y_px: torch.Tensor, photons: torch.Tensor, shape: tuple[int, int],
                sigma_px) -> torch.Tensor:
    """Expected signal photons [B, H, W] of isotropic Gaussians of emitters [B, E] (padding: 0 photons).

    ``sigma_px`` is a float or a tensor [B, E] (the simulator draws a width per frame when it trains over a
    range; one fixed PSF is :meth:`smlm_diffusers.optics.PSF.render`). Separable: one batched product,
    ``sum_e photons_e * Ey_e[i] * Ex_e[j]``.
    """
    h, w = shape
    ex = integrated_gaussian(x_px, w, sigma_px)  # [B, E, W]
    ey = integrated_gaussian(y_px, h, sigma_px)  # [B, E, H]
    return torch.einsum("beh,bew->bhw", ey * photons.unsqueeze(-1), ex)
