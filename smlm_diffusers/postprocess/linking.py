"""Linking: the localizations of one blink, in consecutive frames, merged into one row.

A localization joins a blink still open (seen within the last ``max_gap + 1`` frames) when
its distance to the blink's merged position is within ``n_sigma`` of their combined
uncertainty, per axis ``dx^2 / (s_blink^2 + s_loc^2) + dy^2 / (...) <= n_sigma^2`` (and
within ``max_radius_nm``); each blink takes at most one localization per frame, assigned by
minimum total cost (Hungarian). A merged row has the inverse-variance mean position, the
merged sigma ``1 / sqrt(sum 1 / sigma_i^2)`` (so n equal sigmas shrink as ``1 / sqrt(n)``),
the summed photons, the mean of other numeric columns, and Picasso's ``link`` convention:
``frame`` the first frame, ``len`` = last - first + 1 frames (gaps included), ``n`` the
number of localizations.

Widening (per axis): the positions of a blink scatter about their weighted mean with
``chi2 = sum (x_i - x_mean)^2 / sigma_i^2``, which follows chi-square with ``n - 1`` degrees of
freedom when the sigmas are honest. The merged variance is multiplied by
``max(1, (chi2 + k) / (n - 1 + k))``, a scatter estimate shrunk toward 1 by ``k`` =
:data:`PRIOR_DOF` pseudo degrees of freedom so that two or three honest frames (whose chi2 is
noisy) are seldom widened at random, while a blink whose frames disagree far beyond their sigmas
is. Measured on Gaussian blinks of geometric length (mean 3 frames): honest sigmas cover 0.704
of merged errors with k = 1 (0.716 with k = 0, 0.683 ideal); sigmas 1.5x too small 0.573
(0.495 unwidened; single-frame blinks cannot be widened at all). Errors common to a blink's frames are invisible to this scatter: the one known (the drift
estimate's error, :attr:`DriftTrace.sigma_frame_x_nm`) is added once per merged row after the merge
(:func:`~smlm_diffusers.postprocess.drift.add_drift_uncertainty`).

:class:`Linker` takes frame-ordered chunks and returns the blinks that closed, so a movie's
table is linked in bounded memory and the result does not depend on the chunks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

_POSITION = ("x_nm", "y_nm")
PRIOR_DOF = 1.0  # pseudo degrees of freedom of the widening (module docstring)
_SPECIAL = {"frame", "x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm", "photons", "len", "n", "uncertainty_nm", "id"}


def _sigmas(locs: pd.DataFrame, fallback_nm: float | None) -> tuple[np.ndarray, np.ndarray]:
    if {"sigma_x_nm", "sigma_y_nm"} <= set(locs.columns):
        sx, sy = locs["sigma_x_nm"].to_numpy(np.float64), locs["sigma_y_nm"].to_numpy(np.float64)
    elif "uncertainty_nm" in locs.columns:
        sx = sy = locs["uncertainty_nm"].to_numpy(np.float64)
    elif fallback_nm is not None:
        sx = sy = np.full(len(locs), float(fallback_nm))
    else:
        raise ValueError("linking needs per-localization sigmas (sigma_x_nm, sigma_y_nm or uncertainty_nm) "
                         "or a fallback sigma_nm (command line: postprocess --sigma NM)")
    bad = ~(np.isfinite(sx) & (sx > 0) & np.isfinite(sy) & (sy > 0))
    if bad.any():
        if fallback_nm is None:
            raise ValueError(f"{int(bad.sum())} localizations have no finite positive sigma: drop them first "
                             "(postprocess_localizations does) or pass sigma_nm (command line: postprocess --sigma NM)")
        sx, sy = np.where(bad, fallback_nm, sx), np.where(bad, fallback_nm, sy)
    return sx, sy


class Linker:
    """Streaming linker over frame-ordered localization chunks (module docstring).

    Parameters
    ----------
    n_sigma : float
        Link radius in combined standard deviations (3: 99% of one blink's pairs in 2D).
    max_gap : int
        Dark frames a blink may skip and still continue (Picasso's ``max_dark_time``).
    max_radius_nm : float
        Never link farther than this, whatever the sigmas.
    sigma_nm : float, optional
        Sigma for rows without one (tables with no uncertainty column).
    """

    def __init__(self, n_sigma: float = 3.0, max_gap: int = 1, max_radius_nm: float = 200.0,
                 sigma_nm: float | None = None):
        if n_sigma <= 0 or max_gap < 0 or max_radius_nm <= 0:
            raise ValueError("n_sigma and max_radius_nm must be > 0 and max_gap >= 0")
        self.n_sigma, self.max_gap, self.max_radius_nm, self.sigma_nm = float(n_sigma), int(max_gap), float(
            max_radius_nm), sigma_nm
        self._open: list[dict] = []  # per blink: sums of weights and weighted positions, frames, rows
        self._last_frame = -1
        self._columns: list[str] | None = None
        self._next_id = 0
        self.blink_ids: np.ndarray = np.zeros(0, np.int64)  # per row of the last chunk (its order): the blink it joined

    def _close(self, blink: dict) -> dict:
        wx, wy = blink["wx"], blink["wy"]
        scale = []
        for w, s1, s2 in ((wx, blink["wxx"], blink["wxx2"]), (wy, blink["wyy"], blink["wyy2"])):
            chi2 = max(s2 - s1 * s1 / w, 0.0)  # sum w_i (x_i - mean)^2
            scale.append(max(1.0, (chi2 + PRIOR_DOF) / (blink["n"] - 1 + PRIOR_DOF)))
        row = {"frame": blink["first"], "x_nm": blink["wxx"] / wx, "y_nm": blink["wyy"] / wy,
               "sigma_x_nm": np.sqrt(scale[0] / wx), "sigma_y_nm": np.sqrt(scale[1] / wy),
               "len": blink["last"] - blink["first"] + 1, "n": blink["n"]}
        if blink["photons"] is not None:
            row["photons"] = blink["photons"]
        for c, v in blink["sums"].items():
            row[c] = v / blink["n"]
        return row

    def add(self, locs: pd.DataFrame) -> pd.DataFrame:
        """Link one chunk (frames after the previous chunk's); returns the blinks closed by it."""
        if self._columns is None:
            self._columns = [c for c in locs.columns if c not in _SPECIAL and pd.api.types.is_numeric_dtype(locs[c])]
        if len(locs) == 0:
            self.blink_ids = np.zeros(0, np.int64)
            return self._table([])
        order = np.argsort(locs["frame"].to_numpy(np.int64), kind="stable")
        locs = locs.iloc[order]
        ids = np.empty(len(locs), np.int64)
        frame = locs["frame"].to_numpy(np.int64)
        if frame[0] <= self._last_frame:
            raise ValueError(f"chunks must come in frame order: frame {frame[0]} after {self._last_frame}")
        sx, sy = _sigmas(locs, self.sigma_nm)
        x, y = locs["x_nm"].to_numpy(np.float64), locs["y_nm"].to_numpy(np.float64)
        photons = locs["photons"].to_numpy(np.float64) if "photons" in locs.columns else None
        others = {c: locs[c].to_numpy(np.float64) for c in self._columns if c in locs.columns}
        closed = []
        starts = np.flatnonzero(np.r_[True, frame[1:] != frame[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(frame)]):
            f = int(frame[s])
            keep = []
            for b in self._open:
                (keep if b["last"] >= f - 1 - self.max_gap else closed).append(b)
            self._open = keep
            taken = self._assign(x[s:e], y[s:e], sx[s:e], sy[s:e])
            for k in range(e - s):
                i = s + k
                w_x, w_y = 1.0 / sx[i] ** 2, 1.0 / sy[i] ** 2
                b = taken.get(k)
                if b is None:
                    b = {"wx": 0.0, "wy": 0.0, "wxx": 0.0, "wyy": 0.0, "wxx2": 0.0, "wyy2": 0.0, "first": f,
                         "n": 0, "id": self._next_id, "photons": None if photons is None else 0.0,
                         "sums": {c: 0.0 for c in others}}
                    self._next_id += 1
                    self._open.append(b)
                ids[order[i]] = b["id"]
                b["wx"] += w_x
                b["wy"] += w_y
                b["wxx"] += w_x * x[i]
                b["wyy"] += w_y * y[i]
                b["wxx2"] += w_x * x[i] * x[i]
                b["wyy2"] += w_y * y[i] * y[i]
                b["last"] = f
                b["n"] += 1
                if photons is not None:
                    b["photons"] += photons[i]
                for c, v in others.items():
                    b["sums"][c] += v[i]
            self._last_frame = f
        self.blink_ids = ids
        return self._table(closed)

    def _assign(self, x, y, sx, sy) -> dict:
        """New localization index -> open blink it continues (minimum total normalized distance)."""
        if not self._open:
            return {}
        wx = np.array([b["wx"] for b in self._open])
        wy = np.array([b["wy"] for b in self._open])
        bx = np.array([b["wxx"] for b in self._open]) / wx
        by = np.array([b["wyy"] for b in self._open]) / wy
        dx = x[None, :] - bx[:, None]
        dy = y[None, :] - by[:, None]
        chi2 = dx ** 2 / (1.0 / wx[:, None] + sx[None, :] ** 2) + dy ** 2 / (1.0 / wy[:, None] + sy[None, :] ** 2)
        ok = (chi2 <= self.n_sigma ** 2) & (dx ** 2 + dy ** 2 <= self.max_radius_nm ** 2)
        rows, cols = np.nonzero(ok.any(axis=1))[0], np.nonzero(ok.any(axis=0))[0]
        if len(rows) == 0:
            return {}
        sub = np.where(ok[np.ix_(rows, cols)], chi2[np.ix_(rows, cols)], 1e12)
        r, c = linear_sum_assignment(sub)
        return {int(cols[j]): self._open[rows[i]] for i, j in zip(r, c) if sub[i, j] < 1e12}

    def finish(self) -> pd.DataFrame:
        """The blinks still open at the end of the movie."""
        closed, self._open = self._open, []
        return self._table(closed)

    def _table(self, blinks: list[dict]) -> pd.DataFrame:
        cols = ["frame", "x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm", "photons", *(self._columns or []), "len", "n"]
        rows = [self._close(b) for b in blinks]
        df = pd.DataFrame(rows, columns=[c for c in cols if not rows or c in rows[0]])
        if len(df):
            df = df.sort_values(["frame", "x_nm", "y_nm"], kind="stable").reset_index(drop=True)
        return df.astype({"frame": np.int64, "len": np.int64, "n": np.int64})


def link(locs: pd.DataFrame | Iterable[pd.DataFrame], n_sigma: float = 3.0, max_gap: int = 1,
         max_radius_nm: float = 200.0, sigma_nm: float | None = None) -> pd.DataFrame:
    """Link localizations (a table, or frame-ordered chunks of one) into blinks; see the module docstring.

    Parameters
    ----------
    locs : DataFrame or iterable of DataFrames
        ``frame`` (0-based), ``x_nm``, ``y_nm``, ``sigma_x_nm``, ``sigma_y_nm`` (1-sigma, nm;
        or ``uncertainty_nm``), optionally ``photons`` (summed) and other numeric columns (averaged).
    n_sigma, max_gap, max_radius_nm, sigma_nm
        As :class:`Linker`.

    Returns
    -------
    DataFrame, one row per blink sorted by first frame: frame, x_nm, y_nm, sigma_x_nm,
    sigma_y_nm, photons, the other columns, len, n.
    """
    linker = Linker(n_sigma, max_gap, max_radius_nm, sigma_nm)
    chunks = [locs] if isinstance(locs, pd.DataFrame) else locs
    parts = [linker.add(c) for c in chunks]
    parts.append(linker.finish())
    parts = [p for p in parts if len(p)] or parts[-1:]
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["frame", "x_nm", "y_nm"], kind="stable").reset_index(drop=True)
