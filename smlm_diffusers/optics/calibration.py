"""Astigmatic PSF calibration: Huang et al. (2008) width curves and wobble from a bead z-stack.

Each bead of a z-stack is fitted in every slice with an elliptical Gaussian
(:func:`smlm_diffusers.localization.spot_fit.fit_elliptical`); the widths of all beads against z
are fitted per axis with ``sigma(z) = sigma0 sqrt(1 + u^2 + A u^3 + B u^4)``, ``u = (z - c)/d``
(robust least squares), and the centre's offset from the bead's position at z = 0 with a cubic
per axis (the wobble). Slice ``i`` of ``n`` is at ``z = (i - (n - 1) / 2) * z_step_nm`` (the
bead's position relative to the focal plane; a negative step flips the axis); the origin is then
moved to where sigma_x = sigma_y, as Picasso does, unless ``origin="stack"``.
The same curve fit takes widths measured at known z (:func:`fit_astigmatism`), e.g. spots with
ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ..simulation.camera import Camera
from .psf import AstigmaticPSF

WOBBLE_DEGREE = 3


def _huang_np(z, s0, c, d, a, b):
    u = (z - c) / d
    return s0 * np.sqrt(np.clip(1.0 + u * u + a * u**3 + b * u**4, 1e-4, None))


def fit_width_curve(z_nm, sigma_px, higher_order: bool = True) -> tuple[float, float, float, float, float]:
    """(sigma0, c, d, A, B) of one axis by robust least squares (A = B = 0 unless ``higher_order``)."""
    z, s = np.asarray(z_nm, np.float64), np.asarray(sigma_px, np.float64)
    keep = np.isfinite(z) & np.isfinite(s)
    z, s = z[keep], s[keep]
    i = np.argmin(s)
    p0 = [max(s[i], 0.3), z[i], 400.0, 0.0, 0.0]
    n = 5 if higher_order else 3

    def res(p):
        q = list(p) + [0.0] * (5 - n)
        return _huang_np(z, *q) - s

    lo = [0.1, z.min() - 1000.0, 50.0, -5.0, -5.0][:n]
    hi = [10.0, z.max() + 1000.0, 5000.0, 5.0, 5.0][:n]
    fit = least_squares(res, p0[:n], bounds=(lo, hi), loss="soft_l1", f_scale=0.05)
    out = list(fit.x) + [0.0] * (5 - n)
    return tuple(float(v) for v in out)


def fit_shared_curves(z_nm, sigma_x_px, sigma_y_px):
    """((sigma0, c_x, d, 0, 0), (sigma0, c_y, d, 0, 0)): both axes' width curves with one sigma0 and depth."""
    z, sx, sy = (np.asarray(v, np.float64) for v in (z_nm, sigma_x_px, sigma_y_px))
    keep = np.isfinite(z) & np.isfinite(sx) & np.isfinite(sy)
    z, sx, sy = z[keep], sx[keep], sy[keep]

    def res(p):
        s0, d, cx, cy = p
        return np.r_[_huang_np(z, s0, cx, d, 0.0, 0.0) - sx, _huang_np(z, s0, cy, d, 0.0, 0.0) - sy]

    p0 = [max(min(sx.min(), sy.min()), 0.3), 400.0, z[np.argmin(sx)], z[np.argmin(sy)]]
    lo, hi = [0.1, 50.0, z.min() - 1500.0, z.min() - 1500.0], [10.0, 5000.0, z.max() + 1500.0, z.max() + 1500.0]
    s0, d, cx, cy = least_squares(res, p0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05).x
    return (float(s0), float(cx), float(d), 0.0, 0.0), (float(s0), float(cy), float(d), 0.0, 0.0)


