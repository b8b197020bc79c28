"""Per-molecule uncertainty from localizations of K posterior KDE samples.

Each DDPM sample is localized on its own. Detections are associated across samples with a
reference set (the localizations of the sample mean) by Hungarian matching within a link
radius; detections no reference claims are grouped among themselves, so a molecule that
shows up in only some samples is still reported, with its detection probability.

For a molecule seen in ``n >= 2`` samples, the position is the mean over samples and the
reported sigma per axis is the sample standard deviation ``s`` (ddof = 1) inflated so that
``|error| <= sigma`` holds 68.3% of the time despite the small sample:

    sigma = s * sqrt(1 + 1/n) * t_{n-1}(0.8413)

If the truth and the n sample positions are i.i.d. draws of the posterior,
``(truth - mean) / (s sqrt(1 + 1/n))`` follows Student's t with ``n - 1`` degrees of freedom,
so this makes the 1-sigma coverage exactly 68.3% (without it, 8 samples would cover about
61%). Molecules seen once get ``sigma = NaN``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.stats import t as student_t

from ..columns import MOLECULE_COLUMNS  # noqa: F401 (the table's columns; re-exported)


def small_sample_factor(n: np.ndarray) -> np.ndarray:
    """``sqrt(1 + 1/n) * t_{n-1}(0.8413)``: turns a sample std of n draws into a 68.3% interval."""
    n = np.asarray(n, dtype=np.float64)
    out = np.full(n.shape, np.nan)
    ok = n >= 2
    out[ok] = np.sqrt(1 + 1 / n[ok]) * student_t.ppf(0.5 + 0.6827 / 2, n[ok] - 1)
    return out


def _link(ref_xy: np.ndarray, det_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment of detections to references within ``radius`` (nm)."""
    if len(ref_xy) == 0 or len(det_xy) == 0:
        return np.empty(0, int), np.empty(0, int)
    d = np.hypot(ref_xy[:, None, 0] - det_xy[None, :, 0], ref_xy[:, None, 1] - det_xy[None, :, 1])
    cost = np.where(d <= radius, d, 1e9)
    r, c = linear_sum_assignment(cost)
    keep = d[r, c] <= radius
    return r[keep], c[keep]


def aggregate_samples(
    detections: list[pd.DataFrame],
    reference: pd.DataFrame,
    link_radius_nm: float = 60.0,
    min_probability: float = 0.0,
) -> pd.DataFrame:
    """Molecules of one frame from the localizations of each of its K samples.

    Parameters
    ----------
    detections : list of K DataFrames (x_nm, y_nm[, kde_mass])
        Localizations of each posterior sample of the same frame.
    reference : DataFrame (x_nm, y_nm)
        Anchor positions, usually the localizations of the sample mean.
    link_radius_nm : float
        Largest distance between a sample's detection and its molecule.
    min_probability : float
        Drop molecules detected in fewer than this fraction of the samples.

    Returns
    -------
    DataFrame with x_nm, y_nm, sigma_x_nm, sigma_y_nm, probability, n_samples, kde_mass (mean KDE mass in the window, in emitters)
    (no ``frame`` column).
    """
    k = len(detections)
    ref = reference[["x_nm", "y_nm"]].to_numpy(np.float64)
    members: list[list[tuple[float, float, float]]] = [[] for _ in range(len(ref))]
    leftovers = []
    for det in detections:
        xy = det[["x_nm", "y_nm"]].to_numpy(np.float64)
        inten = det["kde_mass"].to_numpy(np.float64) if "kde_mass" in det else np.ones(len(det))
        r, c = _link(ref, xy, link_radius_nm)
        for ri, ci in zip(r, c):
            members[ri].append((xy[ci, 0], xy[ci, 1], inten[ci]))
        rest = np.setdiff1d(np.arange(len(xy)), c)
        leftovers += [(xy[i, 0], xy[i, 1], inten[i]) for i in rest]
    members = [m for m in members if m] + _group(leftovers, link_radius_nm)
    rows = []
    for m in members:
        a = np.asarray(m)
        n = len(a)
        s = a[:, :2].std(axis=0, ddof=1) if n >= 2 else np.array([np.nan, np.nan])
        f = small_sample_factor(np.array([n]))[0]
        rows.append((a[:, 0].mean(), a[:, 1].mean(), s[0] * f, s[1] * f, min(n / k, 1.0), n, a[:, 2].mean()))
    out = pd.DataFrame(rows, columns=MOLECULE_COLUMNS[1:])
    return out[out["probability"] >= min_probability].reset_index(drop=True)


def _group(points: list[tuple[float, float, float]], radius: float) -> list[list[tuple[float, float, float]]]:
    """Connected components of detections closer than ``radius`` (single linkage)."""
    if not points:
        return []
    xy = np.asarray(points)[:, :2]
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    parent = np.arange(len(xy))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list] = {}
    for i, p in enumerate(points):
        groups.setdefault(find(i), []).append(p)
    return list(groups.values())
