"""PSF width, background and emitter brightness of a raw SMLM movie, from its isolated spots.

For setting up a training config (``train/configs/*.yaml``, ``data:``) for a new
microscope: the simulator must match the camera's PSF sigma, background and photon range.

Method
------
1. ADU -> photo-electrons with the camera model (``(ADU - offset) / gain``).
2. Candidates: local maxima (3x3) of the Gaussian-smoothed, median-subtracted frame. The
   noise of the smoothed frame is estimated robustly per frame (1.4826 x median absolute
   deviation: emitters are a small fraction of the pixels), and a spot counts when its
   smoothed peak is ``threshold_snr`` x that noise above the background.
3. Bright spots are kept when no other candidate (down to ``isolation_snr``) lies within
   ``isolation_px``, and their fit window lies inside the frame.
4. Each window is fitted with a pixel-integrated Gaussian plus a flat offset (paper eq. 2;
   parameters x, y, photons, background, sigma) by Poisson maximum likelihood with the
   read noise folded in (data and model shifted by ``read_noise^2``, the Poisson-normal
   approximation of docs/conventions.md), using vectorized, damped Fisher scoring (Levenberg-Marquardt
   on the Fisher information) over all spots at once.
5. Fits that did not converge, left the window centre, or have a sigma more than three
   robust standard deviations from the median (an unresolved pair fits as one wide, bright
   spot) are dropped; medians (and quantiles) of the rest are reported. Dense frames, where
   most spots overlap, still bias sigma and photons up: use sparse frames.

Pixel geometry follows docs/conventions.md: pixel (row i, column j) covers [j, j + 1) x [i, i + 1)
in pixel units, so the image's outer top-left corner is (0, 0).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from .optics.gaussian import integrated_gaussian_np
from .simulation.camera import Camera

# fewest kept fits an estimate is reported from (``smlm-diffusers estimate`` refuses fewer): the median of
# fewer fits moves by a large fraction of the spread of the sigmas, and the sigma outlier cut needs a few
MIN_SPOTS = 20


def _integrated_gaussian(edges: np.ndarray, centre: np.ndarray, sigma: np.ndarray):
    """Pixel fractions [K, w] and their derivatives w.r.t. the centre and sigma (numpy).

    ``edges`` [w + 1] pixel edges ``0 .. w``, ``centre`` and ``sigma`` [K]: the pixel-integrated
    Gaussian of :mod:`smlm_diffusers.optics.gaussian`.
    """
    frac, d_centre, d_sigma = integrated_gaussian_np(centre, sigma, len(edges) - 1)
    return frac.T, d_centre.T, d_sigma.T


def _model(theta: np.ndarray, edges: np.ndarray, jacobian: bool = True):
    """Expected photons [K, w, w] of parameters [K, 5] = (x, y, photons, background, sigma)."""
    x, y, n, b, s = theta.T
    ex, dex, dsx = _integrated_gaussian(edges, x, s)
    ey, dey, dsy = _integrated_gaussian(edges, y, s)
    psf = ey[:, :, None] * ex[:, None, :]
    mu = n[:, None, None] * psf + b[:, None, None]
    if not jacobian:
        return mu, None
    nn = n[:, None, None]
    jac = np.stack(
        [
            nn * ey[:, :, None] * dex[:, None, :],
            nn * dey[:, :, None] * ex[:, None, :],
            psf,
            np.ones_like(psf),
            nn * (dsy[:, :, None] * ex[:, None, :] + ey[:, :, None] * dsx[:, None, :]),
        ],
        axis=-1,
    )  # [K, w, w, 5]
    return mu, jac


def _log_likelihood(data_shifted: np.ndarray, mu_shifted: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood per spot (constants dropped) of shifted data and model."""
    return (data_shifted * np.log(mu_shifted) - mu_shifted).sum(axis=(1, 2))


