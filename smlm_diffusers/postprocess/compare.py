"""Drift against a reference: Picasso's RCC undrift on the same table, and the residual of a trace.

Picasso (``picassosr``) works in camera pixels with pixel centres at integers; the table is
converted with :func:`~smlm_diffusers.io.picasso.picasso_locs` and Picasso's drift (pixels,
subtracted from ``x`` and ``y`` as ours is) is returned in nm as a :class:`DriftTrace`, so
both traces are applied and scored the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .drift import DriftTrace


def picasso_undrift(locs: pd.DataFrame, n_frames: int, shape: tuple[int, int], pixel_size_nm: float,
                    segment_frames: int = 200) -> DriftTrace:
    """Drift of ``locs`` by Picasso's ``postprocess.undrift`` (RCC), nm per frame.

    Parameters
    ----------
    locs : DataFrame
        frame (0-based), x_nm, y_nm, sigma_x_nm, sigma_y_nm (Picasso renders each localization
        as a Gaussian of its precision), photons, background.
    n_frames : int
        Frames of the movie.
    shape : (H, W)
        Camera pixels of a frame.
    pixel_size_nm : float
        Camera pixel, nm.
    segment_frames : int
        Frames per segment (Picasso's ``segmentation``).

    Returns
    -------
    DriftTrace with Picasso's trace (not re-zeroed: Picasso's drift has no fixed origin) and
    its segment centres; ``pairs_used`` and ``pairs_total`` count every pair (Picasso rejects none).
    """
    try:
        from picasso import postprocess as picasso_postprocess
    except ImportError as err:  # pragma: no cover - picassosr is a test dependency
        raise ImportError("picasso_undrift needs Picasso: pip install picassosr") from err
    import matplotlib

    matplotlib.use("Agg")  # Picasso imports pyplot
    from ..io.picasso import picasso_info, picasso_locs

    n_segments = int(np.round(n_frames / segment_frames))
    if n_segments < 4:  # its cubic spline through the segments
        raise ValueError(f"Picasso's undrift needs at least 4 segments: {n_frames} frames in segments of "
                         f"{segment_frames} make {n_segments}")
    table = pd.DataFrame(picasso_locs(locs, pixel_size_nm, 1.0))
    info = picasso_info(n_frames, shape[0], shape[1], pixel_size_nm)
    drift, _ = picasso_postprocess.undrift(table, info, int(segment_frames), display=False,
                                           segmentation_callback=lambda i: None, rcc_callback=lambda i: None)
    a = float(pixel_size_nm)
    x, y = drift["x"].to_numpy(np.float64) * a, drift["y"].to_numpy(np.float64) * a
    bounds = np.linspace(0, n_frames - 1, n_segments + 1, dtype=np.uint32).astype(np.float64)
    centres = (bounds[1:] + bounds[:-1]) / 2
    frames = np.arange(n_frames)
    pairs = n_segments * (n_segments - 1) // 2
    return DriftTrace(x, y, centres, np.interp(centres, frames, x), np.interp(centres, frames, y), pairs, pairs)


def drift_residual(estimate_nm: np.ndarray, truth_nm: np.ndarray, segment_frames: int = 200) -> dict:
    """How far a drift trace is from the truth, in nm, after removing the constant offset.

    Parameters
    ----------
    estimate_nm, truth_nm : arrays [F, 2]
        Drift (x, y) per frame, nm. Only differences matter: the mean of ``estimate - truth``
        over the movie (a global shift of the corrected image) is removed first.
    segment_frames : int
        Length of the segments of ``segment_rms_nm``.

    Returns
    -------
    dict: ``rms_nm`` (per frame, sqrt(mean |r|^2) over frames and both axes summed),
    ``segment_rms_nm`` (the same over the mean residual of each ``segment_frames`` segment, the
    last one possibly shorter), ``max_nm`` (largest |r| of a frame).
    """
    est, truth = np.asarray(estimate_nm, np.float64), np.asarray(truth_nm, np.float64)
    if est.shape != truth.shape or est.ndim != 2 or est.shape[1] != 2:
        raise ValueError(f"estimate and truth must both be [F, 2], got {est.shape} and {truth.shape}")
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
    r = est - truth
    r -= r.mean(axis=0)
    seg = np.array([r[a:a + segment_frames].mean(axis=0) for a in range(0, len(r), segment_frames)])
    return {"rms_nm": float(np.sqrt(np.mean(np.sum(r ** 2, 1)))),
            "segment_rms_nm": float(np.sqrt(np.mean(np.sum(seg ** 2, 1)))),
            "max_nm": float(np.sqrt(np.sum(r ** 2, 1)).max())}


def picasso_link(locs: pd.DataFrame, n_frames: int, shape: tuple[int, int], pixel_size_nm: float,
                 r_max_nm: float = 10.0, max_dark_time: int = 3) -> pd.DataFrame:
    """``locs`` linked by Picasso's ``postprocess.link`` (defaults: its GUI's 10 nm and 3 dark frames),
    back in this package's columns: frame, x_nm, y_nm, sigma_x_nm, sigma_y_nm, photons, len, n.

    Picasso drops blinks that touch the movie's first or last frame (``remove_ambiguous_lengths``).
    """
    from picasso import postprocess as picasso_postprocess

    from ..io.picasso import picasso_info, picasso_locs

    a = float(pixel_size_nm)
    table = pd.DataFrame(picasso_locs(locs, a, 1.0))
    info = picasso_info(n_frames, shape[0], shape[1], a)
    out = picasso_postprocess.link(table, info, r_max=r_max_nm / a, max_dark_time=int(max_dark_time))
    return pd.DataFrame({"frame": out["frame"].to_numpy(np.int64), "x_nm": (out["x"].to_numpy(np.float64) + 0.5) * a,
                         "y_nm": (out["y"].to_numpy(np.float64) + 0.5) * a,
                         "sigma_x_nm": out["lpx"].to_numpy(np.float64) * a,
                         "sigma_y_nm": out["lpy"].to_numpy(np.float64) * a,
                         "photons": out["photons"].to_numpy(np.float64), "len": out["len"].to_numpy(np.int64),
                         "n": out["n"].to_numpy(np.int64)})
