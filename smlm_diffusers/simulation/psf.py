"""Isotropic Gaussian PSF integrated over square pixels (paper eq. 2).

Pixel geometry (DESIGN.md): pixel ``j`` covers ``[j, j + 1)`` in pixel units, so the
image's outer top-left corner is 0 and pixel ``j`` is centred at ``j + 0.5``. An emitter
at ``x0`` puts the fraction ``0.5 * (erf((j + 1 - x0) / (sqrt(2) s)) - erf((j - x0) / (sqrt(2) s)))``
of its photons into column ``j``; this is eq. 2 with ``u_k = j + 1/2``.
"""

from __future__ import annotations

import math

import torch


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
    tensor [..., E, n_pixels]
    """
    edges = torch.arange(n_pixels + 1, dtype=centres.dtype, device=centres.device)
    sigma = torch.as_tensor(sigma_px, dtype=centres.dtype, device=centres.device)
    if sigma.ndim:
        sigma = sigma.unsqueeze(-1)
    cdf = torch.special.erf((edges - centres.unsqueeze(-1)) / (math.sqrt(2.0) * sigma))
    return 0.5 * (cdf[..., 1:] - cdf[..., :-1])


def integrated_gaussian_1d_derivative(centres: torch.Tensor, n_pixels: int, sigma_px: float) -> torch.Tensor:
    """d/dx0 of :func:`integrated_gaussian_1d`, in 1/pixel: ``(g(j - x0) - g(j + 1 - x0))``."""
    edges = torch.arange(n_pixels + 1, dtype=centres.dtype, device=centres.device)
    d = edges - centres.unsqueeze(-1)
    pdf = torch.exp(-0.5 * (d / sigma_px) ** 2) / (math.sqrt(2.0 * math.pi) * sigma_px)
    return pdf[..., :-1] - pdf[..., 1:]


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
    ex = integrated_gaussian_1d(x_px, w, sigma_px)  # [B, E, W]
    ey = integrated_gaussian_1d(y_px, h, sigma_px)  # [B, E, H]
    return torch.einsum("beh,bew->bhw", ey * photons.unsqueeze(-1), ex)
