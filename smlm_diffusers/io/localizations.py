"""One writer of localization files for the command line and the app, chosen by the suffix.

``.csv``: ThunderSTORM CSV (:func:`~smlm_diffusers.io.tables.write_thunderstorm_csv`, 1-based
frames, nm) with these columns after ThunderSTORM's own:

- ``sigma [nm]``: the PSF sigma the fit assumed (``--psf-sigma``, ``--optics`` or the model's, in nm);
- ``intensity [photon]``, ``offset [photon]``: photons of the molecule and background photons
  per pixel, fitted jointly on the frame at the molecule positions
  (:mod:`smlm_diffusers.localization.photometry`);
- ``uncertainty [nm]``: sqrt((sigma_x^2 + sigma_y^2) / 2) of the per-molecule 1-sigma
  uncertainty (DeepSTORM mode: sqrt(CRLB) of the joint Poisson fit of the frame, neighbours and
  background as nuisance parameters; DDPM mode: that bound combined with the spread of the weighed
  configurations the samples proposed; see ``smlm-diffusers localize --help``);
- ``kde_mass`` (KDE mass of the molecule, in emitters), ``probability`` (detection probability: the
  weight of the configurations that hold it; 1 in DeepSTORM mode without the arbitration) and, with
  DDPM samples, ``n_samples`` (samples that proposed it);
- linked tables (:mod:`smlm_diffusers.postprocess`): ``detections`` (localizations merged,
  ThunderSTORM's merging column) and ``len`` (frames from first to last); ``frame`` is the
  first frame and ``uncertainty [nm]`` the merged sigma.

``.hdf5`` / ``.h5``: Picasso's HDF5 + YAML pair (:mod:`smlm_diffusers.io.picasso`), the same
molecules and numbers in Picasso's units and pixel convention.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .picasso import write_picasso_hdf5
from .tables import write_thunderstorm_csv

LOCALIZATION_SUFFIXES = {".csv": "thunderstorm", ".hdf5": "picasso", ".h5": "picasso"}


def localization_format(path: str | os.PathLike) -> str:
    """``"thunderstorm"`` or ``"picasso"`` from the file suffix; ValueError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in LOCALIZATION_SUFFIXES:
        raise ValueError(f"the localization file must end in .csv (ThunderSTORM) or .hdf5 / .h5 (Picasso), "
                         f"got {os.fspath(path)!r}")
    return LOCALIZATION_SUFFIXES[suffix]


def thunderstorm_extra_columns(locs: pd.DataFrame, samples: bool) -> dict:
    """The columns this package appends to ThunderSTORM's (module docstring)."""
    extra = {}
    if "background" in locs.columns:  # ThunderSTORM's name for the fitted background level
        extra["offset [photon]"] = locs["background"].to_numpy(np.float64)
    if "kde_mass" in locs.columns:
        extra["kde_mass"] = locs["kde_mass"].to_numpy(np.float64)
    if samples or "probability" in locs.columns:  # DeepSTORM mode's arbitration weighs its molecules too
        extra["probability"] = locs["probability"].to_numpy(np.float64)
    if samples:
        extra["n_samples"] = locs["n_samples"].to_numpy(np.int64)
    if "n" in locs.columns:  # linked blinks: ThunderSTORM's merging column, and Picasso's len
        extra["detections"] = locs["n"].to_numpy(np.int64)
        if "len" in locs.columns:
            extra["len"] = locs["len"].to_numpy(np.int64)
    return extra


def write_localizations(
    locs: pd.DataFrame,
    path: str | os.PathLike,
    *,
    pixel_size_nm: float,
    shape: tuple[int, int, int],
    psf_sigma_px: float,
    samples: bool,
    camera=None,
    source: str | None = None,
    extra_info: dict | None = None,
) -> list[Path]:
    """Write localizations as ThunderSTORM CSV or Picasso HDF5 + YAML, by ``path``'s suffix.

    Parameters
    ----------
    locs : DataFrame
        The pipeline's localizations (frame 0-based, x_nm, y_nm, sigma_x_nm, sigma_y_nm,
        photons, background, kde_mass, probability, n_samples).
    path : str or path-like
        ``.csv``, ``.hdf5`` or ``.h5``. Files are written under a temporary name and renamed.
    pixel_size_nm : float
        Camera pixel size, nm.
    shape : (frames, height, width)
        The movie (Picasso's metadata).
    psf_sigma_px : float
        PSF sigma, camera pixels: ThunderSTORM's ``sigma [nm]``, Picasso's ``sx``/``sy``.
    samples : bool
        Whether ``locs`` came from DDPM samples (n_samples applies; probability is written where ``locs`` has it).
    camera, source, extra_info
        Metadata of the Picasso file (:func:`~smlm_diffusers.io.picasso.write_picasso_hdf5`).

    Returns
    -------
    list of Path: the files written (the CSV, or the HDF5 and its YAML).
    """
    path = Path(path)
    fmt = localization_format(path)
    if fmt == "picasso":
        n, h, w = shape
        return list(write_picasso_hdf5(locs, path, n, h, w, pixel_size_nm, psf_sigma_px, camera=camera, source=source,
                                       extra_info=extra_info))
    table = locs.assign(sigma_nm=float(psf_sigma_px) * float(pixel_size_nm))
    tmp = path.with_name(path.name + ".tmp")
    write_thunderstorm_csv(table, tmp, extra_columns=thunderstorm_extra_columns(locs, samples))
    os.replace(tmp, path)
    return [path]
