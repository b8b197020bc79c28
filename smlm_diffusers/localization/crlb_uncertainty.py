"""Per-molecule uncertainty where the frame was not fitted: the Cramer-Rao bound at the fitted photometry.

A pipeline folder with ``refine`` on (every shipped 2D folder) fits the molecules jointly on the frame and
reports the CRLB of that fit, neighbours included; this module is for the others (``refine=False``, such as
``smlm-ddpm-2d-v1``), whose DeepSTORM positions come with no spread. Each molecule gets the CRLB of an
*isolated* emitter (paper eq. 14) at the photons and background fitted jointly on the frame at the molecule
positions (:func:`~smlm_diffusers.localization.photometry.estimate_photometry`). It is a lower bound: it
ignores neighbours and DeepSTORM's own bias, so in crowded frames it is optimistic.

A frame with more than :data:`MAX_MOLECULES_PER_PIXEL` molecules per camera pixel (4x the
densest training data at 108 nm pixels) has more unknowns than the joint fit can separate;
its molecules get NaN photometry and uncertainty, with a warning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..simulation.camera import Camera
from .photometry import PHOTOMETRY_COLUMNS, estimate_photometry, molecule_crlb

MAX_MOLECULES_PER_PIXEL = 0.25


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
    A new DataFrame, rows and other columns as ``locs``. A table that already has photons and
    finite sigmas (the pipeline's frame refinement, ``refine=True``) is returned as it is.
    """
    has = {"photons", "sigma_x_nm", "sigma_y_nm"} <= set(locs.columns)
    if has and len(locs) and np.isfinite(locs[["sigma_x_nm", "sigma_y_nm"]].to_numpy(np.float64)).all():
        return locs.copy()
    frames = np.asarray(frames_adu, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    out = locs.drop(columns=[c for c in PHOTOMETRY_COLUMNS if c in locs.columns]).copy()
    if len(out) == 0:
        for c in PHOTOMETRY_COLUMNS + ["sigma_x_nm", "sigma_y_nm"]:
            out[c] = pd.Series(dtype=np.float64)
        return out
    counts = out.groupby("frame")["x_nm"].transform("size").to_numpy()
    fit = counts <= MAX_MOLECULES_PER_PIXEL * frames.shape[1] * frames.shape[2]
    if not fit.all():
        n_frames = out.loc[~fit, "frame"].nunique()
        warnings.warn(f"{n_frames} frame(s) hold more than {MAX_MOLECULES_PER_PIXEL:g} molecules per pixel: no "
                      "photometry or CRLB there (NaN); check the localization threshold", stacklevel=2)
    for c in PHOTOMETRY_COLUMNS + ["sigma_x_nm", "sigma_y_nm"]:
        out[c] = np.nan
    if fit.any():
        sub = out.loc[fit]
        phot = estimate_photometry(frames, sub, camera, sigma_px)
        sub = sub.assign(**{c: phot[c] for c in PHOTOMETRY_COLUMNS})
        crlb_x, crlb_y = molecule_crlb(sub, sigma_px, camera)
        out.loc[fit, PHOTOMETRY_COLUMNS] = sub[PHOTOMETRY_COLUMNS].to_numpy()
        out.loc[fit, "sigma_x_nm"] = np.sqrt(np.asarray(crlb_x, np.float64))
        out.loc[fit, "sigma_y_nm"] = np.sqrt(np.asarray(crlb_y, np.float64))
    return out
