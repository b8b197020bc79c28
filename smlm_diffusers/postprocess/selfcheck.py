"""A check of the per-frame sigma on the user's own data, without ground truth.

The same emitter seen in consecutive frames (two localizations of one blink, found by the
linker) gives, per axis, ``z = (x_t - x_t+1) / sqrt(sigma_t^2 + sigma_t+1^2)``: N(0, 1) when
the sigmas are honest about the frame-to-frame error. The check reports the share with
``|z| <= 1`` (coverage, ideal 0.683) and the robust std of z (1.4826 x the median absolute
deviation, ideal 1), over all pairs and per bin of photons (the pair's mean) and of the
distance to the nearest other localization in the same frame (the pair's smaller).

What it cannot see: errors that a blink's frames share. A drift-correction residual (smooth
in time), a neighbour that stays beside the molecule for the whole blink, a bias of the
fitter at that place in the pixel: they cancel in ``x_t - x_t+1``, so a table can pass this
check and still be off against the truth by them (measured on simulated blinks with a
constant per-blink offset: the check stays at 0.68 while the coverage against the truth
falls; ``tests/test_selfcheck.py``). It also sees nothing of blinks one frame long.

Nor can it check anything where molecules are not seen in consecutive frames (a new set of
molecules in every frame, such as Bundled Tubes HD): its pairs are then different molecules that
happen to lie close. :func:`chance_pair_share` counts, with the same gate, the pairs found between
frames :data:`CHANCE_GAP` apart (past a blink's length: chance neighbours on the same structure)
against those one frame apart; where that share exceeds :data:`MAX_CHANCE_SHARE` the check says it
is not measured, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

IDEAL_COVERAGE = 0.6827
CHANCE_GAP = 8  # frames: past most blinks (3 frames on average in the benchmark movies), within a slow drift
MAX_CHANCE_SHARE = 0.5
NEIGHBOUR_EDGES_NM = (0.0, 250.0, 500.0, 1000.0, np.inf)  # DESIGN's crowding tail sits within 300 nm
CANNOT_SEE = ("errors shared by a blink's frames (drift-correction residual, a neighbour present for the whole "
              "blink, a fitter's bias at that place) cancel between consecutive frames and are not seen; "
              "blinks of one frame are not checked")


@dataclass
class SigmaSelfCheck:
    """Consecutive-frame z of one blink's localizations: coverage and robust std, overall and per bin."""

    pairs: int  # consecutive-frame pairs (each gives an x and a y z-value)
    coverage: float  # share of |z| <= 1 over both axes (ideal 0.683); nan without pairs
    robust_std: float  # 1.4826 * MAD of z (ideal 1)
    by_photons: list[dict] = field(default_factory=list)  # {"low", "high", "pairs", "coverage", "robust_std"}
    by_neighbour_nm: list[dict] = field(default_factory=list)
    reason: str | None = None  # why there is no check (no consecutive-frame pairs); None when there is
    z: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # [pairs, 2] (x, y)
    chance_share: float = float("nan")  # pairs CHANCE_GAP frames apart per consecutive-frame pair (module docstring)

    def summary(self) -> dict:
        r = lambda v: None if not np.isfinite(v) else round(float(v), 4)  # noqa: E731
        bins = lambda b: [{k: (r(v) if isinstance(v, float) else v) for k, v in d.items()} for d in b]  # noqa: E731
        return {"pairs": int(self.pairs), "coverage_1sigma": r(self.coverage), "ideal": round(IDEAL_COVERAGE, 3),
                "robust_std_z": r(self.robust_std), "by_photons": bins(self.by_photons),
                "by_neighbour_nm": bins(self.by_neighbour_nm), "chance_pair_share": r(self.chance_share),
                "reason": self.reason, "cannot_see": CANNOT_SEE}

    def line(self) -> str:
        if self.reason:
            return f"sigma self-check not made: {self.reason}"
        worst = min((b for b in self.by_neighbour_nm if b["pairs"] >= 20), key=lambda b: b["coverage"], default=None)
        tail = (f"; worst neighbour bin {_bin_name(worst)}: {worst['coverage']:.2f}" if worst is not None else "")
        if np.isfinite(self.chance_share):
            tail += f"; chance pairs about {self.chance_share:.0%}"
        return (f"sigma self-check (consecutive frames of {self.pairs} blink pairs): coverage {self.coverage:.3f} "
                f"(ideal 0.683), robust std(z) {self.robust_std:.2f} (ideal 1){tail}; blind to errors a blink's "
                "frames share (drift residual, a constant neighbour)")


