"""Super-resolved renders: KDEs accumulated over a movie, saved as PNG (and float32 TIFF).

A KDE frame integrates to its emitter count (``smlm_diffusers.kde``), so the sum over
frames of the KDE (DeepSTORM estimate or DDPM sample mean) is the super-resolved image in
molecules per KDE pixel, and the sum of the per-frame DDPM variances is the variance of that
image (frames are independent). The KDE grid has ``upsampling`` x the camera's pixels
with the pixel geometry of docs/conventions.md, so a KDE pixel is ``pixel_size_nm / upsampling`` nm
and the image's outer top-left corner is (0, 0) nm, as in the localization tables.

Drawing goes through :func:`smlm_diffusers.visualization.render_image` (object-oriented
matplotlib, no ``pyplot``), so the app and the command line draw the same pictures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .visualization import percentile_range
from .visualization import render_image as _render_rgb


def kde_pixel_nm(pixel_size_nm: float, upsampling: int) -> float:
    """Side of one KDE pixel, nm."""
    if pixel_size_nm <= 0 or upsampling < 1:
        raise ValueError(f"need pixel_size_nm > 0 and upsampling >= 1, got {pixel_size_nm}, {upsampling}")
    return float(pixel_size_nm) / int(upsampling)


def render_image(
    kde_sum: np.ndarray,
    pixel_size_nm: float,
    upsampling: int,
    path_png: str | os.PathLike | None = None,
    title: str | None = None,
    cmap: str = "magma",
    colorbar_label: str | None = None,
    percentile: float = 99.8,
    vmax: float | None = None,
    target_px: int = 640,
    dpi: int = 100,
) -> np.ndarray:
    """Draw an accumulated KDE (or its variance) with a nm scale bar and a colour bar.

    Parameters
    ----------
    kde_sum : array [uH, uW]
        Image on the upsampled grid, e.g. the KDE summed over frames (molecules per KDE pixel).
    pixel_size_nm : float
        *Camera* pixel size, nm.
    upsampling : int
        KDE grid factor (the KDE pixel is ``pixel_size_nm / upsampling`` nm).
    path_png : str or path-like, optional
        Where to save the PNG (folders are created); nothing is written when None.
    title : str, optional
    cmap : str
        Matplotlib colour map.
    colorbar_label : str, optional
        Default ``"molecules per <a> nm pixel"``.
    percentile : float
        The colour range ends at this percentile of the image (a few bright pixels would
        otherwise leave the structure dark); brighter pixels saturate.
    vmax : float, optional
        Fixed upper end of the colour range instead of the percentile.
    target_px : int
        About this many screen pixels across the image; KDE pixels are magnified by an
        integer factor (nearest neighbour, never smoothed), never shrunk.
    dpi : int

    Returns
    -------
    numpy.ndarray uint8 [H, W, 3]
        The RGB picture (as saved).
    """
    img = np.asarray(kde_sum, dtype=np.float64)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"render_image expects a non-empty 2D image, got shape {img.shape}")
    px = kde_pixel_nm(pixel_size_nm, upsampling)
    lo, hi = percentile_range([img], percentile)
    if vmax is not None:
        hi = float(vmax)
    if colorbar_label is None:
        colorbar_label = f"molecules per {px:g} nm pixel"
    rgb = _render_rgb(img, px, title=title or "", cmap=cmap, colorbar_label=colorbar_label, vmin=lo,
                      vmax=hi if hi > lo else lo + 1.0, target_px=target_px, dpi=dpi)
    if path_png is not None:
        save_png(rgb, path_png)
    return rgb


def save_png(rgb: np.ndarray, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save a uint8 RGB array [H, W, 3] as a (lossless) PNG file; ``metadata``: text chunks (str to str)."""
    from matplotlib.image import imsave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.asarray(rgb, dtype=np.uint8), format="png", metadata=metadata)
    return path