def fit_astigmatism(z_nm, sigma_x_px, sigma_y_px, dx_px=None, dy_px=None, higher_order: bool = True,
                    z_range_nm=None, wobble_degree: int = WOBBLE_DEGREE, shared_shape: bool = False) -> AstigmaticPSF:
    """An :class:`AstigmaticPSF` from widths (and centre offsets, pixels) measured at known z (nm).

    ``shared_shape`` fits one in-focus width and one depth for both axes, only the foci apart (the
    astigmatism of a cylindrical lens, 4 parameters instead of 6): the model for measurements that
    cover a short z range, where the two curves' own depths are not constrained (higher-order terms off).
    """
    z = np.asarray(z_nm, np.float64)
    if shared_shape:
        (sx0, cx, dxn, ax, bx), (sy0, cy, dyn, ay, by) = fit_shared_curves(z, sigma_x_px, sigma_y_px)
    else:
        sx0, cx, dxn, ax, bx = fit_width_curve(z, sigma_x_px, higher_order)
        sy0, cy, dyn, ay, by = fit_width_curve(z, sigma_y_px, higher_order)
    wob = []
    for off in (dx_px, dy_px):
        if off is None:
            wob.append((0.0,))
            continue
        off = np.asarray(off, np.float64)
        keep = np.isfinite(off) & np.isfinite(z)
        coef = np.polynomial.polynomial.polyfit(z[keep] / 1000.0, off[keep], wobble_degree)
        wob.append(tuple(float(c) for c in coef))
    rng = (float(np.min(z)), float(np.max(z))) if z_range_nm is None else tuple(z_range_nm)
    return AstigmaticPSF(sx0, sy0, cx, cy, dxn, dyn, ax, bx, ay, by, wob[0], wob[1], rng)


def shift_origin(psf: AstigmaticPSF, dz_nm: float) -> AstigmaticPSF:
    """The same PSF with z measured from ``dz_nm`` (new z = old z - dz); wobble re-based at the new 0."""
    def rebase(coef):
        p = np.polynomial.Polynomial(coef)
        q = p(np.polynomial.Polynomial([dz_nm / 1000.0, 1.0]))  # p(t + t0)
        c = list(q.coef) + [0.0] * (len(coef) - len(q.coef))
        c[0] = 0.0  # the bead's position is where its spot is at z = 0
        return tuple(float(v) for v in c)

    lo, hi = psf.z_range_nm
    return AstigmaticPSF(psf.sigma0_x_px, psf.sigma0_y_px, psf.focus_x_nm - dz_nm, psf.focus_y_nm - dz_nm,
                         psf.depth_x_nm, psf.depth_y_nm, psf.a_x, psf.b_x, psf.a_y, psf.b_y,
                         rebase(psf.wobble_x_px), rebase(psf.wobble_y_px), (lo - dz_nm, hi - dz_nm))


def crossing_nm(psf: AstigmaticPSF) -> float:
    """z (nm) between the two foci where sigma_x = sigma_y (the middle of the range if none)."""
    lo, hi = sorted((psf.focus_x_nm, psf.focus_y_nm))
    z = np.linspace(lo - 200.0, hi + 200.0, 4001)
    sx, sy = (v.numpy() for v in psf.widths(z))
    diff = sx - sy
    idx = np.flatnonzero(np.sign(diff[1:]) != np.sign(diff[:-1]))
    if not len(idx):
        return 0.5 * (lo + hi)
    mid = 0.5 * (lo + hi)
    j = idx[np.argmin(np.abs(z[idx] - mid))]
    return float(z[j] - diff[j] * (z[j + 1] - z[j]) / (diff[j + 1] - diff[j]))


@dataclass
class Calibration:
    """The fitted PSF and the measurements it came from (bead, z_nm, sigma_x_px, sigma_y_px, dx_px, dy_px)."""

    psf: AstigmaticPSF
    table: pd.DataFrame

    def residuals(self) -> dict:
        """RMS of the width and wobble residuals (pixels)."""
        t = self.table
        sx, sy = (v.numpy() for v in self.psf.widths(t["z_nm"].to_numpy()))
        a = self.psf.axes(__import__("torch").as_tensor(t["z_nm"].to_numpy()))
        rx, ry = t["sigma_x_px"] - sx, t["sigma_y_px"] - sy
        wx, wy = t["dx_px"] - a["ox"].numpy(), t["dy_px"] - a["oy"].numpy()
        return {k: float(np.sqrt(np.nanmean(np.square(v)))) for k, v in
                (("sigma_x_px", rx), ("sigma_y_px", ry), ("wobble_x_px", wx), ("wobble_y_px", wy))}


