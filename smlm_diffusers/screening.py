"""What may stand in a localization table: rows whose numbers are physically possible.

A row leaves the table (and is counted by reason) when

- its frame fit failed (``fit_flag == "runaway"``: the fit ran off its seed or to no photons, so its
  photons and bound describe nothing; the seed alone has no uncertainty to report);
- a sigma is not finite, below :data:`MIN_SIGMA_NM` or above :data:`MAX_SIGMA_PSF` PSF widths (a
  position known no better than ten PSF widths is not a localization);
- its photons are below :data:`MIN_PHOTONS` (where the table has photons);
- its position lies outside the field of view, ``[0, W a) x [0, H a)`` (pixel geometry of
  docs/conventions.md).

A failed fit is a fact to report, not a number to write: :func:`screen_localizations` returns the counts
with the table, the pipeline puts them in its output (``rejected``), the movie runner sums them over the
run and the CLI prints them and writes them into the table's metadata. Tables without sigmas (a folder that
does not fit the frame, ``refine=False``) keep their NaN sigmas: there NaN means "not measured", and the
other checks still apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

MIN_SIGMA_NM = 0.1  # below any photon-limited precision of a camera pixel of >= 10 nm
MAX_SIGMA_PSF = 10.0  # PSF widths (sigma) beyond which a row carries no position
MIN_PHOTONS = 1.0

REASONS = ("failed_fit", "sigma", "photons", "outside_field")
REASON_TEXT = {"failed_fit": "failed fits", "sigma": "impossible sigmas", "photons": "under 1 photon",
               "outside_field": "outside the field of view"}


def screen_localizations(locs: pd.DataFrame, shape: tuple[int, int] | None, pixel_size_nm: float,
                         psf_sigma_px: float) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``locs`` that are physically possible, and the rows left out by reason (module docstring).

    Parameters
    ----------
    locs : DataFrame
        frame, x_nm, y_nm and any of sigma_x_nm, sigma_y_nm, sigma_z_nm, photons, fit_flag.
    shape : (H, W) or None
        The frames' size in camera pixels (the field of view); None skips that check (a table already drift
        corrected may hold positions a drift's width outside the frames).
    pixel_size_nm, psf_sigma_px : float
        Camera pixel (nm) and the PSF's width (sigma, camera pixels; a representative width for a 3D PSF).

    Returns
    -------
    (DataFrame, dict)
        The kept rows (index reset) and ``{reason: count}`` for every reason of :data:`REASONS`, each row
        counted once, under the first reason that applies.
    """
    n = len(locs)
    counts = dict.fromkeys(REASONS, 0)
    if n == 0:
        return locs.reset_index(drop=True), counts
    a = float(pixel_size_nm)
    max_sigma = MAX_SIGMA_PSF * float(psf_sigma_px) * a
    left = np.zeros(n, dtype=bool)

    def drop(reason: str, bad: np.ndarray) -> None:
        new = bad & ~left
        counts[reason] += int(new.sum())
        left[new] = True

    if "fit_flag" in locs.columns:
        drop("failed_fit", (locs["fit_flag"] == "runaway").to_numpy(bool))
    sigmas = [c for c in ("sigma_x_nm", "sigma_y_nm", "sigma_z_nm") if c in locs.columns]
    if sigmas:
        s = locs[sigmas].to_numpy(np.float64)
        measured = ~np.isnan(s).all(axis=0)  # a column of NaN only: no sigma measured (refine off)
        s = s[:, measured]
        if s.shape[1]:
            drop("sigma", ~(np.isfinite(s) & (s >= MIN_SIGMA_NM) & (s <= max_sigma)).all(axis=1))
    if "photons" in locs.columns:
        p = locs["photons"].to_numpy(np.float64)
        if not np.isnan(p).all():
            drop("photons", ~(p >= MIN_PHOTONS))
    x, y = locs["x_nm"].to_numpy(np.float64), locs["y_nm"].to_numpy(np.float64)
    drop("outside_field", ~(np.isfinite(x) & np.isfinite(y)))
    if shape is not None:
        h, w = shape
        drop("outside_field", ~((x >= 0) & (x < w * a) & (y >= 0) & (y < h * a)))
    return locs.loc[~left].reset_index(drop=True), counts


def add_counts(total: Mapping[str, int] | None, more: Mapping[str, int] | None) -> dict[str, int]:
    """Two ``{reason: count}`` mappings summed (either may be None)."""
    out = dict.fromkeys(REASONS, 0)
    for part in (total, more):
        for k, v in (part or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def describe_counts(counts: Mapping[str, int] | None) -> str | None:
    """``"12 failed fits, 3 impossible sigmas"``, or None when nothing was left out."""
    parts = [f"{int(v)} {REASON_TEXT.get(k, k)}" for k, v in (counts or {}).items() if v]
    return ", ".join(parts) if parts else None
