"""Photons and background of localized emitters, fitted jointly on the camera frame.

With the positions fixed, the expected image is linear in the unknowns:

    mu(pixel) = sum_k N_k * PSF(pixel; x_k, y_k) + B(pixel)

where ``PSF`` is the pixel fractions of the image-formation model's PSF (a
:class:`~smlm_diffusers.optics.PSF`, by default the Gaussian of ``sigma_px``) and the
background ``B`` is a smooth surface, bilinear between nodes every ``background_spacing``
pixels. This module solves for all ``N_k >= 0`` and node values ``>= 0`` of one frame at once
by weighted least squares (pixel variance ``mu + read_noise^2``, with ``mu`` the model of a first pass), so
overlapping neighbours share their light instead of each counting it twice, which an
aperture sum would do at high density.

The photons feed the Cramer-Rao bound of an isolated emitter (:func:`molecule_crlb`), the sigma of a
table whose folder does not fit the frame (``refine=False``; :mod:`.crlb_uncertainty`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import sparse
import torch
from scipy.optimize import lsq_linear

from ..columns import PHOTOMETRY_COLUMNS  # noqa: F401 (the table's columns; re-exported)
from ..fisher import crlb_at_truth
from ..optics.psf import PSF, as_psf
from ..simulation.camera import Camera

_DENSE_LIMIT = 4_000_000  # design-matrix entries up to which the least squares is solved densely


def _pixel_span(centre: float, n: int, half: int) -> tuple[int, int]:
    """The pixels ``[lo, hi)`` within ``half`` of ``centre``'s pixel, inside ``[0, n)``."""
    c = int(math.floor(centre))
    return max(c - half, 0), min(c + half + 1, n)


def _window(psf: PSF, x: float, y: float, shape: tuple[int, int], half: int):
    """First row and column of the window around an emitter and the PSF's fractions [h, w] there."""
    (r0, r1), (c0, c1) = _pixel_span(y, shape[0], half), _pixel_span(x, shape[1], half)
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    if psf.separable:  # the outer product of the 1D profiles
        ex, ey = psf.profiles(t(x - c0), t(y - r0), (r1 - r0, c1 - c0))
        return r0, c0, np.outer(ey[0].numpy(), ex[0].numpy())
    return r0, c0, psf.fractions(t(x - c0), t(y - r0), (r1 - r0, c1 - c0))[0].numpy()


def _tent_basis(n: int, spacing: float) -> np.ndarray:
    """[n, m] bilinear ("hat") weights of ``n`` pixel centres on ``m`` evenly spaced nodes."""
    m = max(2, int(math.ceil((n - 1) / spacing)) + 1)
    nodes = np.linspace(0.5, n - 0.5, m)
    centres = np.arange(n) + 0.5
    eye = np.eye(m)
    return np.stack([np.interp(centres, nodes, eye[j]) for j in range(m)], axis=1)