def find_beads(stack_photons: np.ndarray, radius_px: int, threshold_snr: float = 10.0,
               min_separation_px: float | None = None) -> np.ndarray:
    """(row, col) of beads: bright local maxima of the stack's maximum projection, isolated, inside."""
    from ..psf_estimation import find_spots

    proj = stack_photons.max(axis=0)[None]
    sep = 2.5 * radius_px if min_separation_px is None else min_separation_px
    spots, _ = find_spots(proj, 1.5, radius_px, threshold_snr, threshold_snr / 2, sep)
    return spots[["row", "col"]].to_numpy()


def calibrate_beads(stack_adu, z_step_nm: float, camera: Camera | None = None, radius_px: int = 7,
                    threshold_snr: float = 10.0, origin: str = "crossing", higher_order: bool = True,
                    beads=None) -> Calibration:
    """Calibrate an :class:`AstigmaticPSF` from a bead z-stack [Z, H, W] (ADU); see the module docstring.

    ``beads``: (row, col) pixels of the beads, default :func:`find_beads`. Slices whose fit is
    poor (not converged, centre off, width at the window's limit) are left out.
    """
    from ..localization.spot_fit import fit_elliptical

    camera = camera or Camera()
    stack = np.asarray(camera.adu_to_photons(np.asarray(stack_adu, np.float64)))
    if stack.ndim != 3 or stack.shape[0] < 5:
        raise ValueError(f"a bead z-stack must be [Z, H, W] with at least 5 slices, got {stack.shape}")
    nz = stack.shape[0]
    beads = find_beads(stack, radius_px, threshold_snr) if beads is None else np.asarray(beads)
    if not len(beads):
        raise ValueError("no isolated bead found in the stack's maximum projection")
    z = (np.arange(nz) - (nz - 1) / 2.0) * float(z_step_nm)
    offs = np.arange(-radius_px, radius_px + 1)
    rows = []
    for k, (r, c) in enumerate(beads):
        win = stack[:, r + offs[:, None], c + offs[None, :]]
        fit = fit_elliptical(win, camera.read_noise, 1.5)
        x, y, n, b, sx, sy = fit.theta.T
        ok = fit.ok & (sx < radius_px / 2.0 - 0.05) & (sy < radius_px / 2.0 - 0.05) & (n > 0)
        rows.append(pd.DataFrame({"bead": k, "z_nm": z, "x_px": c - radius_px + x, "y_px": r - radius_px + y,
                                  "sigma_x_px": sx, "sigma_y_px": sy, "photons": n, "ok": ok}))
    table = pd.concat(rows, ignore_index=True)
    table = table[table["ok"]].drop(columns="ok").reset_index(drop=True)
    # first pass without wobble: find z = 0, then each bead's position is where its spot is at z = 0
    psf = fit_astigmatism(table["z_nm"], table["sigma_x_px"], table["sigma_y_px"], higher_order=higher_order)
    dz = crossing_nm(psf) if origin == "crossing" else 0.0
    table["z_nm"] = table["z_nm"] - dz
    for axis in ("x", "y"):
        ref = table.groupby("bead").apply(lambda t: _value_at_zero(t["z_nm"], t[f"{axis}_px"]), include_groups=False)
        table[f"d{axis}_px"] = table[f"{axis}_px"] - table["bead"].map(ref)
    psf = fit_astigmatism(table["z_nm"], table["sigma_x_px"], table["sigma_y_px"], table["dx_px"], table["dy_px"],
                          higher_order=higher_order)
    return Calibration(psf, table)


