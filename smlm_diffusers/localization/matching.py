"""One-to-one matching of predicted to ground-truth localizations (docs/conventions.md, Metrics).

Per frame, the Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the
Euclidean distance; pairs farther than the tolerance (default 250 nm, as in the 2016 SMLM
challenge) are unmatched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

MATCH_COLUMNS = ["frame", "gt_index", "pred_index", "dx", "dy"]
_XY = ["frame", "x_nm", "y_nm"]


def check_table(df: pd.DataFrame, name: str, columns=_XY) -> pd.DataFrame:
    """Validate a localization table; an empty table may lack columns.

    Raises
    ------
    ValueError
        For missing columns or non-integer frames.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        return df.assign(**{c: pd.Series(dtype=np.float64) for c in columns if c not in df.columns})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; it has {list(df.columns)}")
    frame = df["frame"].to_numpy()
    if not np.issubdtype(frame.dtype, np.integer):
        as_float = frame.astype(np.float64)
        if not np.all(np.isfinite(as_float) & (as_float == np.round(as_float))):
            raise ValueError(f"{name}['frame'] must hold integer frame indices")
    return df


def match(gt: pd.DataFrame, pred: pd.DataFrame, tolerance_nm: float = 250.0) -> pd.DataFrame:
    """Match predictions to ground truth frame by frame.

    Parameters
    ----------
    gt, pred : pandas.DataFrame
        Columns ``frame`` (integer, 0-based), ``x_nm``, ``y_nm`` (nm).
    tolerance_nm : float
        Largest distance (nm, inclusive) of a matched pair.

    Returns
    -------
    pandas.DataFrame
        One row per matched pair: ``frame``, ``gt_index`` and ``pred_index`` (0-based row
        *positions* in ``gt`` and ``pred``, for ``.iloc``), ``dx`` and ``dy`` =
        pred - gt in nm. Ordered by frame, then ``gt_index``.

    Notes
    -----
    Distances above the tolerance are replaced by a large constant before the assignment:
    otherwise minimising the total distance could pair a far couple and leave a valid pair
    unmatched. The assignment therefore first maximises the number of pairs within the
    tolerance, then minimises their summed distance.
    """
    gt = check_table(gt, "gt")
    pred = check_table(pred, "pred")
    g_frame = gt["frame"].to_numpy().astype(np.int64)
    p_frame = pred["frame"].to_numpy().astype(np.int64)
    g_xy = gt[["x_nm", "y_nm"]].to_numpy(dtype=np.float64)
    p_xy = pred[["x_nm", "y_nm"]].to_numpy(dtype=np.float64)

    # group rows by frame once (stable sort keeps the original order inside a frame)
    g_order = np.argsort(g_frame, kind="stable")
    p_order = np.argsort(p_frame, kind="stable")
    g_sorted, p_sorted = g_frame[g_order], p_frame[p_order]
    big = 1e6 * (1.0 + float(tolerance_nm))
    out_g, out_p = [], []
    for f in np.intersect1d(g_sorted, p_sorted):
        gi = g_order[np.searchsorted(g_sorted, f, "left") : np.searchsorted(g_sorted, f, "right")]
        pi = p_order[np.searchsorted(p_sorted, f, "left") : np.searchsorted(p_sorted, f, "right")]
        dist = cdist(g_xy[gi], p_xy[pi])
        cost = np.where(dist <= tolerance_nm, dist, big)  # NaN positions are never matched
        r, c = linear_sum_assignment(cost)
        keep = dist[r, c] <= tolerance_nm
        out_g.append(gi[r[keep]])
        out_p.append(pi[c[keep]])
    gi = np.concatenate(out_g) if out_g else np.zeros(0, np.int64)
    pi = np.concatenate(out_p) if out_p else np.zeros(0, np.int64)
    d = p_xy[pi] - g_xy[gi]
    result = pd.DataFrame(
        {
            "frame": g_frame[gi],
            "gt_index": gi.astype(np.int64),
            "pred_index": pi.astype(np.int64),
            "dx": d[:, 0],
            "dy": d[:, 1],
        },
        columns=MATCH_COLUMNS,
    )
    return result.sort_values(["frame", "gt_index"], kind="stable", ignore_index=True)