def fit_frame(
    frame_e: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    sigma_px: float | PSF,
    read_noise: float = 0.0,
    background_spacing: float = 8.0,
    read_var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photons of each emitter and the background of one frame, positions fixed.

    Parameters
    ----------
    frame_e : array [H, W]
        The frame in photo-electrons (``Camera.adu_to_photons``).
    x_px, y_px : arrays [K]
        Emitter positions in pixels (edge convention: the image's outer corner is 0).
    sigma_px : float or PSF
        Gaussian PSF standard deviation, pixels, or the PSF (in focus).
    read_noise : float
        Read noise, e- rms (weights the least squares).
    background_spacing : float
        Pixels between the nodes of the bilinear background surface.
    read_var : array [H, W], optional
        Each pixel's read-noise variance, e-^2 (an sCMOS camera's maps), instead of ``read_noise**2``.

    Returns
    -------
    photons [K], background at each emitter [K] (e- per pixel), background map [H, W]
    """
    frame_e = np.asarray(frame_e, dtype=np.float64)
    if frame_e.ndim != 2:
        raise ValueError(f"frame_e must be [H, W], got shape {frame_e.shape}")
    if not isinstance(sigma_px, PSF) and not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    psf = as_psf(sigma_px)
    h, w = frame_e.shape
    x_px, y_px = np.atleast_1d(np.asarray(x_px, np.float64)), np.atleast_1d(np.asarray(y_px, np.float64))
    if x_px.shape != y_px.shape:
        raise ValueError("x_px and y_px must have the same length")
    half = int(math.ceil(3.0 * psf.sigma_px)) + 1
    rows, cols, vals = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]
    for k, (x, y) in enumerate(zip(x_px, y_px)):
        r0, c0, frac = _window(psf, x, y, (h, w), half)
        rr, cc = np.meshgrid(np.arange(r0, r0 + frac.shape[0]), np.arange(c0, c0 + frac.shape[1]), indexing="ij")
        rows.append((rr * w + cc).ravel())
        cols.append(np.full(rr.size, k))
        vals.append(frac.ravel())
    n_mol = len(x_px)
    psf = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, n_mol))
    by, bx = _tent_basis(h, background_spacing), _tent_basis(w, background_spacing)
    bg_basis = sparse.csr_matrix(np.kron(by, bx))
    design = sparse.hstack([psf, bg_basis], format="csr")
    if design.shape[0] * design.shape[1] <= _DENSE_LIMIT:
        design = design.toarray()  # exact solves; large frames use LSMR with a tight tolerance
    data = frame_e.ravel()
    # Weights from the data bias the fit low (pixels that fluctuate down weigh more): weight the
    # second pass by the first pass's model instead.
    variance = np.maximum(data, 0.0)
    noise = read_noise**2 if read_var is None else np.asarray(read_var, np.float64).ravel()
    for _ in range(2):
        weight = 1.0 / np.sqrt(variance + noise + 1.0)
        weighted = weight[:, None] * design if isinstance(design, np.ndarray) else sparse.diags(weight) @ design
        fit = lsq_linear(weighted, weight * data, bounds=(0.0, np.inf), max_iter=200,
                         **({} if isinstance(design, np.ndarray) else {"lsmr_tol": 1e-10, "lsmr_maxiter": 10_000}))
        variance = design @ fit.x
    photons = fit.x[:n_mol]
    bg_map = (bg_basis @ fit.x[n_mol:]).reshape(h, w)
    ri = np.clip(np.floor(y_px).astype(int), 0, h - 1)
    ci = np.clip(np.floor(x_px).astype(int), 0, w - 1)
    return photons, bg_map[ri, ci], bg_map


def estimate_photometry(
    frames_adu,
    molecules: pd.DataFrame,
    camera: Camera,
    sigma_px: float | PSF,
    background_spacing: float = 8.0,
) -> pd.DataFrame:
    """``photons`` (per emitter) and ``background`` (per pixel) of localized molecules.

    Incident photons: photo-electrons divided by the camera's quantum efficiency, the units
    of the simulation and of :func:`smlm_diffusers.fisher.crlb`.

    Parameters
    ----------
    frames_adu : array [F, H, W]
        The raw frames, ADU.
    molecules : DataFrame with frame, x_nm, y_nm
    camera : Camera
        Offset, gain, read noise, QE and pixel size of the frames.
    sigma_px : float or PSF
        PSF standard deviation, camera pixels, or the PSF.

    Returns
    -------
    DataFrame with ``photons`` and ``background``, on the index of ``molecules``.
    """
    frames = np.asarray(frames_adu, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames_adu must be [F, H, W], got shape {frames.shape}")
    out = pd.DataFrame(np.nan, index=molecules.index, columns=PHOTOMETRY_COLUMNS)
    a = camera.pixel_size_nm
    read_var = camera.read_variance() if camera.has_maps and camera.maps.variance is not None else None
    for f, mol in molecules.groupby("frame"):
        frame_e = camera.adu_to_photons(frames[int(f)])  # each pixel's offset and gain with maps
        n, b, _ = fit_frame(frame_e, mol["x_nm"].to_numpy() / a, mol["y_nm"].to_numpy() / a, sigma_px,
                            camera.read_noise, background_spacing, read_var)
        out.loc[mol.index, "photons"] = n / camera.qe
        out.loc[mol.index, "background"] = b / camera.qe
    return out


def molecule_crlb(molecules: pd.DataFrame, sigma_px: float | PSF, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """CRLB_x, CRLB_y (nm^2) of each molecule as an isolated emitter at its fitted ``photons`` (at least
    one) and ``background`` (:func:`~smlm_diffusers.localization.crlb_uncertainty.add_crlb_uncertainty`)."""
    return crlb_at_truth(molecules.assign(photons=molecules["photons"].clip(lower=1.0)), sigma_px, camera)
