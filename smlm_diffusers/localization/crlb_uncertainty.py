"""Per-molecule uncertainty without DDPM samples: the Cramer-Rao bound at the fitted photometry.

DeepSTORM alone gives positions but no spread. Until the frame-level maximum-likelihood
refinement replaces it (it will report the CRLB of the joint fit, neighbours included), each
molecule gets the CRLB of an *isolated* emitter (paper eq. 14) at the photons and background
fitted jointly on the frame at the molecule positions
(:func:`~smlm_diffusers.localization.photometry.estimate_photometry`). It is a lower bound:
it ignores neighbours and DeepSTORM's own bias, so in crowded frames it is optimistic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..simulation.camera import Camera
from .photometry import PHOTOMETRY_COLUMNS, estimate_photometry, molecule_crlb


def add_crlb_uncertainty(locs: pd.DataFrame, frames_adu, camera: Camera, sigma_px: float) -> pd.DataFrame:
    """``locs`` with ``photons``, ``background`` fitted on the frames and ``sigma_x_nm``,
    ``sigma_y_nm`` = sqrt(CRLB_x), sqrt(CRLB_y) (nm) at those values.

    Parameters
    ----------
    locs : DataFrame
        frame (0-based index into ``frames_adu``), x_nm, y_nm, ...
    frames_adu : array [F, H, W] or [H, W]
        The raw frames the molecules were found in, ADU.
    camera : Camera
    sigma_px : float
        PSF sigma, camera pixels.

    Returns
    -------
    A new DataFrame, rows and other columns as ``locs``.
    """
    frames = np.asarray(frames_adu, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    out = locs.drop(columns=[c for c in PHOTOMETRY_COLUMNS if c in locs.columns]).copy()
    if len(out) == 0:
        for c in PHOTOMETRY_COLUMNS + ["sigma_x_nm", "sigma_y_nm"]:
            out[c] = pd.Series(dtype=np.float64)
        return out
    out = out.join(estimate_photometry(frames, out, camera, sigma_px))
    crlb_x, crlb_y = molecule_crlb(out, sigma_px, camera)
    out["sigma_x_nm"] = np.sqrt(np.asarray(crlb_x, np.float64))
    out["sigma_y_nm"] = np.sqrt(np.asarray(crlb_y, np.float64))
    return out