def _bin_name(b: dict) -> str:
    return f"{b['low']:.0f}-{b['high']:.0f} nm" if np.isfinite(b["high"]) else f">= {b['low']:.0f} nm"


def _stats(z: np.ndarray) -> tuple[float, float]:
    if z.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(z) <= 1)), float(1.4826 * np.median(np.abs(z - np.median(z))))


def nearest_neighbour_nm(frame: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance (nm) from each localization to the nearest other one in the same frame (inf when alone)."""
    from scipy.spatial import cKDTree

    if len(x) < 2:
        return np.full(len(x), np.inf)
    span = float(np.ptp(np.r_[x, y])) + 1e4  # frames laid apart on one axis: never each other's neighbours
    pts = np.c_[x, y + np.asarray(frame, np.float64) * 3 * span]
    d, _ = cKDTree(pts).query(pts, k=2, distance_upper_bound=span)
    return d[:, 1]


def sigma_selfcheck(locs: pd.DataFrame, blink: np.ndarray | None = None, *, photon_bins: int = 4,
                    neighbour_edges_nm=NEIGHBOUR_EDGES_NM, n_sigma: float = 5.0, max_gap: int = 1,
                    max_radius_nm: float = 200.0, sigma_nm: float | None = None) -> SigmaSelfCheck:
    """The sigma self-check of an (unlinked) localization table (module docstring).

    Parameters
    ----------
    locs : DataFrame
        frame (0-based), x_nm, y_nm, sigma_x_nm, sigma_y_nm (1-sigma, nm; or uncertainty_nm),
        optionally photons. Drift-corrected or not: the drift between two consecutive frames is tiny.
    blink : array of int, optional
        The blink of each row (e.g. :attr:`Linker.blink_ids`); default: link ``locs`` here with
        ``n_sigma``, ``max_gap``, ``max_radius_nm``, ``sigma_nm`` (:class:`~smlm_diffusers.postprocess.Linker`).
        The gate is wider than linking's 3 on purpose: a gate cuts off the pairs that disagree
        most, exactly those a too-small sigma makes (sigmas 0.7x the truth, 3 sigmas: the check
        said 0.58 against 0.52 true; 5 sigmas: 0.525 against 0.518).
    photon_bins : int
        Bins of equal pair count over photons (when the table has photons).
    neighbour_edges_nm : sequence of float
        Bin edges of the nearest-neighbour distance, nm.

    Returns
    -------
    SigmaSelfCheck
    """
    from .linking import Linker, _sigmas

    locs = locs.reset_index(drop=True)
    if blink is None:
        linker = Linker(n_sigma, max_gap, max_radius_nm, sigma_nm)
        linker.add(locs)
        blink = linker.blink_ids
    blink = np.asarray(blink, np.int64)
    if len(blink) != len(locs):
        raise ValueError(f"blink has {len(blink)} ids for {len(locs)} rows")
    frame = locs["frame"].to_numpy(np.int64)
    x, y = locs["x_nm"].to_numpy(np.float64), locs["y_nm"].to_numpy(np.float64)
    sx, sy = _sigmas(locs, sigma_nm) if len(locs) else (np.zeros(0), np.zeros(0))
    order = np.lexsort((frame, blink))
    a, b = order[:-1], order[1:]
    pair = (blink[a] == blink[b]) & (frame[b] - frame[a] == 1)
    a, b = a[pair], b[pair]
    if len(a) == 0:
        return SigmaSelfCheck(0, float("nan"), float("nan"),
                              reason="no blink is seen in two consecutive frames (too few rows, or no linking)")
    radius = min(float(max_radius_nm), n_sigma * float(np.median(np.hypot(sx, sy))))
    chance = chance_pair_share(frame, x, y, radius)
    if np.isfinite(chance) and chance > MAX_CHANCE_SHARE:
        return SigmaSelfCheck(int(len(a)), float("nan"), float("nan"), chance_share=chance,
                              reason=f"the pairs are mostly chance neighbours, not one molecule twice: frames "
                                     f"{CHANCE_GAP} apart pair up {chance:.0%} as often as consecutive ones "
                                     "(molecules are not seen in consecutive frames)")
    z = np.c_[(x[a] - x[b]) / np.hypot(sx[a], sx[b]), (y[a] - y[b]) / np.hypot(sy[a], sy[b])]
    cov, rstd = _stats(z.ravel())

    def binned(value: np.ndarray, edges) -> list[dict]:
        out = []
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            sel = (value >= lo) & ((value < hi) if k < len(edges) - 2 else (value <= hi))
            c, s = _stats(z[sel].ravel())
            out.append({"low": float(lo), "high": float(hi), "pairs": int(sel.sum()), "coverage": c, "robust_std": s})
        return out

    by_photons = []
    if "photons" in locs.columns:
        ph = 0.5 * (locs["photons"].to_numpy(np.float64)[a] + locs["photons"].to_numpy(np.float64)[b])
        ok = np.isfinite(ph)
        if ok.sum() >= photon_bins:
            edges = np.unique(np.quantile(ph[ok], np.linspace(0, 1, int(photon_bins) + 1)))
            by_photons = binned(np.where(ok, ph, -np.inf), edges) if len(edges) > 1 else []
        if by_photons and not ok.all():  # pairs without photons: a bin of their own, so the counts add up
            c, s = _stats(z[~ok].ravel())
            by_photons.append({"low": None, "high": None, "pairs": int((~ok).sum()), "coverage": c, "robust_std": s})
    nn = nearest_neighbour_nm(frame, x, y)
    by_nn = binned(np.minimum(nn[a], nn[b]), np.asarray(neighbour_edges_nm, np.float64))
    return SigmaSelfCheck(int(len(a)), cov, rstd, by_photons, by_nn, None, z, chance)


def chance_pair_share(frame: np.ndarray, x: np.ndarray, y: np.ndarray, radius_nm: float,
                      gap: int = CHANCE_GAP) -> float:
    """Localizations with another within ``radius_nm`` ``gap`` frames later, over those with one a frame later
    (module docstring); NaN where there are no consecutive-frame neighbours or the movie is shorter than
    ``gap + 1`` frames."""
    from scipy.spatial import cKDTree

    frame = np.asarray(frame, np.int64)
    if len(frame) == 0 or frame.max() - frame.min() < gap or not radius_nm > 0:
        return float("nan")
    order = np.argsort(frame, kind="stable")
    f, pts = frame[order], np.c_[np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]]
    starts = {int(v): i for v, i in zip(*np.unique(f, return_index=True))}
    ends = {int(v): i + c for v, i, c in zip(*np.unique(f, return_index=True, return_counts=True))}
    trees = {}

    def tree(k):
        if k not in trees:
            trees[k] = cKDTree(pts[starts[k]:ends[k]]) if k in starts else None
        return trees[k]

    near = {1: 0, gap: 0}
    for k in starts:
        for d in near:
            t, other = tree(k), tree(k + d)
            if t is not None and other is not None:
                near[d] += int(sum(1 for hits in other.query_ball_point(pts[starts[k]:ends[k]], radius_nm) if hits))
    return near[gap] / near[1] if near[1] else float("nan")


def selfcheck_figure(check: SigmaSelfCheck, title: str | None = None):
    """A matplotlib Figure (no pyplot): the histogram of z against N(0, 1), and the coverage per bin of
    photons and of nearest-neighbour distance against the ideal 0.683."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4), dpi=120)
    if check.reason:
        fig.set_size_inches(6, 1.0)
        fig.suptitle(f"sigma self-check not made: {check.reason}", fontsize=8)
        return fig
    ax = fig.subplots(1, 3)
    z = check.z.ravel()
    t = np.linspace(-5, 5, 201)
    ax[0].hist(np.clip(z, -5, 5), bins=60, range=(-5, 5), density=True, color="tab:gray")
    ax[0].plot(t, np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi), color="black", lw=1, label="N(0, 1)")
    ax[0].set_xlabel("z = (x_t - x_t+1) / sqrt(s_t^2 + s_t+1^2)")
    ax[0].set_title(f"coverage {check.coverage:.3f} (ideal 0.683), robust std {check.robust_std:.2f}", fontsize=9)
    ax[0].legend(fontsize=8)
    for k, (bins, name) in enumerate(((check.by_photons, "photons"), (check.by_neighbour_nm, "nearest neighbour (nm)"))):
        a = ax[k + 1]
        labels = ["unknown" if b["high"] is None else f"{b['low']:.0f}-{b['high']:.0f}" if np.isfinite(b["high"])
                  else f">{b['low']:.0f}" for b in bins]
        a.bar(range(len(bins)), [b["coverage"] if b["pairs"] else 0.0 for b in bins], color="tab:blue")
        for i, b in enumerate(bins):
            a.text(i, 0.02, str(b["pairs"]), ha="center", fontsize=7, color="white")
        a.axhline(IDEAL_COVERAGE, color="black", ls="--", lw=1)
        a.set_xticks(range(len(bins)), labels, fontsize=7)
        a.set_ylim(0, 1)
        a.set_xlabel(name)
        a.set_ylabel("coverage of |z| <= 1")
    fig.suptitle(title or "sigma self-check (blind to errors a blink's frames share)", fontsize=9)
    fig.tight_layout()
    return fig
