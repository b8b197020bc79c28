"""Fourier ring correlation (FRC) resolution of a localization table (Nieuwenhuizen et al., Nat. Methods 2013).

The localizations are split at random into two halves (seeded), each rendered as a
histogram of ``pixel_nm`` pixels over the same field and apodized by a Tukey window at the
edges; the FRC of ring q is ``sum F1 F2* / sqrt(sum |F1|^2 sum |F2|^2)`` over the ring, smoothed
over a few rings, and the resolution is 1 / the first spatial frequency where it falls below
1/7. Rows that are the same molecule seen twice (unlinked blinks, repeated blinks) correlate
across halves and make the number optimistic: link first.

The FRC is not measured (``resolution_nm`` NaN, ``reason`` says why) with fewer than
:data:`MIN_LOCALIZATIONS` localizations, where the curve never falls below 1/7, or where it falls
below it at a scale coarser than a tenth of the field (:data:`MAX_FIELD_FRACTION`): two halves of
molecules seen once each (a few frames) correlate only through the field's outline, and that crossing
is no resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal.windows import tukey

FRC_THRESHOLD = 1.0 / 7.0
MIN_LOCALIZATIONS = 1000
MAX_FIELD_FRACTION = 0.1


@dataclass
class FRCResult:
    resolution_nm: float  # NaN when not measured
    frequency_per_nm: np.ndarray
    frc: np.ndarray
    reason: str | None = None  # why it was not measured (None when it was)


def frc_resolution(x_nm: np.ndarray, y_nm: np.ndarray, *, pixel_nm: float = 5.0, seed: int = 0,
                   smooth_rings: int = 5, max_size: int = 2048) -> FRCResult:
    """FRC resolution (nm) of the localizations at ``x_nm``, ``y_nm`` (module docstring).

    The render pixel is ``pixel_nm``, or coarser where the field would need more than
    ``max_size`` pixels a side (bounded memory on large fields).
    """
    x, y = np.asarray(x_nm, np.float64), np.asarray(y_nm, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < MIN_LOCALIZATIONS:
        return FRCResult(float("nan"), np.zeros(0), np.zeros(0),
                         f"too few localizations ({len(x)} < {MIN_LOCALIZATIONS})")
    half = np.random.default_rng(seed).random(len(x)) < 0.5
    x0, y0 = x.min(), y.min()
    pixel_nm = max(float(pixel_nm), max(x.max() - x0, y.max() - y0) / (max_size - 2))
    size = int(np.ceil(max(x.max() - x0, y.max() - y0) / pixel_nm)) + 1
    size += size % 2
    rng_ = ((y0, y0 + size * pixel_nm), (x0, x0 + size * pixel_nm))
    win = np.outer(tukey(size, 0.125), tukey(size, 0.125))
    f = [np.fft.fftshift(np.fft.fft2(np.histogram2d(y[m], x[m], bins=size, range=rng_)[0] * win))
         for m in (half, ~half)]
    k = np.arange(size) - size // 2
    ring = np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64).ravel()
    n_rings = size // 2
    sel = ring < n_rings
    num = np.bincount(ring[sel], (f[0] * np.conj(f[1])).real.ravel()[sel], n_rings)
    p1 = np.bincount(ring[sel], (np.abs(f[0]) ** 2).ravel()[sel], n_rings)
    p2 = np.bincount(ring[sel], (np.abs(f[1]) ** 2).ravel()[sel], n_rings)
    curve = num / np.sqrt(p1 * p2 + 1e-30)
    if smooth_rings > 1:
        kernel = np.ones(smooth_rings) / smooth_rings
        curve = np.convolve(np.pad(curve, smooth_rings // 2, mode="edge"), kernel, mode="valid")[:n_rings]
    q = np.arange(n_rings) / (size * pixel_nm)
    below = np.flatnonzero((curve < FRC_THRESHOLD) & (np.arange(n_rings) > 0))
    if len(below) == 0:
        return FRCResult(float("nan"), q, curve, f"the FRC stays above 1/7 up to the render's finest frequency "
                                                 f"({pixel_nm:.1f} nm pixels)")
    i = int(below[0])
    c0, c1 = curve[i - 1], curve[i]
    qc = q[i - 1] + (q[i] - q[i - 1]) * (c0 - FRC_THRESHOLD) / (c0 - c1) if c0 != c1 else q[i]
    field = max(x.max() - x0, y.max() - y0)
    if not qc > 0 or 1.0 / qc > MAX_FIELD_FRACTION * field:
        return FRCResult(float("nan"), q, curve,
                         f"the two halves correlate only at the scale of the field ({1.0 / qc if qc > 0 else field:.0f} "
                         f"nm of {field:.0f} nm): the same structures are not seen often enough (more frames)")
    return FRCResult(float(1.0 / qc), q, curve)
