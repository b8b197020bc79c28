"""DeepSTORM's molecules: KDE peaks, optionally refined on the frame (joint Poisson maximum likelihood with
:func:`~smlm_diffusers.localization.refine.refine_frames`, its CRLB as the sigma). The DDPM mode starts from
them and weighs the configurations its samples propose (:mod:`~smlm_diffusers.localization.configurations`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..columns import SPREAD_COLUMNS  # noqa: F401 (the table's columns; re-exported)
from ..simulation.camera import Camera
from .photometry import PHOTOMETRY_COLUMNS
from .refine import REFINE_COLUMNS, refine_frames
from .uncertainty import MOLECULE_COLUMNS

# DDPM mode's sigma per axis, sqrt(bound^2 + spread^2) (nm): the spread of a molecule's position between the
# configurations that hold it and the weighted bound of its fit in them


def deepstorm_molecules(locs: pd.DataFrame, frames_adu: np.ndarray, camera: Camera, sigma_px: float,
                        refine: bool = False, split: bool = False) -> pd.DataFrame:
    """Molecules of DeepSTORM alone (no samples): probability 1, sigma NaN; with ``refine``
    the joint fit on the frame adds photometry and its bound as the sigma."""
    locs = locs.assign(sigma_x_nm=np.nan, sigma_y_nm=np.nan, probability=1.0, n_samples=0)
    if not refine:
        return locs[MOLECULE_COLUMNS].reset_index(drop=True)
    locs = refine_frames(frames_adu, locs[MOLECULE_COLUMNS], camera, sigma_px, split=split, write_sigma=True)
    return locs[MOLECULE_COLUMNS + PHOTOMETRY_COLUMNS + REFINE_COLUMNS].reset_index(drop=True)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("frame", "n_samples") else np.float64)
                         for c in columns})
