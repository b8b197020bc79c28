"""The localization table's columns: one declaration, read by every module that writes or reads a table.

Units (docs/conventions.md conventions): positions and sigmas in nm with the image's outer top-left corner at
(0, 0); ``frame`` 0-based; photons and background in incident photons (per pixel for the
background). The file formats map these names to their own (ThunderSTORM CSV:
:mod:`smlm_diffusers.io.tables`; Picasso HDF5: :mod:`smlm_diffusers.io.picasso`).

No torch here: a script that only reads or writes tables imports this in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# KDE peaks (:func:`smlm_diffusers.localization.localize_kde`): position, the KDE mass in the peak's
# window (emitters) and the peak's value
PEAK_COLUMNS = ["frame", "x_nm", "y_nm", "kde_mass", "peak"]

# molecules with their uncertainty: the pipeline's table
MOLECULE_COLUMNS = ["frame", "x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm", "probability", "n_samples", "kde_mass"]

# photometry on the raw frame
PHOTOMETRY_COLUMNS = ["photons", "background"]

# the frame fit (:func:`smlm_diffusers.localization.refine.refine_frames`)
REFINE_COLUMNS = ["crlb_x_nm", "crlb_y_nm", "fit_deviance", "refine_ok", "fit_flag", "split", "cluster_size"]
FIT_FLAGS = ("ok", "runaway", "seed_kept")  # the values of fit_flag

# the configurations' weighing: what sigma_x_nm = hypot(bound, spread) is made of
SPREAD_COLUMNS = ["spread_x_nm", "spread_y_nm", "bound_x_nm", "bound_y_nm"]

# 3D localization (:func:`smlm_diffusers.localization.localize3d.localize_3d`)
COLUMNS_3D = ["frame", "x_nm", "y_nm", "z_nm", "photons", "background", "sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]

# linking (:mod:`smlm_diffusers.postprocess.linking`), Picasso's convention: ``len`` frames from the blink's
# first (``frame``) to its last, ``n`` localizations merged
LINK_COLUMNS = ["len", "n"]

# integer columns (every other numeric column is float64) and the text columns with their values
INT_COLUMNS = ("frame", "n_samples", "cluster_size", "len", "n")
TEXT_COLUMNS = {"fit_flag": FIT_FLAGS}


def empty_table(columns=MOLECULE_COLUMNS) -> pd.DataFrame:
    """A table with no rows and these columns, each of its declared type."""
    def dtype(c):
        return np.int64 if c in INT_COLUMNS else object if c in TEXT_COLUMNS else np.float64
    return pd.DataFrame({c: pd.Series(dtype=dtype(c)) for c in columns})
