"""Fisher information and Cramer-Rao lower bound of an isolated emitter (paper eqs. 5-7, 14).

Model: one emitter with ``photons`` N at ``(x, y)`` (pixels, edge convention of
docs/conventions.md: pixel ``j`` covers ``[j, j + 1)``), a PSF integrated over square pixels
(a :class:`~smlm_diffusers.optics.PSF`; a float ``sigma_px`` is the isotropic Gaussian of the
paper), and a flat background of ``b`` photons per pixel, imaged by a camera with quantum
efficiency ``qe`` and Gaussian read noise ``read_noise`` (photo-electrons rms). The expected
photo-electrons of pixel k are

    mu_k = qe * (N * PSF_k(x, y) + b),

and the Poisson-normal approximation (eqs. 5-6) treats ``x'_k = x_k + read_noise^2`` as
Poisson with mean ``mu'_k = mu_k + read_noise^2``. Its Fisher information (eq. 14) is

    I_ij = sum_k (1 / mu'_k) (d mu'_k / d theta_i) (d mu'_k / d theta_j).

Gain and offset do not enter: they are an invertible affine map of the data. ``photons``
and ``background`` are *incident* photons, as in :func:`smlm_diffusers.simulate`.

On an sCMOS camera each pixel has its own read-noise variance ``r_k^2 = sigma_k^2 / g_k^2``
(photo-electrons^2, the paper's eq. 4 with per-pixel maps, :class:`~smlm_diffusers.simulation.camera.Camera`):
``mu'_k = mu_k + r_k^2`` pixel by pixel, given as ``read_var`` (a window of the map) or read from a
camera with maps where the emitters' frame positions are known (:func:`crlb_at_truth`,
:func:`crlb_configuration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .simulation.camera import PAPER_CAMERA, Camera
from .optics.psf import PSF, as_psf

PARAMETERS = ("x", "y", "photons", "background")
PARAMETERS_3D = ("x", "y", "z", "photons", "background")

# Values per chunk of the [emitters, P, roi^2] float64 gradient stack (~64 MB), so that
# large batches of emitters run in bounded memory.
_CHUNK_VALUES = 2**23


def default_roi_size(sigma_px: float) -> int:
    """Odd ROI side (pixels) holding the PSF out to 4 sigma: ``2 * ceil(4 sigma) + 1``, at least 7."""
    return max(7, 2 * math.ceil(4.0 * float(sigma_px)) + 1)


def _check_params(params: Sequence[str]) -> tuple[str, ...]:
    params = tuple(params)
    unknown = [p for p in params if p not in PARAMETERS]
    if unknown or not params or len(set(params)) != len(params):
        raise ValueError(f"params must be distinct names from {PARAMETERS}, got {params}")
    return params


def fisher_information(
    photons,
    background,
    sigma_px: float | PSF = 1.0,
    x_px=None,
    y_px=None,
    roi_size: int | None = None,
    read_noise: float = PAPER_CAMERA.read_noise,
    qe: float = 1.0,
    params: Sequence[str] = PARAMETERS,
    read_var=None,
) -> np.ndarray:
    """Fisher information matrix of an isolated emitter under the Poisson-normal model (eq. 14).

    All array arguments broadcast against each other (numpy rules); the computation is
    vectorized over the broadcast shape ``S``.

    Parameters
    ----------
    photons : float or array_like
        Total incident photons of the emitter, N (> 0).
    background : float or array_like
        Flat background, incident photons per pixel, b (>= 0).
    sigma_px : float or PSF
        Standard deviation of the Gaussian PSF, in pixels (a scalar), or the PSF (in focus).
    x_px, y_px : float or array_like, optional
        Emitter position inside the ROI, in pixels with the edge convention (the ROI's
        outer top-left corner is 0, x is the column). Default: the ROI's centre,
        ``roi_size / 2``, i.e. the centre of the central pixel.
    roi_size : int, optional
        Side of the square fitting region, in pixels. Default :func:`default_roi_size`.
        The information about ``background`` grows with the ROI, so the 4-parameter bound
        depends on it; the x, y-only bound hardly does once the ROI holds the PSF.
    read_noise : float
        Gaussian read noise, photo-electrons rms (>= 0).
    qe : float
        Quantum efficiency in (0, 1].
    params : sequence of str
        Which parameters are estimated, in the order of the matrix rows, from
        ``("x", "y", "photons", "background")``. ``("x", "y")`` treats N and b as known
        (the paper's case); the default estimates all four.
    read_var : array_like, optional
        Each ROI pixel's read-noise variance in photo-electrons^2 (an sCMOS camera's ``sigma_k^2 / g_k^2``),
        broadcast to ``S + (roi, roi)`` (rows, columns); replaces ``read_noise**2``.

    Returns
    -------
    ndarray, shape ``S + (P, P)``, float64
        Fisher information in the parameters' natural units: 1/px^2 for x, y,
        1/photon^2 for photons, and 1/(photon/pixel)^2 for background (cross terms mixed).
    """
    params = _check_params(params)
    psf = _psf(sigma_px)
    if read_noise < 0:
        raise ValueError(f"read_noise must be >= 0 e- rms, got {read_noise}")
    if not 0 < qe <= 1:
        raise ValueError(f"qe must be in (0, 1], got {qe}")
    roi = default_roi_size(psf.sigma_px) if roi_size is None else int(roi_size)
    if roi < 1:
        raise ValueError(f"roi_size must be >= 1, got {roi_size}")
    centre = roi / 2.0
    x_px = centre if x_px is None else x_px
    y_px = centre if y_px is None else y_px
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (photons, background, x_px, y_px)))
    shape = arrays[0].shape
    n_all, b_all, x_all, y_all = (torch.from_numpy(np.ascontiguousarray(a).reshape(-1)) for a in arrays)
    rv_all = _read_var_windows(read_var, shape, roi)

    out = np.empty((n_all.numel(), len(params), len(params)), dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // (len(params) * roi * roi))
    for start in range(0, n_all.numel(), chunk):
        sl = slice(start, start + chunk)
        out[sl] = _fisher_flat(n_all[sl], b_all[sl], x_all[sl], y_all[sl], psf, roi, read_noise, qe, params,
                               read_var=None if rv_all is None else rv_all[sl])
    return out.reshape(shape + (len(params), len(params)))


def _read_var_windows(read_var, shape, roi: int) -> torch.Tensor | None:
    """Per-pixel read-noise variance broadcast to ``shape + (roi, roi)`` and flattened to [M, roi, roi]."""
    if read_var is None:
        return None
    rv = np.asarray(read_var, dtype=np.float64)
    if rv.ndim < 2 or rv.shape[-2:] != (roi, roi):
        raise ValueError(f"read_var must end in the ROI's shape ({roi}, {roi}), got {rv.shape}")
    if not (np.isfinite(rv).all() and (rv >= 0).all()):
        raise ValueError("read_var must be finite and >= 0 (photo-electrons^2)")
    return torch.from_numpy(np.array(np.broadcast_to(rv, tuple(shape) + (roi, roi))).reshape(-1, roi, roi))


def _psf(sigma_px) -> PSF:
    """The PSF of a ``sigma_px`` argument: a PSF as given, a float as the Gaussian of that width (> 0)."""
    if not isinstance(sigma_px, PSF) and not float(sigma_px) > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    return as_psf(sigma_px)


def _fisher_flat(n, b, x, y, psf, roi, read_noise, qe, params, z=None, read_var=None) -> np.ndarray:
    """Fisher matrices [M, P, P] of M emitters given as 1D float64 tensors under ``psf``; ``read_var``
    [M, R, R] each pixel's read-noise variance (e-^2) in place of ``read_noise**2``."""
    frac, d = psf.fractions(x, y, (roi, roi), z_nm=z, derivatives=True)  # [M, R(rows), R(cols)]
    n3 = n.view(-1, 1, 1)
    mu_prime = qe * (n3 * frac + b.view(-1, 1, 1)) + (read_noise**2 if read_var is None else read_var)
    grads = {"photons": qe * frac, "background": torch.full_like(frac, qe)}
    grads |= {k: qe * n3 * d[k] for k in ("x", "y", "z") if k in params}
    g = torch.stack([grads[p] for p in params], dim=1).flatten(2)  # [M, P, R*R]
    info = torch.einsum("mpk,mqk->mpq", g / mu_prime.flatten(1).unsqueeze(1), g)
    return info.numpy()


