"""The pipeline's readout: localizations of the KDE samples -> molecules with photons and sigmas.

Each posterior sample and the sample mean are localized on their own (a ``localize``
callable: KDE stack -> table of :func:`~smlm_diffusers.localization.peaks.localize_kde`);
per frame the detections are associated into molecules
(:func:`~smlm_diffusers.localization.uncertainty.aggregate_samples`), then fitted on the frame
(ADU): jointly by maximum likelihood with ``refine``
(:func:`~smlm_diffusers.localization.refine.refine_frames`), else their photons and background
at fixed positions (:mod:`~smlm_diffusers.localization.photometry`). The reported sigma per
axis combines the corrected sample spread with the bound of that fit
(:func:`~smlm_diffusers.localization.uncertainty.sigma_model`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..simulation.camera import Camera
from .photometry import PHOTOMETRY_COLUMNS, estimate_photometry, molecule_crlb
from .refine import REFINE_COLUMNS, refine_frames
from .uncertainty import MOLECULE_COLUMNS, aggregate_samples, sigma_model

# the two terms of the sigma model (nm): the corrected sample spread and the bound it is combined with
SPREAD_COLUMNS = ["spread_x_nm", "spread_y_nm", "bound_x_nm", "bound_y_nm"]


def deepstorm_molecules(locs: pd.DataFrame, frames_adu: np.ndarray, camera: Camera, sigma_px: float,
                        refine: bool = False, split: bool = False) -> pd.DataFrame:
    """Molecules of DeepSTORM alone (no samples): probability 1, sigma NaN; with ``refine``
    the joint fit on the frame adds photometry and its bound as the sigma."""
    locs = locs.assign(sigma_x_nm=np.nan, sigma_y_nm=np.nan, probability=1.0, n_samples=0)
    if not refine:
        return locs[MOLECULE_COLUMNS].reset_index(drop=True)
    locs = refine_frames(frames_adu, locs[MOLECULE_COLUMNS], camera, sigma_px, split=split, write_sigma=True)
    return locs[MOLECULE_COLUMNS + PHOTOMETRY_COLUMNS + REFINE_COLUMNS].reset_index(drop=True)


def sample_molecules(samples, kde_mean, localize: Callable[..., pd.DataFrame], link_radius_nm: float,
                     min_probability: float) -> pd.DataFrame:
    """Localize every sample [F, K, H, W] and the mean [F, H, W], associate per frame:
    ``MOLECULE_COLUMNS`` (sigma = corrected spread), empty when nothing is found."""
    n_frames, k = samples.shape[:2]
    per_sample = localize(samples.reshape(n_frames * k, *samples.shape[2:]))
    per_sample["sample"] = per_sample["frame"] % k
    per_sample["frame"] = per_sample["frame"] // k
    reference = localize(kde_mean)
    by_frame = dict(tuple(per_sample.groupby("frame")))
    ref_by_frame = dict(tuple(reference.groupby("frame")))
    empty = per_sample.iloc[:0]
    tables = []
    for f in range(n_frames):
        det = by_frame.get(f, empty)
        dets = [d for _, d in det.groupby("sample")] + [empty] * (k - det["sample"].nunique())
        mol = aggregate_samples(dets, ref_by_frame.get(f, reference.iloc[:0]), link_radius_nm, min_probability)
        if len(mol):
            tables.append(mol.assign(frame=f))
    if not tables:
        return _empty(MOLECULE_COLUMNS)
    return pd.concat(tables, ignore_index=True)[MOLECULE_COLUMNS]


def read_out(molecules: pd.DataFrame, frames_adu: np.ndarray, camera: Camera, sigma_px: float,
             sigma_scale: float, crlb_scale: float, refine: bool = False, split: bool = False) -> pd.DataFrame:
    """Fit the molecules on the frames and form their sigmas (module docstring); columns
    ``MOLECULE_COLUMNS + PHOTOMETRY_COLUMNS + SPREAD_COLUMNS`` (``+ REFINE_COLUMNS`` with ``refine``)."""
    columns = MOLECULE_COLUMNS + PHOTOMETRY_COLUMNS + SPREAD_COLUMNS + (REFINE_COLUMNS if refine else [])
    if not len(molecules):
        return _empty(columns)
    out = molecules[MOLECULE_COLUMNS].copy()
    out["spread_x_nm"], out["spread_y_nm"] = out["sigma_x_nm"], out["sigma_y_nm"]
    if refine:
        out = refine_frames(frames_adu, out, camera, sigma_px, split=split, write_sigma=True)
        out["bound_x_nm"], out["bound_y_nm"] = out["sigma_x_nm"], out["sigma_y_nm"]
    else:
        out = out.join(estimate_photometry(frames_adu, out, camera, sigma_px))
        crlb_x, crlb_y = molecule_crlb(out, sigma_px, camera)
        out["bound_x_nm"], out["bound_y_nm"] = np.sqrt(crlb_x), np.sqrt(crlb_y)
    for axis in "xy":
        out[f"sigma_{axis}_nm"] = sigma_model(out[f"spread_{axis}_nm"], out[f"bound_{axis}_nm"], sigma_scale,
                                              crlb_scale)
    return out[columns]


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.int64 if c in ("frame", "n_samples") else np.float64)
                         for c in columns})
