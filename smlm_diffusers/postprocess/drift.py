"""Drift correction by redundant cross-correlation (RCC; Wang, Schnitzbauer et al., Opt. Express 2014).

The movie is cut into time segments; each segment's localizations are rendered as a
Gaussian-blurred histogram; every pair of segments is cross-correlated (FFT) and the peak
located to a fraction of a render pixel (log-parabola through the 3 x 3 maximum). The pair
shifts over-determine the segment drifts: a weighted least-squares solve (weight
``1 / (1 / n_i + 1 / n_j)``, the inverse variance of a shift measured from ``n_i`` and ``n_j``
localizations) with iterative rejection of inconsistent pairs (RCC's outlier step) gives
them, and a cubic spline through the segments' mean frames (linear beyond the first and
last) gives the drift of every frame.

Robust to sparse segments: segments are merged with their neighbour until each holds
``min_localizations``, and pairs whose correlation has no clear peak carry no weight: a peak
must stand :data:`MIN_CONTRAST` times above the median of the search window. Two segments of
unrelated molecules (new random positions in every frame: nothing to correlate) reach 1.0-1.9
there; segments of the same blinking structure 3.2 and more (measured on 40-400 frame
simulations and the 1000-frame blinking-filament movie of the tests); 1.5 let noise peaks set
drifts of 180-330 nm on structureless frames.

Finer in time, and with an error per frame: after the RCC passes, the movie is cut into short
windows of ``fine_localizations`` localizations each (as many frames as the data need, at least
``fine_min_frames``), and each window, corrected by the trace so far, is correlated with a
reference render of all the other corrected localizations (the window's own subtracted, so it
does not pull the peak to zero shift). The window shifts are what the segment trace missed (a
wobble faster than the segments, the drift inside a segment); smoothed over three windows
(weights 1, 2, 1) and interpolated linearly, they are added to the trace. Their noise is read
from the data: the second difference of neighbouring windows ``r_k - (r_k-1 + r_k+1) / 2`` has
variance 1.5 sigma^2 (a smooth drift leaves almost nothing in it), so sigma is its robust std /
sqrt(1.5), but never below the RCC segments' error scaled to the window's localizations (on sparse
movies neighbouring windows share blinks, and the second difference alone said 1 nm against 2-3
nm true); the smoothing leaves 0.375 sigma^2, plus the smoothing and interpolation error of the
drift itself, bounded by a quarter of each window's second difference (curvature x h^2 / 8).
That per-frame error (``DriftTrace.sigma_frame_x_nm``, ``..._y_nm``) is what
:func:`add_drift_uncertainty` adds to every corrected row's sigma.

The drift of frame f is where the sample appears displaced in that frame relative to frame
0 (so ``drift[0] = 0``); correction subtracts it: ``x_corrected = x - drift_x[frame]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.interpolate import CubicSpline


MIN_CONTRAST = 2.5  # correlation peak over the search window's median (module docstring)


@dataclass
class DriftTrace:
    """Drift per frame (nm) and what it was measured from."""

    x_nm: np.ndarray  # [F]
    y_nm: np.ndarray  # [F]
    segment_frames: np.ndarray  # mean frame of each segment
    segment_x_nm: np.ndarray
    segment_y_nm: np.ndarray
    pairs_used: int
    pairs_total: int
    sigma_x_nm: float = 0.0  # 1-sigma error of a segment's drift, from the pair residuals
    sigma_y_nm: float = 0.0
    reason: str | None = None  # why the drift was not measured (then the trace is zero); None when it was
    sigma_frame_x_nm: np.ndarray | None = None  # [F] 1-sigma error of each frame's drift (fine pass); None: not made
    sigma_frame_y_nm: np.ndarray | None = None
    fine_windows: int = 0  # windows of the fine pass

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"frame": np.arange(len(self.x_nm)), "drift_x_nm": self.x_nm, "drift_y_nm": self.y_nm})


def _segments(frame: np.ndarray, n_frames: int, segment_frames: int, min_locs: int) -> list[tuple[int, int]]:
    bounds = list(range(0, n_frames, segment_frames)) + [n_frames]
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    counts = [int(np.count_nonzero((frame >= a) & (frame < b))) for a, b in segs]
    merged = True
    while merged and len(segs) > 1:  # merge the sparsest segment with its sparser neighbour
        merged = False
        i = int(np.argmin(counts))
        if counts[i] < min_locs:
            j = i - 1 if i == len(segs) - 1 or (i > 0 and counts[i - 1] <= counts[i + 1]) else i + 1
            lo, hi = min(i, j), max(i, j)
            segs[lo:hi + 1] = [(segs[lo][0], segs[hi][1])]
            counts[lo:hi + 1] = [counts[lo] + counts[hi]]
            merged = True
    return segs


def _peak(cc: np.ndarray, window: int) -> tuple[float, float, float]:
    """Sub-pixel (dy, dx) of the correlation maximum within +-window of zero shift, and its contrast."""
    h, w = cc.shape
    cy, cx = h // 2, w // 2
    win = cc[cy - window:cy + window + 1, cx - window:cx + window + 1]
    iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)
    iy, ix = int(np.clip(iy, 1, win.shape[0] - 2)), int(np.clip(ix, 1, win.shape[1] - 2))
    patch = np.log(np.maximum(win[iy - 1:iy + 2, ix - 1:ix + 2], 1e-12 * max(win.max(), 1e-30)))

    def vertex(m, c, p):
        d = m - 2 * c + p
        return 0.0 if d >= 0 else float(np.clip(0.5 * (m - p) / d, -1, 1))

    oy = vertex(patch[0, 1], patch[1, 1], patch[2, 1])
    ox = vertex(patch[1, 0], patch[1, 1], patch[1, 2])
    contrast = float(win.max() / (np.median(win) + 1e-30))
    return iy - window + oy, ix - window + ox, contrast


def estimate_drift(frame: np.ndarray, x_nm: np.ndarray, y_nm: np.ndarray, n_frames: int, *,
                   segment_frames: int = 200, pixel_nm: float = 20.0, blur_nm: float = 20.0,
                   max_drift_nm: float = 1000.0, min_localizations: int = 200,
                   reject_nm: float = 10.0, iterations: int = 3, fine: bool = True,
                   fine_localizations: int = 500, fine_min_frames: int = 5) -> DriftTrace:
    """Drift trace of a movie from its localizations by RCC (module docstring).

    Parameters
    ----------
    frame, x_nm, y_nm : arrays
        Localizations: 0-based frames and positions in nm (unlinked: more per segment).
    n_frames : int
        Frames of the movie (the trace's length).
    segment_frames : int
        Frames per segment (before sparse segments are merged).
    pixel_nm, blur_nm : float
        Render pixel and Gaussian blur of the segment images, nm.
    max_drift_nm : float
        Largest drift between two segments searched for.
    min_localizations : int
        Sparse segments are merged with a neighbour until each holds this many.
    reject_nm : float
        Pairs whose shift disagrees with the solution by more than this (and 3 robust
        standard deviations) are dropped, and the solve repeated.
    iterations : int
        RCC passes: each one measures what the previous ones left, on localizations already
        corrected, where the shifts are near zero and the sub-pixel peak has no bias (one
        pass leaves errors of a few nm that depend on the shift's fraction of a pixel).
    fine, fine_localizations, fine_min_frames
        The fine pass (module docstring): windows of this many localizations (and frames at
        least); it gives every frame its drift error. Skipped (constant error per segment)
        with fewer than 5 windows.

    Returns
    -------
    DriftTrace
    """
    frame = np.asarray(frame, np.int64)
    x, y = np.asarray(x_nm, np.float64), np.asarray(y_nm, np.float64)
    opts = dict(segment_frames=segment_frames, pixel_nm=pixel_nm, blur_nm=blur_nm, max_drift_nm=max_drift_nm,
                min_localizations=min_localizations, reject_nm=reject_nm)
    total = None
    for it in range(max(int(iterations), 1)):
        if total is None:
            step = _rcc(frame, x, y, n_frames, **opts)
            total = step
            if step.reason:  # not measured: nothing to refine
                return step
            opts["max_drift_nm"] = min(max_drift_nm, 8 * blur_nm)  # later passes: small residual shifts
            continue
        f = np.clip(frame, 0, n_frames - 1)
        step = _rcc(frame, x - total.x_nm[f], y - total.y_nm[f], n_frames, **opts)
        if step.reason:  # the residual shifts no longer correlate: keep what the earlier passes measured
            break
        total = DriftTrace(total.x_nm + step.x_nm, total.y_nm + step.y_nm, total.segment_frames,
                           total.segment_x_nm + np.interp(total.segment_frames, np.arange(n_frames), step.x_nm),
                           total.segment_y_nm + np.interp(total.segment_frames, np.arange(n_frames), step.y_nm),
                           step.pairs_used, step.pairs_total, step.sigma_x_nm, step.sigma_y_nm)
    if fine:
        total = _fine(frame, x, y, n_frames, total, fine_localizations, fine_min_frames, pixel_nm, blur_nm)
    return total


def _render_fft(x, y, x0, y0, h, w, pixel_nm, blur_nm):
    """rfft2 of the Gaussian-blurred histogram of (x, y) on the h x w grid of ``pixel_nm`` pixels from (x0, y0)."""
    img, _, _ = np.histogram2d(y, x, bins=(h, w), range=((y0, y0 + h * pixel_nm), (x0, x0 + w * pixel_nm)))
    return np.fft.rfft2(ndimage.gaussian_filter(img, blur_nm / pixel_nm))


def _fine(frame, x, y, n_frames, trace: DriftTrace, n_locs: int, min_frames: int, pixel_nm: float,
          blur_nm: float) -> DriftTrace:
    """The fine pass of :func:`estimate_drift` (module docstring); the trace unchanged with too few windows."""
    ok = np.isfinite(x) & np.isfinite(y)
    frame, x, y = frame[ok], x[ok], y[ok]
    f = np.clip(frame, 0, n_frames - 1)
    cx, cy = x - trace.x_nm[f], y - trace.y_nm[f]
    counts = np.bincount(f, minlength=n_frames)
    cum = np.cumsum(counts)
    bounds = [0]
    while bounds[-1] < n_frames:  # windows of n_locs localizations and min_frames frames at least
        a = bounds[-1]
        b = int(np.searchsorted(cum, (cum[a - 1] if a else 0) + n_locs)) + 1
        bounds.append(min(max(b, a + min_frames), n_frames))
    if len(bounds) > 2 and cum[-1] - cum[bounds[-2] - 1] < n_locs // 2:  # a short last window joins the one before
        bounds.pop(-2)
    if len(bounds) - 1 < 5:
        return trace
    max_shift = 8 * blur_nm  # as the later RCC passes: a window wide enough for the contrast test
    pad = max_shift + 3 * blur_nm
    x0, y0 = cx.min() - pad, cy.min() - pad
    w = int(np.ceil((cx.max() + pad - x0) / pixel_nm))
    h = int(np.ceil((cy.max() + pad - y0) / pixel_nm))
    window = int(min(np.ceil(max_shift / pixel_nm), h // 2 - 2, w // 2 - 2))
    order = np.argsort(f, kind="stable")
    ref = _render_fft(cx, cy, x0, y0, h, w, pixel_nm, blur_nm)
    centres, shifts = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo, hi = (cum[a - 1] if a else 0), cum[b - 1]
        sel = order[lo:hi]
        if len(sel) == 0:
            continue
        win = _render_fft(cx[sel], cy[sel], x0, y0, h, w, pixel_nm, blur_nm)
        cc = np.fft.fftshift(np.fft.irfft2(win * np.conj(ref - win), s=(h, w)))
        dy, dx, contrast = _peak(cc, window)
        if contrast >= MIN_CONTRAST:
            centres.append(float(f[sel].mean()))
            shifts.append((dx * pixel_nm, dy * pixel_nm))
    if len(centres) < 5:
        return trace
    t, r = np.array(centres), np.array(shifts)
    d2 = r[1:-1] - 0.5 * (r[:-2] + r[2:])
    noise = 1.4826 * np.median(np.abs(d2 - np.median(d2, 0)), 0) / np.sqrt(1.5)  # per axis
    # neighbouring windows share molecules (blinks across a border), which hides noise from d2: a window
    # is never trusted more than an RCC segment scaled to its localizations (shift error ~ 1 / sqrt(count))
    per_seg = len(x) / max(len(trace.segment_frames), 1)
    floor = np.array([trace.sigma_x_nm, trace.sigma_y_nm]) * np.sqrt(per_seg / (len(x) / len(t)))
    noise = np.maximum(noise, floor)
    smooth = r.copy()
    smooth[1:-1] = 0.25 * r[:-2] + 0.5 * r[1:-1] + 0.25 * r[2:]
    curv = np.abs(np.r_[d2[:1], d2, d2[-1:]]) / 4  # smoothing ([1, 2, 1] / 4 leaves d2 / 2) and interpolation error bound
    frames = np.arange(n_frames, dtype=np.float64)
    out = []
    for k in range(2):
        add = np.interp(frames, t, smooth[:, k])
        err = np.sqrt(0.375 * noise[k] ** 2 + np.interp(frames, t, curv[:, k]) ** 2)
        out.append((add, err))
    (ax, ex), (ay, ey) = out
    x_nm, y_nm = trace.x_nm + ax - ax[0], trace.y_nm + ay - ay[0]
    return DriftTrace(x_nm, y_nm, trace.segment_frames, np.interp(trace.segment_frames, frames, x_nm),
                      np.interp(trace.segment_frames, frames, y_nm), trace.pairs_used, trace.pairs_total,
                      trace.sigma_x_nm, trace.sigma_y_nm, None, ex, ey, len(t))


def _rcc(frame, x, y, n_frames, *, segment_frames, pixel_nm, blur_nm, max_drift_nm, min_localizations,
         reject_nm) -> DriftTrace:
    """One RCC pass (:func:`estimate_drift`)."""
    ok = np.isfinite(x) & np.isfinite(y)
    frame, x, y = frame[ok], x[ok], y[ok]
    segs = _segments(frame, n_frames, int(segment_frames), int(min_localizations))
    zeros = np.zeros(n_frames)

    def unmeasured(reason: str, pairs_used: int = 0, pairs_total: int = 0) -> DriftTrace:
        return DriftTrace(zeros, zeros.copy(), np.array([0.0]), np.zeros(1), np.zeros(1), pairs_used, pairs_total,
                          reason=reason)

    if len(segs) < 2 or len(x) == 0:
        return unmeasured(f"{len(x)} localizations in {n_frames} frames make fewer than two time segments of "
                          f"{int(min_localizations)} localizations (RCC needs two or more)")
    pad = max_drift_nm + 3 * blur_nm
    x0, y0 = x.min() - pad, y.min() - pad
    w = int(np.ceil((x.max() + pad - x0) / pixel_nm))
    h = int(np.ceil((y.max() + pad - y0) / pixel_nm))
    window = int(min(np.ceil(max_drift_nm / pixel_nm), h // 2 - 2, w // 2 - 2))
    ffts, counts, centres = [], [], []
    for a, b in segs:
        sel = (frame >= a) & (frame < b)
        ffts.append(_render_fft(x[sel], y[sel], x0, y0, h, w, pixel_nm, blur_nm))
        counts.append(int(sel.sum()))
        centres.append(float(frame[sel].mean()) if sel.any() else 0.5 * (a + b - 1))
    n = len(segs)
    rows, shifts, weights = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            cc = np.fft.fftshift(np.fft.irfft2(ffts[j] * np.conj(ffts[i]), s=(h, w)))
            dy, dx, contrast = _peak(cc, window)
            rows.append((i, j))
            shifts.append((dx * pixel_nm, dy * pixel_nm))  # drift_j - drift_i
            weights.append(0.0 if contrast < MIN_CONTRAST or min(counts[i], counts[j]) == 0 else
                           1.0 / (1.0 / counts[i] + 1.0 / counts[j]))
    shifts, weights = np.array(shifts), np.array(weights)
    design = np.zeros((len(rows) + 1, n))
    for k, (i, j) in enumerate(rows):
        design[k, i], design[k, j] = -1.0, 1.0
    design[-1, 0] = 1.0  # drift of the first segment = 0 (the trace is re-zeroed at frame 0 below)
    use = weights > 0
    if not use.any() or np.linalg.matrix_rank(design[:-1][use]) < n - 1:  # some segment is tied to no other by a clear peak
        return unmeasured(f"only {int(use.sum())} of {len(rows)} segment pairs have a clear correlation peak "
                          f"(over {MIN_CONTRAST:g}x the window's median), too few to tie the {n} segments together: "
                          "no structure seen in more than one segment", int(use.sum()), len(rows))
    for _ in range(10):
        wts = np.r_[np.where(use, weights, 0.0), weights.max() if weights.max() > 0 else 1.0]
        sw = np.sqrt(wts)[:, None]
        sol, *_ = np.linalg.lstsq(design * sw, np.vstack([shifts, [[0.0, 0.0]]]) * sw, rcond=None)
        resid = np.linalg.norm(design[:-1] @ sol - shifts, axis=1)
        scale = 1.4826 * np.median(resid[use]) if use.any() else 0.0
        bad = use & (resid > max(reject_nm, 3 * scale))
        if not bad.any():
            break
        worst = np.argmax(np.where(bad, resid, -1))
        use[worst] = False  # one at a time: a wrong pair pulls on the others' residuals too
        if np.linalg.matrix_rank(design[:-1][use]) < n - 1:
            use[worst] = True
            break
    # A segment's error: its pairs disagree by both segments' errors (var = 2 var_seg). Not the
    # solve's covariance: the error that matters is which molecules a segment holds, common to
    # all of its pairs, so it does not average down over them (measured on simulated movies).
    r = (design[:-1] @ sol - shifts)[use]
    dof = max(len(r) - (n - 1), 1)
    seg_sigma = np.sqrt(np.sum(r ** 2, 0) / dof / 2) if len(r) else np.zeros(2)
    t = np.array(centres)
    frames = np.arange(n_frames, dtype=np.float64)
    trace, seg = [], []
    for d in (sol[:, 0], sol[:, 1]):
        if n >= 3:
            spline = CubicSpline(t, d, bc_type="natural")
            v = spline(np.clip(frames, t[0], t[-1]))
            v = np.where(frames < t[0], d[0] + spline(t[0], 1) * (frames - t[0]), v)
            v = np.where(frames > t[-1], d[-1] + spline(t[-1], 1) * (frames - t[-1]), v)
        else:
            slope = (d[1] - d[0]) / max(t[1] - t[0], 1e-9)
            v = d[0] + slope * (frames - t[0])
        trace.append(v - v[0])
        seg.append(d - v[0])
    return DriftTrace(trace[0], trace[1], t, seg[0], seg[1], int(use.sum()), len(rows), float(seg_sigma[0]),
                      float(seg_sigma[1]))


def apply_drift(locs: pd.DataFrame, drift: DriftTrace) -> pd.DataFrame:
    """Localizations with the drift of their frame subtracted (x_nm, y_nm; frames outside the trace clamp)."""
    f = np.clip(locs["frame"].to_numpy(np.int64), 0, len(drift.x_nm) - 1)
    return locs.assign(x_nm=locs["x_nm"].to_numpy(np.float64) - drift.x_nm[f],
                       y_nm=locs["y_nm"].to_numpy(np.float64) - drift.y_nm[f])


def add_drift_uncertainty(locs: pd.DataFrame, drift: DriftTrace) -> pd.DataFrame:
    """Sigmas with the drift estimate's error added in quadrature: each row's frame's (the fine
    pass's ``sigma_frame_*``; a linked row's middle frame, from ``frame`` and ``len``), or the
    segments' constant error where there is no fine pass.

    Apply after linking: the drift error is shared by a blink's frames, so it does not shrink
    as 1 / sqrt(n) with them.
    """
    out = locs.copy()
    f = out["frame"].to_numpy(np.int64) + ((out["len"].to_numpy(np.int64) - 1) // 2 if "len" in out.columns else 0)
    f = np.clip(f, 0, len(drift.x_nm) - 1)
    for axis, s, per_frame in (("x", drift.sigma_x_nm, drift.sigma_frame_x_nm),
                               ("y", drift.sigma_y_nm, drift.sigma_frame_y_nm)):
        col = f"sigma_{axis}_nm"
        if col in out.columns:
            s = per_frame[f] if per_frame is not None else s
            out[col] = np.sqrt(out[col].to_numpy(np.float64) ** 2 + s ** 2)
    return out


def write_drift(drift: DriftTrace, csv_path, png_path=None, title: str | None = None) -> list:
    """The drift trace as CSV (frame 0-based, drift_x_nm, drift_y_nm) and a plot of x and y against frame."""
    from pathlib import Path

    csv_path = Path(csv_path)
    drift.table().to_csv(csv_path, index=False, float_format="%.3f")
    written = [csv_path]
    if png_path is not None:
        from .plots import drift_figure

        drift_figure(drift, title=title).savefig(png_path)
        written.append(Path(png_path))
    return written