def crlb(
    photons,
    background,
    sigma_px: float | PSF = 1.0,
    pixel_size_nm: float = PAPER_CAMERA.pixel_size_nm,
    read_noise: float = PAPER_CAMERA.read_noise,
    qe: float = 1.0,
    x_px=None,
    y_px=None,
    roi_size: int | None = None,
    params: Sequence[str] = PARAMETERS,
    camera: Camera | None = None,
    read_var=None,
):
    """Cramer-Rao lower bounds of the x and y variance of an isolated emitter, in nm^2.

    The diagonal x, y entries of the inverse of :func:`fisher_information`, converted from
    px^2 to nm^2. ``params`` must contain ``"x"`` and ``"y"``; estimating more parameters
    (the default, x, y, photons and background, as in docs/conventions.md's RMSE/CRLB ratio) never
    lowers the bound.

    Parameters
    ----------
    photons : float or array_like
        Total incident photons of the emitter (> 0).
    background : float or array_like
        Incident background photons per pixel (>= 0).
    sigma_px : float or PSF
        Gaussian PSF standard deviation, in pixels, or the PSF.
    pixel_size_nm : float
        Camera pixel size projected into the sample, in nm.
    read_noise : float
        Read noise, photo-electrons rms.
    qe : float
        Quantum efficiency in (0, 1].
    x_px, y_px : float or array_like, optional
        Position inside the ROI (pixels, edge convention); default the ROI's centre.
    roi_size : int, optional
        Side of the square ROI in pixels; see :func:`fisher_information`.
    params : sequence of str
        Estimated parameters, see :func:`fisher_information`.
    camera : Camera, optional
        If given, its ``pixel_size_nm``, ``read_noise`` and ``qe`` replace the arguments
        of the same names (its per-pixel maps need the emitters' frame positions: :func:`crlb_at_truth`).
    read_var : array_like, optional
        Each ROI pixel's read-noise variance, photo-electrons^2 (:func:`fisher_information`).

    Returns
    -------
    (crlb_x_nm2, crlb_y_nm2)
        Variance bounds in nm^2: Python floats for scalar inputs, otherwise arrays of the
        broadcast shape of the array arguments.
    """
    params = _check_params(params)
    if "x" not in params or "y" not in params:
        raise ValueError(f"params must include 'x' and 'y', got {params}")
    if camera is not None:
        pixel_size_nm, read_noise, qe = camera.pixel_size_nm, camera.read_noise, camera.qe
    info = fisher_information(photons, background, sigma_px, x_px, y_px, roi_size, read_noise, qe, params, read_var)
    diag = inverse_diagonal(info)
    ix, iy = params.index("x"), params.index("y")
    a2 = float(pixel_size_nm) ** 2
    cx, cy = diag[..., ix] * a2, diag[..., iy] * a2
    if cx.ndim == 0:
        return float(cx), float(cy)
    return cx, cy


