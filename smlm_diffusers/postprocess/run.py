"""One call over a localization table: undrift, link, FRC; and the files a run writes beside the table.

Beside ``TABLE`` (``.csv`` or ``.hdf5``) go ``TABLE_drift.csv`` (frame 0-based, drift_x_nm,
drift_y_nm: subtracted from the localizations), ``TABLE_drift.png`` (x and y drift against
frame), ``TABLE_selfcheck.png`` (the sigma self-check, :mod:`.selfcheck`) and
``TABLE_postprocess.json`` (the summary: rows before and after linking, drift range, the
self-check, FRC resolution, times).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .drift import DriftTrace, add_drift_uncertainty, apply_drift, estimate_drift, write_drift
from .frc import FRCResult, frc_resolution
from .linking import link as link_table
from .selfcheck import SigmaSelfCheck, selfcheck_figure, sigma_selfcheck


@dataclass
class PostprocessResult:
    localizations: pd.DataFrame
    rows_in: int
    drift: DriftTrace | None = None
    frc: FRCResult | None = None
    seconds: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)  # rows left out before linking, by reason (no usable sigma)
    selfcheck: SigmaSelfCheck | None = None  # of the per-frame sigmas, after drift correction, before linking

    def summary(self) -> dict:
        out = {"rows_in": int(self.rows_in), "rows_out": int(len(self.localizations)),
               "linked": "n" in self.localizations.columns and self.rows_in != len(self.localizations) or None,
               "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        if any(self.rejected.values()):
            out["rows_left_out"] = {k: int(v) for k, v in self.rejected.items() if v}
        d = self.drift
        if d is not None and d.reason:
            out["drift"] = {"measured": False, "reason": d.reason, "pairs_used": d.pairs_used,
                            "pairs_total": d.pairs_total}
        elif d is not None:
            out["drift"] = {"measured": True, "reason": None, "x_range_nm": float(np.ptp(d.x_nm)),
                            "y_range_nm": float(np.ptp(d.y_nm)), "segments": int(len(d.segment_frames)),
                            "pairs_used": d.pairs_used, "pairs_total": d.pairs_total,
                            "sigma_nm": [round(d.sigma_x_nm, 3), round(d.sigma_y_nm, 3)], "fine_windows": d.fine_windows,
                            "frame_sigma_median_nm": None if d.sigma_frame_x_nm is None else
                            [round(float(np.median(d.sigma_frame_x_nm)), 3), round(float(np.median(d.sigma_frame_y_nm)), 3)]}
        if self.selfcheck is not None:
            out["selfcheck"] = self.selfcheck.summary()
        if self.frc is not None:
            r = self.frc.resolution_nm
            out["frc_resolution_nm"] = None if math.isnan(r) else round(r, 2)
            out["frc"] = {"resolution_nm": out["frc_resolution_nm"], "reason": self.frc.reason}
        return out

    def lines(self, prog: str = "smlm-diffusers") -> list[str]:
        s = self.summary()
        text = []
        if "rows_left_out" in s:
            from ..screening import describe_counts

            text.append(f"{prog}: left out before post-processing: {describe_counts(s['rows_left_out'])}")
        if self.drift is not None:
            d = s["drift"]
            text.append(f"{prog}: drift not measured, nothing subtracted: {d['reason']}" if not d["measured"] else
                        f"{prog}: drift corrected (RCC, {d['segments']} segments, {d['pairs_used']}/{d['pairs_total']} "
                        f"pairs): range x {d['x_range_nm']:.1f} nm, y {d['y_range_nm']:.1f} nm"
                        + (f"; per-frame error (median) x {d['frame_sigma_median_nm'][0]:.1f} nm, y "
                           f"{d['frame_sigma_median_nm'][1]:.1f} nm, added to every row's sigma"
                           if d["frame_sigma_median_nm"] else ""))
        if "n" in self.localizations.columns:
            text.append(f"{prog}: linked {s['rows_in'] - sum(self.rejected.values())} localizations into "
                        f"{s['rows_out']} blinks")
        if self.selfcheck is not None:
            text.append(f"{prog}: {self.selfcheck.line()}")
        if self.frc is not None:
            r = s.get("frc_resolution_nm")
            text.append(f"{prog}: FRC not measured: {self.frc.reason}" if r is None else
                        f"{prog}: FRC resolution {r:.1f} nm")
        return text


def postprocess_localizations(locs: pd.DataFrame, n_frames: int | None = None, *, link: bool = True,
                              undrift: bool = True, frc: bool = True, n_sigma: float = 3.0, max_gap: int = 1,
                              max_radius_nm: float = 200.0, sigma_nm: float | None = None,
                              segment_frames: int = 200, drift_options: dict | None = None,
                              drift_uncertainty: bool = True, selfcheck: bool = True,
                              seed: int = 0) -> PostprocessResult:
    """Drift-correct (RCC on the unlinked rows), link, and measure the FRC of a localization table.

    Parameters
    ----------
    locs : DataFrame
        frame (0-based), x_nm, y_nm, sigma_x_nm, sigma_y_nm (or uncertainty_nm), photons, ...
    n_frames : int, optional
        Frames of the movie (default: the last frame + 1).
    link, undrift, frc : bool
        Which steps to run.
    n_sigma, max_gap, max_radius_nm, sigma_nm
        :func:`~smlm_diffusers.postprocess.link`.
    segment_frames, drift_options
        :func:`~smlm_diffusers.postprocess.estimate_drift`.
    drift_uncertainty : bool
        Add the drift estimate's error (from the RCC residuals) to the sigmas in quadrature,
        after linking (it is common to a blink's frames).
    selfcheck : bool
        Check the per-frame sigmas on consecutive frames of each blink (:func:`sigma_selfcheck`),
        on the drift-corrected rows before linking.
    seed : int
        Seed of the FRC's random halves.
    """
    rows_in = len(locs)
    n_frames = int(n_frames if n_frames is not None else (locs["frame"].max() + 1 if rows_in else 1))
    locs = locs.sort_values("frame", kind="stable").reset_index(drop=True)
    seconds, drift, res, rejected, check = {}, None, None, {}, None
    if link:  # a row whose sigma is not a number cannot be linked: it leaves the table, counted
        locs, rejected = _rows_with_sigma(locs, sigma_nm)
    if undrift:
        t0 = time.perf_counter()
        drift = estimate_drift(locs["frame"].to_numpy(), locs["x_nm"].to_numpy(), locs["y_nm"].to_numpy(), n_frames,
                               segment_frames=segment_frames, **(drift_options or {}))
        if not drift.reason:
            locs = apply_drift(locs, drift)
        seconds["undrift"] = time.perf_counter() - t0
    if selfcheck and (link or not _has_no_sigma(locs, sigma_nm)):
        t0 = time.perf_counter()
        check = sigma_selfcheck(locs if link else _rows_with_sigma(locs, sigma_nm)[0], max_gap=max_gap,
                                max_radius_nm=max_radius_nm, sigma_nm=sigma_nm)
        seconds["selfcheck"] = time.perf_counter() - t0
    if link:
        t0 = time.perf_counter()
        locs = link_table(locs, n_sigma=n_sigma, max_gap=max_gap, max_radius_nm=max_radius_nm, sigma_nm=sigma_nm)
        seconds["link"] = time.perf_counter() - t0
    if drift is not None and not drift.reason and drift_uncertainty:
        locs = add_drift_uncertainty(locs, drift)
    if frc:
        t0 = time.perf_counter()
        res = frc_resolution(locs["x_nm"].to_numpy(), locs["y_nm"].to_numpy(), seed=seed)
        seconds["frc"] = time.perf_counter() - t0
    return PostprocessResult(locs, rows_in, drift, res, seconds, rejected, check)


def _has_no_sigma(locs: pd.DataFrame, sigma_nm: float | None) -> bool:
    return sigma_nm is None and not ({"sigma_x_nm", "sigma_y_nm"} <= set(locs.columns) or "uncertainty_nm" in locs.columns)


def _rows_with_sigma(locs: pd.DataFrame, sigma_nm: float | None) -> tuple[pd.DataFrame, dict]:
    """The rows a linker can weigh: a finite positive sigma per axis, or none at all in the table where
    ``sigma_nm`` stands in; the others dropped and counted (``{"sigma": n}``)."""
    cols = [c for c in ("sigma_x_nm", "sigma_y_nm") if c in locs.columns] or (
        ["uncertainty_nm"] if "uncertainty_nm" in locs.columns else [])
    if not cols:
        return locs, {}
    s = locs[cols].to_numpy(np.float64)
    if sigma_nm is not None and np.isnan(s).all():
        return locs, {}
    ok = (np.isfinite(s) & (s > 0)).all(axis=1)
    return locs.loc[ok].reset_index(drop=True), ({"sigma": int((~ok).sum())} if not ok.all() else {})


def read_table(path: str | os.PathLike, pixel_size_nm: float | None = None) -> tuple[pd.DataFrame, dict]:
    """A localization table (ThunderSTORM CSV, ours or Picasso's HDF5) in this package's columns, and what
    the writer needs: pixel_size_nm, shape (frames, H, W), psf_sigma_px, samples, info (Picasso's)."""
    from ..io import localization_format, read_picasso_hdf5, read_thunderstorm_csv

    path = Path(path)
    fmt = localization_format(path)
    if fmt == "picasso":
        locs, info = read_picasso_hdf5(path, pixel_size_nm)
        if pixel_size_nm is None:
            pixel_size_nm = [d["Pixelsize"] for d in info if isinstance(d, dict) and "Pixelsize" in d][-1]
        movie = info[0] if info and isinstance(info[0], dict) else {}
        psf = float(np.nanmedian(locs["sx"])) if "sx" in locs.columns and len(locs) else float("nan")
    else:
        locs = read_thunderstorm_csv(path, pixel_size_nm)
        info, movie = [], {}
        locs = locs.rename(columns={"intensity": "photons", "offset": "background", "detections": "n"})
        if "uncertainty_nm" in locs.columns and "sigma_x_nm" not in locs.columns:
            locs["sigma_x_nm"] = locs["sigma_y_nm"] = locs.pop("uncertainty_nm")
        psf_nm = float(np.nanmedian(locs["sigma_nm"])) if "sigma_nm" in locs.columns and len(locs) else float("nan")
        if pixel_size_nm is None:  # nm tables: the pixel only sizes Picasso's metadata
            from ..simulation import Camera

            pixel_size_nm = Camera().pixel_size_nm
        psf = psf_nm / float(pixel_size_nm)
        locs = locs.drop(columns=[c for c in ("id", "sigma_nm") if c in locs.columns])
    a = float(pixel_size_nm)
    frames = int(movie.get("Frames", locs["frame"].max() + 1 if len(locs) else 1))
    height = int(movie.get("Height", math.ceil(locs["y_nm"].max() / a) if len(locs) else 1))
    width = int(movie.get("Width", math.ceil(locs["x_nm"].max() / a) if len(locs) else 1))
    meta = {"pixel_size_nm": a, "shape": (frames, height, width), "psf_sigma_px": psf if math.isfinite(psf) else 1.0,
            "samples": "probability" in locs.columns and "n_samples" in locs.columns, "info": info}
    return locs, meta


def side_paths(table: str | os.PathLike) -> dict[str, Path]:
    """The drift CSV, drift plot and summary JSON written beside ``table``."""
    t = Path(table)
    return {"drift_csv": t.with_name(f"{t.stem}_drift.csv"), "drift_png": t.with_name(f"{t.stem}_drift.png"),
            "selfcheck_png": t.with_name(f"{t.stem}_selfcheck.png"), "summary": t.with_name(f"{t.stem}_postprocess.json")}


def write_postprocess_outputs(result: PostprocessResult, table: str | os.PathLike, *, pixel_size_nm: float,
                              shape: tuple[int, int, int], psf_sigma_px: float, samples: bool, camera=None,
                              source: str | None = None, extra_info: dict | None = None,
                              summary_extra: dict | None = None) -> list[Path]:
    """The processed table (format by suffix), the drift CSV and plot, the summary JSON; the paths written."""
    from ..io import write_localizations

    extra = dict(extra_info or {})
    s = result.summary()
    if result.frc is not None:
        extra["FRC resolution (nm)"] = s["frc_resolution_nm"] if s["frc_resolution_nm"] is not None else (
            f"not measured: {result.frc.reason}")
    if result.drift is not None:
        extra["Undrifted by"] = ("RCC (smlm-diffusers postprocess)" if not result.drift.reason else
                                 f"nothing (drift not measured: {result.drift.reason})")
    if "n" in result.localizations.columns:
        extra["Linked"] = True
    written = list(write_localizations(result.localizations, table, pixel_size_nm=pixel_size_nm, shape=shape,
                                       psf_sigma_px=psf_sigma_px, samples=samples, camera=camera, source=source,
                                       extra_info=extra))
    side = side_paths(table)
    if result.drift is not None and not result.drift.reason:
        written += write_drift(result.drift, side["drift_csv"], side["drift_png"],
                               title=f"drift (RCC): {source or Path(table).name}")
    if result.selfcheck is not None:
        selfcheck_figure(result.selfcheck, title=f"sigma self-check: {source or Path(table).name} (blind to errors a "
                                                 "blink's frames share)").savefig(side["selfcheck_png"])
        written.append(side["selfcheck_png"])
    side["summary"].write_text(json.dumps(s | (summary_extra or {}), indent=2) + "\n")
    written.append(side["summary"])
    return written
