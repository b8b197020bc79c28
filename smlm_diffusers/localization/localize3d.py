"""3D localization of sparse frames: detections (a simple detector, or given seeds such as the 2D
network's), then the 3D Poisson MLE of :func:`smlm_diffusers.localization.spot_fit.fit_3d` on the raw
frame and the CRLB at the fit as each molecule's sigma.

The table (nm, frames 0-based, docs/conventions.md geometry) has ``frame, x_nm, y_nm, z_nm, photons,
background, sigma_x_nm, sigma_y_nm, sigma_z_nm``; positions are the emitter's, the PSF's wobble
removed. Pixels of a window outside the frame are filled with its median, so edge emitters fit too;
two detections whose fits meet (closer than a pixel, same frame) count once, the brighter kept.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from ..columns import COLUMNS_3D, empty_table
from ..optics import Optics
from .spot_fit import fit_3d, fit_elliptical, seed_z


def detect(photons: np.ndarray, sigma_px: float = 1.5, threshold_snr: float = 6.0, min_distance_px: int = 2):
    """(frame, row, col) of local maxima of the smoothed, background-subtracted frames [F, H, W] above
    ``threshold_snr`` noise units (wide, astigmatic spots too: smoothing by ``sigma_px``).

    The noise is the pixel noise (robust spread of neighbouring pixels' differences, which wide spots
    barely change; an EMCCD's excess noise included) times the smoothing kernel's norm,
    1 / (2 sqrt(pi) sigma_px): a frame crowded with defocused spots keeps its threshold.
    """
    bg = np.median(photons, axis=(1, 2), keepdims=True)
    smooth = ndimage.gaussian_filter(photons - bg, sigma=(0, sigma_px, sigma_px), mode="nearest")
    centre = np.median(smooth, axis=(1, 2), keepdims=True)
    diff = np.diff(photons, axis=2).reshape(len(photons), -1)
    mad = np.median(np.abs(diff - np.median(diff, axis=1, keepdims=True)), axis=1)
    noise = np.maximum(1.4826 * mad / np.sqrt(2.0) / (2.0 * np.sqrt(np.pi) * sigma_px), 1e-6)[:, None, None]
    size = 2 * min_distance_px + 1
    peaks = (smooth == ndimage.maximum_filter(smooth, size=(1, size, size), mode="nearest"))
    peaks &= (smooth - centre) / noise > threshold_snr
    return np.nonzero(peaks)


def _windows(photons, frame, row, col, radius):
    """Windows [K, R, R] around (row, col), pixels outside the frame filled with the window's median and masked."""
    f_, h, w = photons.shape
    offs = np.arange(-radius, radius + 1)
    rr, cc = row[:, None, None] + offs[None, :, None], col[:, None, None] + offs[None, None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    win = photons[frame[:, None, None], rr.clip(0, h - 1), cc.clip(0, w - 1)]
    return win, inside


def localize_3d(frames_adu, optics: Optics, seeds: pd.DataFrame | None = None, threshold_snr: float = 6.0,
                radius_px: int | None = None, min_photons: float = 50.0, min_snr: float = 5.0,
                extra_starts_nm: tuple = (), detect_too: bool = True, neighbours: bool = True) -> pd.DataFrame:
    """3D localizations of frames [F, H, W] (ADU) under ``optics`` (its PSF must be 3D; its camera's per-pixel
    maps, if any, give each pixel's offset, gain and read noise to the fits).

    ``seeds`` (frame, x_nm, y_nm, optionally z_nm: a 3D network's, :func:`network_seeds_3d`), e.g. the
    network's detections, are fitted, with the detector's spots too unless ``detect_too`` is False (a 2D
    network may miss defocused spots); a seed's z_nm starts its fit (else the spot's width ratio).
    A fit is kept where its photons are over ``min_photons`` and ``min_snr`` times their own bound
    (photons / sqrt(CRLB_photons): a seed in plain background fits a few hundred photons at an SNR
    near 2) and its z lies within the PSF's calibrated range (50 nm of slack). With ``neighbours``,
    each kept molecule is fitted once more in its window less the other kept molecules' expected
    photons (defocused spots reach far: at 0.3 molecules per um^2 a window holds about one more).
    """
    psf, cam = optics.psf, optics.camera
    if psf.ndim != 3:
        raise ValueError("localize_3d needs a 3D PSF (optics.psf.ndim == 3)")
    photons = np.asarray(cam.adu_to_photons(np.asarray(frames_adu, np.float64)))  # per pixel with maps
    if photons.ndim == 2:
        photons = photons[None]
    if radius_px is None:
        sx, sy = psf.widths(torch.tensor(psf.z_range_nm, dtype=torch.float64))
        radius_px = int(min(8, max(4, math.ceil(2.5 * float(torch.maximum(sx, sy).max())))))
    a = cam.pixel_size_nm
    frame, row, col = detect(photons, psf.sigma_px, threshold_snr) if seeds is None or detect_too else ((),) * 3
    if seeds is not None:  # the network's detections, with the detector's where it missed (merged after the fit)
        frame = np.r_[seeds["frame"].to_numpy(np.int64), frame].astype(np.int64)
        row = np.r_[np.floor(seeds["y_nm"].to_numpy() / a), row].astype(np.int64)
        col = np.r_[np.floor(seeds["x_nm"].to_numpy() / a), col].astype(np.int64)
    if not len(frame):
        return empty_table(COLUMNS_3D)
    z0 = None
    if seeds is not None and "z_nm" in seeds.columns:  # the network's z for its seeds, the widths' for the rest
        win = _filled_windows(photons, frame, row, col, radius_px)
        ell = fit_elliptical(win, cam.read_noise, psf.sigma_px, n_iter=30,
                             read_var=_read_var_windows(cam, frame, row, col, radius_px))
        z0 = seed_z(psf, ell.theta[:, 4], ell.theta[:, 5])
        z0[:len(seeds)] = seeds["z_nm"].to_numpy(np.float64)
    keep = dict(min_photons=min_photons, min_snr=min_snr, extra_starts_nm=extra_starts_nm)
    out = _merge_duplicates(_fit(photons, frame, row, col, z0, optics, radius_px, **keep), a)
    if neighbours and len(out) > 1:
        f, r, c = (out["frame"].to_numpy(np.int64), np.floor(out["y_nm"].to_numpy() / a).astype(np.int64),
                   np.floor(out["x_nm"].to_numpy() / a).astype(np.int64))
        others = _neighbour_photons(out, f, r, c, radius_px, optics)
        out = _merge_duplicates(_fit(photons, f, r, c, out["z_nm"].to_numpy(), optics, radius_px, others, **keep), a)
    return out


def _filled_windows(photons, frame, row, col, radius_px):
    win, inside = _windows(photons, frame, row, col, radius_px)
    fill = np.nanmedian(np.where(inside, win, np.nan).reshape(len(win), -1), axis=1)
    return np.where(inside, win, fill[:, None, None])


def _read_var_windows(camera, frame, row, col, radius_px):
    """Each window's per-pixel read-noise variance [K, R, R] (e-^2) from an sCMOS camera's maps, filled as the
    data are outside the frame; None for a camera without a variance map (its scalar read noise serves)."""
    if not (camera.has_maps and camera.maps.variance is not None):
        return None
    var = np.asarray(camera.read_variance(), np.float64)[None]
    return _filled_windows(var, np.zeros_like(frame), row, col, radius_px)


def _fit(photons, frame, row, col, z0, optics: Optics, radius_px: int, minus=None, min_photons=50.0, min_snr=5.0,
         extra_starts_nm=()) -> pd.DataFrame:
    """The 3D MLE in the windows around (row, col) (less ``minus``, other molecules' photons), as a table of
    the fits that pass (see :func:`localize_3d`)."""
    psf, cam, a = optics.psf, optics.camera, optics.camera.pixel_size_nm
    win = _filled_windows(photons, frame, row, col, radius_px)
    if minus is not None:
        win = win - minus
    fit = fit_3d(win, psf, cam.read_noise, z0_nm=z0, extra_starts_nm=extra_starts_nm,
                 read_var=_read_var_windows(cam, frame, row, col, radius_px))
    x, y, z, n, b = fit.theta.T
    lo, hi = psf.z_range_nm
    snr = n / np.sqrt(np.maximum(fit.crlb[:, 3], 1e-12))
    ok = fit.ok & (n > min_photons * cam.qe) & (snr >= min_snr) & (z >= lo - 50.0) & (z <= hi + 50.0)
    return pd.DataFrame({
        "frame": frame.astype(np.int64),
        "x_nm": (col - radius_px + x) * a,
        "y_nm": (row - radius_px + y) * a,
        "z_nm": z, "photons": n / cam.qe, "background": b / cam.qe,  # incident photons (electrons / qe)
        "sigma_x_nm": np.sqrt(fit.crlb[:, 0]) * a, "sigma_y_nm": np.sqrt(fit.crlb[:, 1]) * a,
        "sigma_z_nm": np.sqrt(fit.crlb[:, 2]),
    })[ok].reset_index(drop=True)


def _neighbour_photons(locs: pd.DataFrame, frame, row, col, radius_px: int, optics: Optics) -> np.ndarray:
    """[K, R, R]: the expected photons of the other molecules of the same frame in each molecule's window."""
    from scipy.spatial import cKDTree

    a, side = optics.camera.pixel_size_nm, 2 * radius_px + 1
    out = np.zeros((len(locs), side, side))
    pts = np.c_[locs["x_nm"] / a, locs["y_nm"] / a, frame * 1e7]
    pairs = np.array(sorted(cKDTree(pts).query_pairs(2.0 * side)), dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return out
    k, j = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]  # molecule j in the window of k
    t = lambda v: torch.as_tensor(np.asarray(v, np.float64))  # noqa: E731
    frac = optics.psf.fractions(t(locs["x_nm"].to_numpy()[j] / a - (col[k] - radius_px)),
                                t(locs["y_nm"].to_numpy()[j] / a - (row[k] - radius_px)), (side, side),
                                z_nm=t(locs["z_nm"].to_numpy()[j]))
    np.add.at(out, k, frac.numpy() * (optics.camera.qe * locs["photons"].to_numpy()[j])[:, None, None])
    return out


def _merge_duplicates(locs: pd.DataFrame, pixel_nm: float) -> pd.DataFrame:
    from scipy.spatial import cKDTree

    if len(locs) < 2:
        return locs
    pts = np.c_[locs["x_nm"], locs["y_nm"], locs["frame"] * 1e7]
    drop = set()
    for i, j in cKDTree(pts).query_pairs(pixel_nm):
        drop.add(i if locs["photons"].iat[i] < locs["photons"].iat[j] else j)
    return locs.drop(index=sorted(drop)).reset_index(drop=True)


def localize_stack(path, optics: Optics, batch_size: int = 32, max_frames: int | None = None, seeder=None):
    """:func:`localize_3d` over a TIFF movie read in batches; returns (table, (frames done, H, W)).
    ``seeder(frames_adu)`` -> seeds table (frame, x_nm, y_nm) of a batch, e.g. :func:`network_seeder`."""
    from ..movie import outputs

    total, h, w = outputs.stack_shape(path)
    n = min(total, max_frames or total)
    ranges = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    tables = [localize_3d(frames, optics, None if seeder is None else seeder(frames))
              .pipe(lambda t, s=start: t.assign(frame=t["frame"] + s))
              for (start, _), frames in zip(ranges, outputs.read_frames(path, ranges))]
    return pd.concat(tables, ignore_index=True), (n, h, w)


def write_table(locs: pd.DataFrame, path, optics: Optics, shape, source=None, extra_info=None) -> None:
    """A 3D table as ThunderSTORM CSV (``z [nm]``, ``uncertainty_z [nm]``) or Picasso HDF5 (``z``, ``lpz``, nm)."""
    from ..io import write_picasso_hdf5, write_thunderstorm_csv

    if str(path).lower().endswith((".h5", ".hdf5")):
        write_picasso_hdf5(locs, path, shape[0], shape[1], shape[2], optics.camera.pixel_size_nm,
                           optics.psf.sigma_px, camera=optics.camera, source=source,
                           extra_info={"Mode": "3d"} | (extra_info or {}))
    else:
        write_thunderstorm_csv(locs, path)


def network_seeder(pipe, camera):
    """Seeds from a 2D pipeline in DeepSTORM mode (``num_samples=0``) run with ``camera``: its molecules'
    frame, x_nm, y_nm."""
    def seeds(frames_adu):
        out = pipe(np.asarray(frames_adu, np.float32), num_samples=0, camera=camera).localizations
        return out[["frame", "x_nm", "y_nm"]]

    return seeds


def z_at(unit: torch.Tensor, locs: pd.DataFrame, pixel_size_nm: float, upsampling: int, z_scale_nm: float,
         kde_sigma: float = 1.0, window: int = 3) -> np.ndarray:
    """z (nm) of molecules ``locs`` (frame, x_nm, y_nm) from a 3D network's output ``unit`` [F, 2, uH, uW]:
    over the ``window`` x ``window`` KDE pixels around each, the z channel's sum over the density's, in
    units of ``z_scale_nm`` (:func:`smlm_diffusers.training.data.z_channel`)."""
    from ..kde import KDEScaling

    if not len(locs):
        return np.zeros(0)
    scaling = KDEScaling(kde_sigma)
    density, zch = scaling.from_unit(unit[:, 0]).double(), unit[:, 1].double() * scaling.peak
    _, uh, uw = density.shape
    pix = pixel_size_nm / upsampling
    f = torch.as_tensor(locs["frame"].to_numpy(np.int64))
    i = torch.as_tensor(np.floor(locs["y_nm"].to_numpy() / pix).astype(np.int64))
    j = torch.as_tensor(np.floor(locs["x_nm"].to_numpy() / pix).astype(np.int64))
    off = torch.arange(window) - window // 2
    rr = (i[:, None, None] + off[None, :, None]).clamp(0, uh - 1)
    cc = (j[:, None, None] + off[None, None, :]).clamp(0, uw - 1)
    mass = density[f[:, None, None], rr, cc].sum(dim=(1, 2))
    return (z_scale_nm * zch[f[:, None, None], rr, cc].sum(dim=(1, 2)) / mass.clamp_min(1e-6)).numpy()


def network_seeds_3d(net, frames_adu, camera, threshold: float, batch_size: int = 32) -> pd.DataFrame:
    """Seeds (frame, x_nm, y_nm, z_nm) of frames [F, H, W] (ADU) from a 3D DeepSTORM (``out_channels=2``): the
    density's peaks (:func:`~smlm_diffusers.localization.peaks.localize_kde`) and :func:`z_at` there."""
    if net.config.out_channels != 2:
        raise ValueError("network_seeds_3d needs a 3D DeepSTORM (out_channels=2, a z channel)")
    unit = net.predict(np.asarray(frames_adu, np.float32), batch_size=batch_size, camera=camera)
    return seeds_from_output(unit, net.config, camera.pixel_size_nm, threshold)


def seeds_from_output(unit: torch.Tensor, cfg, pixel_size_nm: float, threshold: float) -> pd.DataFrame:
    """(frame, x_nm, y_nm, z_nm) of a 3D DeepSTORM's output ``unit`` [F, 2, uH, uW] (its config ``cfg``)."""
    from ..kde import KDEScaling
    from .peaks import localize_kde

    locs = localize_kde(KDEScaling(cfg.kde_sigma).from_unit(unit[:, 0]), pixel_size_nm=pixel_size_nm,
                        upsampling=cfg.upsampling, threshold=threshold, kernel_sigma=cfg.kde_sigma)
    z = z_at(unit, locs, pixel_size_nm, cfg.upsampling, cfg.z_scale_nm, cfg.kde_sigma)
    return locs[["frame", "x_nm", "y_nm"]].assign(z_nm=z)