def inverse_diagonal(info):
    """Diagonal [..., P] of the inverse of Fisher matrices [..., P, P] (numpy or torch): every CRLB of the
    package. The entries span many decades (1/px^2 against 1/photon^2): the unit-diagonal (correlation-like)
    matrix is inverted and scaled back, which keeps the inverse accurate."""
    if isinstance(info, torch.Tensor):
        s = torch.diagonal(info, dim1=-2, dim2=-1).clamp_min(1e-12).rsqrt()
        inv = torch.linalg.inv_ex(info * s.unsqueeze(-1) * s.unsqueeze(-2))[0]
        return torch.diagonal(inv, dim1=-2, dim2=-1) * s * s
    scale = 1.0 / np.sqrt(np.diagonal(info, axis1=-2, axis2=-1))
    inv = np.linalg.inv(info * scale[..., :, None] * scale[..., None, :])
    return np.diagonal(inv, axis1=-2, axis2=-1) * scale * scale


def fisher_information_3d(photons, background, psf, z_nm, x_px=None, y_px=None, roi_size: int | None = None,
                          read_noise: float = PAPER_CAMERA.read_noise, qe: float = 1.0,
                          params: Sequence[str] = PARAMETERS_3D, read_var=None) -> np.ndarray:
    """Fisher information (eq. 14) of an isolated emitter of a PSF object, z included.

    As :func:`fisher_information`, with ``psf`` a :class:`smlm_diffusers.optics.PSF` (an
    :class:`~smlm_diffusers.optics.AstigmaticPSF`: the information about z comes from the widths)
    and ``z_nm`` the emitter's axial position (nm, broadcast with the other arrays). Rows in the
    order of ``params`` from ``("x", "y", "z", "photons", "background")``; z in nm (1/nm^2). ``read_var``:
    each ROI pixel's read-noise variance (e-^2), as :func:`fisher_information`'s.
    """
    params = tuple(params)
    if any(p not in PARAMETERS_3D for p in params) or len(set(params)) != len(params):
        raise ValueError(f"params must be distinct names from {PARAMETERS_3D}, got {params}")
    roi = default_roi_size(2.0 * psf.sigma_px) if roi_size is None else int(roi_size)
    x_px = roi / 2.0 if x_px is None else x_px
    y_px = roi / 2.0 if y_px is None else y_px
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (photons, background, x_px, y_px, z_nm)))
    shape = arrays[0].shape
    flat = [torch.from_numpy(np.ascontiguousarray(a).reshape(-1)) for a in arrays]
    rv_all = _read_var_windows(read_var, shape, roi)
    out = np.empty((flat[0].numel(), len(params), len(params)), dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // (len(params) * roi * roi))
    for start in range(0, flat[0].numel(), chunk):
        n, b, x, y, z = (t[start:start + chunk] for t in flat)
        out[start:start + chunk] = _fisher_flat(n, b, x, y, psf, roi, read_noise, qe, params, z,
                                                None if rv_all is None else rv_all[start:start + chunk])
    return out.reshape(shape + (len(params), len(params)))


def crlb_3d(photons, background, psf, z_nm, camera: Camera | None = None, x_px=None, y_px=None,
            roi_size: int | None = None):
    """CRLB of x, y and z of an isolated emitter, nm^2, all five of (x, y, z, photons, background) estimated.

    ``camera`` (default the paper's) gives the pixel size, read noise and qe. Returns
    ``(crlb_x, crlb_y, crlb_z)``: floats for scalar inputs, else arrays of the broadcast shape.
    """
    camera = camera or PAPER_CAMERA
    info = fisher_information_3d(photons, background, psf, z_nm, x_px, y_px, roi_size, camera.read_noise, camera.qe)
    diag = inverse_diagonal(info)
    a2 = float(camera.pixel_size_nm) ** 2
    out = diag[..., 0] * a2, diag[..., 1] * a2, diag[..., 2]
    return tuple(float(v) for v in out) if out[0].ndim == 0 else out


def crlb_at_truth(gt, sigma_px: float | PSF, camera: Camera, roi_size: int | None = None):
    """CRLB_x, CRLB_y (nm^2) of each ground-truth emitter at its true (x, y, photons, background).

    ``gt`` is a table with x_nm, y_nm, photons and (optionally) background columns. Each emitter
    sits in the central pixel of a square ROI at its true sub-pixel offset; all four
    parameters are estimated. This is the bound the RMSE/CRLB metric uses (docs/conventions.md).
    With a camera with per-pixel maps, each pixel of an emitter's ROI has the read-noise variance of the frame
    pixel under it (pixels past the frame's edge repeat the edge's).
    ``sigma_px``: the Gaussian's width (pixels) or the PSF.
    """
    roi = default_roi_size(_psf(sigma_px).sigma_px) if roi_size is None else int(roi_size)
    a = float(camera.pixel_size_nm)
    x = gt["x_nm"].to_numpy(np.float64) / a
    y = gt["y_nm"].to_numpy(np.float64) / a
    bg = gt["background"].to_numpy(np.float64) if "background" in gt else 0.0
    c = roi // 2
    read_var = None
    if camera.has_maps and len(x):
        read_var = np.asarray(camera.read_variance(), np.float64)
        if read_var.ndim == 2:  # the ROI's pixels, centred on the emitter's pixel
            h, w = read_var.shape
            offs = np.arange(roi) - c
            rows = np.clip(np.floor(y).astype(np.int64)[:, None] + offs, 0, h - 1)
            cols = np.clip(np.floor(x).astype(np.int64)[:, None] + offs, 0, w - 1)
            read_var = read_var[rows[:, :, None], cols[:, None, :]]
        else:
            read_var = None
    return crlb(gt["photons"].to_numpy(np.float64), bg, sigma_px, x_px=c + np.mod(x, 1.0), y_px=c + np.mod(y, 1.0),
                roi_size=roi, camera=camera, read_var=read_var)


def crlb_position_averaged(photons, background, sigma_px: float | PSF, camera: Camera,
                           n_sub: int = 8) -> np.ndarray:
    """sqrt(CRLB_x + CRLB_y) (nm) of each photon level, averaged over an ``n_sub x n_sub`` grid of
    sub-pixel positions (the curve that RMSE of emitters at random positions is compared with)."""
    roi = default_roi_size(_psf(sigma_px).sigma_px)
    off = (np.arange(n_sub) + 0.5) / n_sub
    ox, oy = np.meshgrid(off, off)
    p = np.asarray(photons, dtype=np.float64)[:, None]
    cx, cy = crlb(p, background, sigma_px, x_px=roi // 2 + ox.ravel()[None], y_px=roi // 2 + oy.ravel()[None],
                  roi_size=roi, camera=camera)
    return np.sqrt(np.mean(cx, axis=1) + np.mean(cy, axis=1))


def crlb_configuration(x_px, y_px, photons, background: float, shape: tuple[int, int], sigma_px: float | PSF,
                       camera: Camera = PAPER_CAMERA) -> tuple[np.ndarray, np.ndarray]:
    """CRLB_x, CRLB_y (nm^2) of every emitter of one frame when all are estimated jointly.

    The multi-emitter bound of the true configuration (docs/conventions.md, "Dense precision"): the Fisher information
    (eq. 14, Poisson-normal) of the whole ``shape`` frame in the parameters (x, y, photons) of every emitter
    and one flat background, inverted; its x, y diagonal entries per emitter. An isolated emitter far from
    the frame's edge gets :func:`crlb`'s bound with a large ROI.

    Parameters
    ----------
    x_px, y_px, photons : array_like [E]
        True positions (pixels, edge convention) and incident photons of the frame's emitters.
    background : float
        Incident background photons per pixel.
    shape : (H, W)
        Frame size, pixels.
    sigma_px : float or PSF
        Gaussian PSF standard deviation, pixels, or the PSF (in focus).
    camera : Camera
        Pixel size, read noise and quantum efficiency; with per-pixel maps (the frame's shape), each pixel's
        read-noise variance.
    """
    x, y, n = (torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1) for v in (x_px, y_px, photons))
    e = len(x)
    if e == 0:
        return np.zeros(0), np.zeros(0)
    h, w = int(shape[0]), int(shape[1])
    camera.check_shape((h, w), "the frame")
    qe, rn2, psf = float(camera.qe), camera.read_variance(x), _psf(sigma_px)
    nn = n[:, None, None]
    if psf.separable:  # products of the 1D profiles
        (ex, dex), (ey, dey) = psf.profiles(x, y, (h, w), derivatives=True)  # [E, W], [E, H]
        light = torch.einsum("eh,ew->hw", ey * n[:, None], ex)
        parts = [qe * nn * ey[:, :, None] * dex[:, None, :], qe * nn * dey[:, :, None] * ex[:, None, :],
                 qe * ey[:, :, None] * ex[:, None, :]]
    else:
        frac, d = psf.fractions(x, y, (h, w), derivatives=True)  # [E, H, W]
        light = (nn * frac).sum(0)
        parts = [qe * nn * d["x"], qe * nn * d["y"], qe * frac]
    mu = qe * (light + float(background)) + rn2
    jac = torch.cat(parts + [torch.full((1, h, w), qe, dtype=x.dtype)]).flatten(1)
    info = (jac / mu.flatten()) @ jac.T
    d = inverse_diagonal(info).numpy() * float(camera.pixel_size_nm) ** 2
    return d[:e], d[e:2 * e]