def _value_at_zero(z, v) -> float:
    """A cubic of v against z (um), evaluated at z = 0 (the bead's in-focus position)."""
    z, v = np.asarray(z, np.float64) / 1000.0, np.asarray(v, np.float64)
    deg = min(WOBBLE_DEGREE, len(z) - 1)
    return float(np.polynomial.polynomial.polyfit(z, v, deg)[0])


def plot_calibration(cal: Calibration, path) -> None:
    """Widths and wobble against z with the fitted curves, and their residuals (as Picasso shows them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    t = cal.table
    zz = np.linspace(t["z_nm"].min(), t["z_nm"].max(), 300)
    a = cal.psf.axes(torch.as_tensor(zz))
    at = cal.psf.axes(torch.as_tensor(t["z_nm"].to_numpy()))
    fig, ax = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for key, col, lab, c in (("sx", "sigma_x_px", "sigma_x", "C0"), ("sy", "sigma_y_px", "sigma_y", "C3")):
        ax[0, 0].plot(t["z_nm"], t[col], ".", ms=3, color=c, alpha=0.5)
        ax[0, 0].plot(zz, a[key].numpy(), "-", color=c, label=lab)
        ax[1, 0].plot(t["z_nm"], t[col] - at[key].numpy(), ".", ms=3, color=c, label=lab)
    for key, col, lab, c in (("ox", "dx_px", "wobble x", "C0"), ("oy", "dy_px", "wobble y", "C3")):
        ax[0, 1].plot(t["z_nm"], t[col], ".", ms=3, color=c, alpha=0.5)
        ax[0, 1].plot(zz, a[key].numpy(), "-", color=c, label=lab)
        ax[1, 1].plot(t["z_nm"], t[col] - at[key].numpy(), ".", ms=3, color=c, label=lab)
    ax[0, 0].set_ylabel("width (camera px)")
    ax[0, 1].set_ylabel("centre offset (camera px)")
    ax[1, 0].set_ylabel("width residual (px)")
    ax[1, 1].set_ylabel("offset residual (px)")
    for a_ in ax.ravel():
        a_.legend(fontsize=8)
        a_.grid(alpha=0.3)
    for a_ in ax[1]:
        a_.set_xlabel("z (nm)")
    res = cal.residuals()
    fig.suptitle(f"astigmatic calibration: {t['bead'].nunique()} beads, {len(t)} slices; rms residual "
                 f"sigma_x {res['sigma_x_px']:.3f} px, sigma_y {res['sigma_y_px']:.3f} px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate_to_yaml(stack_adu, z_step_nm: float, camera: Camera, out, plot=None, radius_px: int = 7,
                      threshold_snr: float = 10.0, source: str = "") -> str:
    """:func:`calibrate_beads`, then ``optics.yaml`` (camera + PSF + the calibration's numbers) and its plot
    (default ``<out stem>.png``); returns a summary line."""
    from pathlib import Path

    from .optics import Optics

    cal = calibrate_beads(stack_adu, z_step_nm, camera, radius_px=radius_px, threshold_snr=threshold_snr)
    res, out = cal.residuals(), Path(out)
    extra = {"calibration": {"stack": source, "z_step_nm": float(z_step_nm), "beads": int(cal.table["bead"].nunique()),
                             "slices_fitted": len(cal.table), "rms_residual_px": res}}
    Optics(camera, cal.psf).to_yaml(out, extra, "smlm-diffusers calibrate-z: astigmatic PSF from a bead z-stack")
    plot = Path(plot) if plot else out.with_suffix(".png")
    plot_calibration(cal, plot)
    return (f"{cal.table['bead'].nunique()} beads, {len(cal.table)} slices; rms residual sigma_x "
            f"{res['sigma_x_px']:.3f} px, sigma_y {res['sigma_y_px']:.3f} px\nwrote {out} and {plot}")