def fit_spots(
    windows: np.ndarray,
    read_noise: float = 0.0,
    sigma_guess_px: float = 1.0,
    n_iter: int = 50,
    read_var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit pixel-integrated Gaussians + offset to spot windows by Poisson MLE.

    Parameters
    ----------
    windows : array [K, w, w]
        Photo-electrons per pixel, a spot near the centre of each window.
    read_noise : float
        Camera read noise, photo-electrons rms (folded in as a ``read_noise^2`` shift).
    sigma_guess_px : float
        Start value of the PSF sigma, pixels.
    n_iter : int
        Levenberg-Marquardt iterations (all spots together).
    read_var : array [K, w, w], optional
        Each pixel's read-noise variance, photo-electrons^2 (an sCMOS camera's maps), instead of
        ``read_noise**2``.

    Returns
    -------
    theta : array [K, 5]
        ``x, y`` (pixels inside the window, edge convention: 0 is the window's outer
        corner), ``photons`` (total, over the whole plane), ``background`` (photons per
        pixel), ``sigma`` (pixels).
    converged : bool array [K]
        The last iterations changed the likelihood by less than 1e-6 per spot and every
        parameter is finite.
    """
    data = np.asarray(windows, dtype=np.float64)
    k, w, _ = data.shape
    edges = np.arange(w + 1, dtype=np.float64)
    rn2 = float(read_noise) ** 2 if read_var is None else np.asarray(read_var, np.float64).reshape(data.shape)
    floor = 1e-3  # smallest shifted expectation, keeps log(mu) finite
    b_floor = floor - (rn2 if read_var is None else rn2.min(axis=(1, 2)))

    # start: background from the window's rim, photons from the excess, centroid of 3x3
    rim = np.concatenate([data[:, 0, :], data[:, -1, :], data[:, 1:-1, 0], data[:, 1:-1, -1]], axis=1)
    b0 = np.median(rim, axis=1)
    excess = (data - b0[:, None, None]).sum(axis=(1, 2))
    c = w // 2
    core = np.clip(data[:, c - 1:c + 2, c - 1:c + 2] - b0[:, None, None], 0, None) + 1e-9
    offs = np.array([-1.0, 0.0, 1.0])
    x0 = c + 0.5 + (core.sum(axis=1) * offs).sum(axis=1) / core.sum(axis=(1, 2))
    y0 = c + 0.5 + (core.sum(axis=2) * offs).sum(axis=1) / core.sum(axis=(1, 2))
    theta = np.stack([x0, y0, np.maximum(excess, 1.0), b0, np.full(k, float(sigma_guess_px))], axis=1)

    def clamp(t):
        t[:, 0:2] = np.clip(t[:, 0:2], 0.0, float(w))
        t[:, 2] = np.maximum(t[:, 2], 1.0)
        t[:, 3] = np.maximum(t[:, 3], b_floor)
        t[:, 4] = np.clip(t[:, 4], 0.2, float(w))
        return t

    theta = clamp(theta)
    d_shift = data + rn2
    mu, jac = _model(theta, edges)
    ll = _log_likelihood(d_shift, np.maximum(mu + rn2, floor))
    lam = np.full(k, 1e-3)
    change = np.full(k, np.inf)
    eye = np.eye(5)
    for _ in range(n_iter):
        mu_s = np.maximum(mu + rn2, floor)
        wgt = 1.0 / mu_s
        jf = jac.reshape(k, w * w, 5)
        grad = np.einsum("kpi,kp->ki", jf, ((d_shift - mu_s) * wgt).reshape(k, -1))
        fisher = np.einsum("kpi,kp,kpj->kij", jf, wgt.reshape(k, -1), jf)
        diag = np.einsum("kii->ki", fisher)
        damped = fisher + lam[:, None, None] * (diag[:, :, None] * eye)
        try:
            step = np.linalg.solve(damped, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular spot: solve one by one, zero step for it
            step = np.zeros_like(grad)
            for i in range(k):
                try:
                    step[i] = np.linalg.solve(damped[i], grad[i])
                except np.linalg.LinAlgError:
                    pass
        step = np.nan_to_num(step)
        # trust region: at most half a pixel in x, y and a third of sigma per iteration
        step[:, 0:2] = np.clip(step[:, 0:2], -0.5, 0.5)
        step[:, 4] = np.clip(step[:, 4], -theta[:, 4] / 3, theta[:, 4] / 3)
        trial = clamp(theta + step)
        mu_t, jac_t = _model(trial, edges)
        ll_t = _log_likelihood(d_shift, np.maximum(mu_t + rn2, floor))
        better = np.isfinite(ll_t) & (ll_t >= ll)
        change = np.where(better, ll_t - ll, change)
        theta = np.where(better[:, None], trial, theta)
        mu = np.where(better[:, None, None], mu_t, mu)
        jac = np.where(better[:, None, None, None], jac_t, jac)
        ll = np.where(better, ll_t, ll)
        lam = np.clip(np.where(better, lam / 10, lam * 10), 1e-7, 1e7)
    converged = np.isfinite(theta).all(axis=1) & (change < 1e-6 * np.maximum(1.0, np.abs(ll)))
    return theta, converged


def find_spots(
    photons: np.ndarray,
    sigma_guess_px: float = 1.0,
    radius_px: int = 4,
    threshold_snr: float = 8.0,
    isolation_snr: float = 4.0,
    isolation_px: float | None = None,
) -> tuple[pd.DataFrame, int]:
    """Bright, isolated local maxima of frames in photons [F, H, W].

    Returns a table (frame, row, col, snr) of the kept spots, whose windows of
    ``2 * radius_px + 1`` pixels lie inside the frame, and the number of bright candidates
    before the isolation and border checks.
    """
    bg = np.median(photons, axis=(1, 2), keepdims=True)
    smooth = ndimage.gaussian_filter(photons - bg, sigma=(0, sigma_guess_px, sigma_guess_px), mode="nearest")
    centre = np.median(smooth, axis=(1, 2), keepdims=True)
    noise = 1.4826 * np.median(np.abs(smooth - centre), axis=(1, 2), keepdims=True)
    noise = np.maximum(noise, 1e-6)
    snr = (smooth - centre) / noise
    peaks = (smooth == ndimage.maximum_filter(smooth, size=(1, 3, 3), mode="nearest")) & (snr > isolation_snr)
    bright = peaks & (snr > threshold_snr)
    n_bright = int(bright.sum())
    # isolation: no other candidate in a disc of radius isolation_px around a bright spot
    d = float(2 * radius_px if isolation_px is None else isolation_px)
    r = int(math.floor(d))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = ((yy**2 + xx**2) <= d * d).astype(np.float32)[None]
    neighbours = ndimage.convolve(peaks.astype(np.float32), disc, mode="constant", cval=0.0)
    keep = bright & (neighbours < 1.5)
    h, w = photons.shape[1:]
    inside = np.zeros((h, w), dtype=bool)
    inside[radius_px:h - radius_px, radius_px:w - radius_px] = True
    keep &= inside[None]
    f, i, j = np.nonzero(keep)
    return pd.DataFrame({"frame": f, "row": i, "col": j, "snr": snr[f, i, j]}), n_bright


def estimate_psf(
    frames_adu,
    camera: Camera | None = None,
    sigma_guess_px: float = 1.0,
    radius_px: int | None = None,
    threshold_snr: float = 8.0,
    isolation_snr: float = 4.0,
    isolation_px: float | None = None,
    max_spots: int = 5000,
    n_iter: int = 50,
    seed: int = 0,
) -> dict:
    """Estimate PSF sigma, background and photons per emitter from raw frames.

    Parameters
    ----------
    frames_adu : array [F, H, W] or [H, W]
        Raw camera frames, ADU. Sparse frames (few emitters, well separated) work best.
    camera : Camera, optional
        Offset, gain, read noise and pixel size; default the paper's camera (``Camera()``).
        ``qe`` is not applied: photons here are detected photo-electrons.
    sigma_guess_px : float
        Rough PSF sigma, camera pixels: smoothing for detection and the fit's start value.
        When the estimate comes out much wider than the fit window allows, the estimate is
        repeated once with a window sized for it.
    radius_px : int, optional
        Fit window half-width (window ``2 r + 1``); default ``max(3, ceil(3.5 sigma))``.
    threshold_snr : float
        Smoothed peak height over the smoothed frame's robust noise for a spot to be fitted.
    isolation_snr, isolation_px : float
        A spot is isolated when no other local maximum above ``isolation_snr`` lies within
        ``isolation_px`` pixels (default ``2 r``).
    max_spots : int
        At most this many spots are fitted (a seeded random subset of the isolated ones).
    n_iter : int
        Fit iterations.
    seed : int
        Seed of the subset choice.

    Returns
    -------
    dict
        ``sigma_px``, ``sigma_nm``: median fitted PSF sigma; ``sigma_px_iqr``: its
        interquartile range; ``background``: median fitted local background, photons per
        pixel; ``background_frame_median``: median over frames of each frame's median
        pixel, photons; ``photons``: median photons per fitted spot (total, the Gaussian's
        integral) with ``photons_p10``, ``photons_p90``; ``n_frames``; ``n_candidates``
        (bright local maxima); ``n_isolated`` (isolated, away from borders); ``n_spots``
        (fits kept: converged, position plausible, sigma not an outlier); ``radius_px``; ``spots``: a
        DataFrame of the kept fits (frame, x_px, y_px in frame pixels with the edge
        convention, photons, background, sigma_px). Values are NaN when no spot is found; an
        estimate of fewer than :data:`MIN_SPOTS` spots is too noisy to use (the CLI refuses it).
    """
    camera = camera or Camera()
    frames = np.asarray(frames_adu, dtype=np.float32)  # float32 for detection; fits run in float64
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.size == 0:
        raise ValueError(f"frames must be [H, W] or [F, H, W], got shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite values")
    if sigma_guess_px <= 0:
        raise ValueError(f"sigma_guess_px must be > 0, got {sigma_guess_px}")
    photons = np.asarray(camera.adu_to_photons(frames), dtype=np.float32)  # each pixel's offset and gain with maps

    result = _estimate(photons, camera, sigma_guess_px, radius_px, threshold_snr, isolation_snr, isolation_px,
                       max_spots, n_iter, seed)
    # a PSF much wider than the guess: repeat once with a window (and smoothing) sized for it
    if radius_px is None and np.isfinite(result["sigma_px"]) and \
            math.ceil(3.5 * result["sigma_px"]) > result["radius_px"]:
        result = _estimate(photons, camera, float(result["sigma_px"]), None, threshold_snr, isolation_snr,
                           isolation_px, max_spots, n_iter, seed)
    return result


def _estimate(photons, camera, sigma_guess_px, radius_px, threshold_snr, isolation_snr, isolation_px, max_spots,
              n_iter, seed) -> dict:
    f, h, w = photons.shape
    r = int(radius_px) if radius_px is not None else max(3, math.ceil(3.5 * sigma_guess_px))
    if 2 * r + 1 > min(h, w):
        raise ValueError(f"frames of {h} x {w} pixels are too small for fit windows of {2 * r + 1} pixels")
    read_var = camera.read_variance() if camera.has_maps and camera.maps.variance is not None else None
    detect = photons
    if read_var is not None:  # noisy pixels of an sCMOS weighed down for detection: each pixel in its noise's units
        level = np.median(photons, axis=(1, 2), keepdims=True).clip(0.0)
        detect = level + (photons - level) * np.sqrt((level + camera.read_noise**2) / (level + read_var))
    spots, n_bright = find_spots(detect.astype(np.float32), sigma_guess_px, r, threshold_snr, isolation_snr,
                                 isolation_px)
    n_isolated = len(spots)
    if len(spots) > max_spots:
        rng = np.random.default_rng(seed)
        spots = spots.iloc[np.sort(rng.choice(len(spots), max_spots, replace=False))].reset_index(drop=True)
    frame_bg = float(np.median(np.median(photons, axis=(1, 2)).astype(np.float64)))
    out = {"n_frames": f, "n_candidates": n_bright, "n_isolated": n_isolated, "radius_px": r,
           "background_frame_median": frame_bg}
    table = pd.DataFrame(columns=["frame", "x_px", "y_px", "photons", "background", "sigma_px"])
    if len(spots):
        fi, ri, ci = (spots[c].to_numpy() for c in ("frame", "row", "col"))
        offs = np.arange(-r, r + 1)
        rows = ri[:, None, None] + offs[None, :, None]
        cols = ci[:, None, None] + offs[None, None, :]
        windows = photons[fi[:, None, None], rows, cols].astype(np.float64)
        theta, converged = fit_spots(windows, camera.read_noise, sigma_guess_px, n_iter,
                                     None if read_var is None else read_var[rows, cols])
        x, y, n, b, s = theta.T
        centre = r + 0.5
        ok = (converged & (s > 0.3) & (s < r) & (n > 0)
              & (np.abs(x - centre) < 1.5) & (np.abs(y - centre) < 1.5))
        if ok.sum() >= 5:
            # unresolved pairs fit as one wide, bright spot: drop sigma outliers (robust z > 3)
            med = np.median(s[ok])
            spread = max(3 * 1.4826 * np.median(np.abs(s[ok] - med)), 0.05 * med)
            ok &= np.abs(s - med) <= spread
        table = pd.DataFrame({
            "frame": fi[ok].astype(np.int64),
            "x_px": (ci[ok] - r + x[ok]).astype(np.float64),
            "y_px": (ri[ok] - r + y[ok]).astype(np.float64),
            "photons": n[ok],
            "background": b[ok],
            "sigma_px": s[ok],
        })
    nan = float("nan")
    if len(table):
        sig = table["sigma_px"].to_numpy()
        ph = table["photons"].to_numpy()
        q25, q75 = np.percentile(sig, [25, 75])
        out |= {
            "sigma_px": float(np.median(sig)),
            "sigma_px_iqr": float(q75 - q25),
            "background": float(np.median(table["background"])),
            "photons": float(np.median(ph)),
            "photons_p10": float(np.percentile(ph, 10)),
            "photons_p90": float(np.percentile(ph, 90)),
        }
    else:
        out |= {k: nan for k in ("sigma_px", "sigma_px_iqr", "background", "photons", "photons_p10", "photons_p90")}
    out["sigma_nm"] = out["sigma_px"] * camera.pixel_size_nm
    out["n_spots"] = len(table)
    out["spots"] = table
    return out
