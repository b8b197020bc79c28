"""Photons and background of localized emitters, fitted jointly on the camera frame.

With the positions fixed, the expected image is linear in the unknowns:

    mu(pixel) = sum_k N_k * PSF(pixel; x_k, y_k, sigma) + B(pixel)

where ``PSF`` is the pixel-integrated Gaussian of the image-formation model and the
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
from ..simulation.camera import Camera
from ..simulation.psf import integrated_gaussian_1d

_DENSE_LIMIT = 4_000_000  # design-matrix entries up to which the least squares is solved densely


def _pixel_fractions(centre: float, n: int, sigma: float, half: int) -> tuple[int, np.ndarray]:
    """First pixel index and the PSF fractions of the pixels ``[lo, hi)`` around ``centre`` (the
    simulator's pixel-integrated Gaussian)."""
    c = int(math.floor(centre))
    lo, hi = max(c - half, 0), min(c + half + 1, n)
    local = torch.tensor([centre - lo], dtype=torch.float64)
    return lo, integrated_gaussian_1d(local, hi - lo, sigma)[0].numpy()


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
    sigma_px: float,
    read_noise: float = 0.0,
    background_spacing: float = 8.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photons of each emitter and the background of one frame, positions fixed.

    Parameters
    ----------
    frame_e : array [H, W]
        The frame in photo-electrons (``Camera.adu_to_photons``).
    x_px, y_px : arrays [K]
        Emitter positions in pixels (edge convention: the image's outer corner is 0).
    sigma_px : float
        Gaussian PSF standard deviation, pixels.
    read_noise : float
        Read noise, e- rms (weights the least squares).
    background_spacing : float
        Pixels between the nodes of the bilinear background surface.

    Returns
    -------
    photons [K], background at each emitter [K] (e- per pixel), background map [H, W]
    """
    frame_e = np.asarray(frame_e, dtype=np.float64)
    if frame_e.ndim != 2:
        raise ValueError(f"frame_e must be [H, W], got shape {frame_e.shape}")
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    h, w = frame_e.shape
    x_px, y_px = np.atleast_1d(np.asarray(x_px, np.float64)), np.atleast_1d(np.asarray(y_px, np.float64))
    if x_px.shape != y_px.shape:
        raise ValueError("x_px and y_px must have the same length")
    half = int(math.ceil(3.0 * sigma_px)) + 1
    rows, cols, vals = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]
    for k, (x, y) in enumerate(zip(x_px, y_px)):
        c0, fx = _pixel_fractions(x, w, sigma_px, half)
        r0, fy = _pixel_fractions(y, h, sigma_px, half)
        rr, cc = np.meshgrid(np.arange(r0, r0 + len(fy)), np.arange(c0, c0 + len(fx)), indexing="ij")
        rows.append((rr * w + cc).ravel())
        cols.append(np.full(rr.size, k))
        vals.append(np.outer(fy, fx).ravel())
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
    for _ in range(2):
        weight = 1.0 / np.sqrt(variance + read_noise**2 + 1.0)
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
    sigma_px: float,
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
    sigma_px : float
        PSF standard deviation, camera pixels.

    Returns
    -------
    DataFrame with ``photons`` and ``background``, on the index of ``molecules``.
    """
    frames = np.asarray(frames_adu, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames_adu must be [F, H, W], got shape {frames.shape}")
    out = pd.DataFrame(np.nan, index=molecules.index, columns=PHOTOMETRY_COLUMNS)
    a = camera.pixel_size_nm
    for f, mol in molecules.groupby("frame"):
        frame_e = camera.adu_to_photons(frames[int(f)])
        n, b, _ = fit_frame(frame_e, mol["x_nm"].to_numpy() / a, mol["y_nm"].to_numpy() / a, sigma_px,
                            camera.read_noise, background_spacing)
        out.loc[mol.index, "photons"] = n / camera.qe
        out.loc[mol.index, "background"] = b / camera.qe
    return out


def molecule_crlb(molecules: pd.DataFrame, sigma_px: float, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """CRLB_x, CRLB_y (nm^2) of each molecule as an isolated emitter at its fitted ``photons`` (at least
    one) and ``background`` (:func:`~smlm_diffusers.localization.crlb_uncertainty.add_crlb_uncertainty`)."""
    return crlb_at_truth(molecules.assign(photons=molecules["photons"].clip(lower=1.0)), sigma_px, camera)
