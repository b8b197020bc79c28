"""Isotropic Gaussian PSF integrated over square pixels (paper eq. 2); the formula itself lives in
:mod:`smlm_diffusers.optics.gaussian`, these are the names the rest of the package imports.

Pixel geometry (docs/conventions.md): pixel ``j`` covers ``[j, j + 1)`` in pixel units, so the
image's outer top-left corner is 0 and pixel ``j`` is centred at ``j + 0.5``. An emitter
at ``x0`` puts the fraction ``0.5 * (erf((j + 1 - x0) / (sqrt(2) s)) - erf((j - x0) / (sqrt(2) s)))``
of its photons into column ``j``; this is eq. 2 with ``u_k = j + 1/2``.
"""

from __future__ import annotations

import torch

from ..optics.gaussian import integrated_gaussian


def integrated_gaussian_1d(centres: torch.Tensor, n_pixels: int, sigma_px: float | torch.Tensor) -> torch.Tensor:
    """Fraction of a unit 1D Gaussian falling in each of ``n_pixels`` unit pixels.

    Parameters
    ----------
    centres : tensor [..., E]
        Emitter positions in pixels (edge convention: 0 is the outer border).
    n_pixels : int
        Number of pixels along this axis.
    sigma_px : float or tensor broadcastable to ``centres``
        Gaussian standard deviation, in pixels.

    Returns
    -------
    tensor [..., E, n_pixels] (:func:`smlm_diffusers.optics.gaussian.integrated_gaussian`)
    """
    return integrated_gaussian(centres, n_pixels, sigma_px)


def integrated_gaussian_1d_derivative(centres: torch.Tensor, n_pixels: int, sigma_px: float) -> torch.Tensor:
    """d/dx0 of :func:`integrated_gaussian_1d`, in 1/pixel: ``(g(j - x0) - g(j + 1 - x0))``."""
    return integrated_gaussian(centres, n_pixels, sigma_px, derivatives=True)[1]


def render_psfs(
    x_px: torch.Tensor,
    y_px: torch.Tensor,
    photons: torch.Tensor,
    shape: tuple[int, int],
    sigma_px: float | torch.Tensor,
) -> torch.Tensor:
    """Expected signal photons per pixel of a batch of frames.

    Parameters
    ----------
    x_px, y_px, photons : tensors [B, E]
        Emitter columns, rows (pixels, edge convention) and total photons. Padding
        emitters carry ``photons = 0``.
    shape : (H, W)
    sigma_px : float or tensor [B, E]

    Returns
    -------
    tensor [B, H, W]: ``sum_e photons_e * Ey_e[i] * Ex_e[j]`` (separable, so one batched matmul).
    """
    h, w = shape
    ex = integrated_gaussian(x_px, w, sigma_px)  # [B, E, W]
    ey = integrated_gaussian(y_px, h, sigma_px)  # [B, E, H]
    return torch.einsum("beh,bew->bhw", ey * photons.unsqueeze(-1), ex)
