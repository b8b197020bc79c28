"""Rendering helpers: images with colour bars and nm scale bars, as RGB arrays (for the app).

Every image is drawn on its physical extent in nm with the pixel geometry of docs/conventions.md
(pixel (row i, column j) covers x in [j*a, (j+1)*a), y in [i*a, (i+1)*a), the outer
top-left corner at (0, 0)), so localization tables in nm overlay raw frames and KDEs
without conversion. Pixels are magnified by an integer factor with nearest-neighbour
interpolation (never smoothed), and the result is returned as a uint8 RGB array, ready to
be saved as PNG (lossless).

Only matplotlib's object-oriented API is used (no ``pyplot``): safe in a multi-threaded
web server.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import patheffects, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# Nice scale-bar lengths (nm)
_BAR_LENGTHS = (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000)
_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="black")]


@dataclass
class Markers:
    """Points to draw over an image, in nm (x = column axis, y = row axis, pointing down)."""

    x_nm: np.ndarray
    y_nm: np.ndarray
    label: str
    color: str = "#ff3b30"
    marker: str = "+"
    size: float = 60.0
    filled: bool = True


def scale_bar_nm(width_nm: float, fraction: float = 0.25) -> float:
    """The longest 'nice' length (nm) not above ``fraction`` of the field width."""
    target = max(width_nm * fraction, _BAR_LENGTHS[0])
    return float(max(b for b in _BAR_LENGTHS if b <= target))


def format_nm(length_nm: float) -> str:
    """``500 nm``, ``1 µm``, ``2.5 µm``."""
    if length_nm >= 1000:
        return f"{length_nm / 1000:g} µm"
    return f"{length_nm:g} nm"


def magnification(n_pixels: int, target_px: int = 320) -> int:
    """Integer nearest-neighbour magnification so that ``n_pixels`` spans about ``target_px``."""
    return max(1, int(round(target_px / max(int(n_pixels), 1))))


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure to a uint8 RGB array [H, W, 3]."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_image(
    image: np.ndarray,
    pixel_size_nm: float,
    title: str = "",
    cmap: str = "inferno",
    colorbar_label: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    markers: Sequence[Markers] = (),
    target_px: int = 320,
    dpi: int = 100,
    colorbar: bool = True,
    title_size: float = 10,
) -> np.ndarray:
    """An image [H, W] with colour bar and scale bar, as a uint8 RGB array.

    Parameters
    ----------
    image : array [H, W]
    pixel_size_nm : float
        Side of one pixel of ``image`` in nm (the camera pixel for frames, a/4 for KDEs).
    title, cmap, colorbar_label : str
    vmin, vmax : float, optional
        Colour range; default the image's finite min and max.
    markers : sequence of Markers
        Point sets to overlay (nm); a legend is drawn when any is given.
    target_px : int
        About this many screen pixels across the image; pixels are magnified by an integer
        factor (nearest neighbour), never below 1 (large images keep their native size).
    colorbar : bool
        Draw the colour bar (thumbnails that share one colour range can leave it out).
    title_size : float
        Font size of the title, points.

    :func:`image_axes_px` gives where the image lies in the returned array (for clicks).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"render_image expects a 2D image, got shape {img.shape}")
    h, w = img.shape
    mag = magnification(max(h, w), target_px)
    title = wrap_title(title, w * mag / dpi + 0.24, title_size)  # centred over the image, within the figure
    mag, left, right, top, bottom = _layout(h, w, target_px, title.count("\n") + 1 if title else 0, bool(markers),
                                            colorbar, title_size)
    # axes size in inches so that one data pixel is exactly `mag` screen pixels
    ax_w, ax_h = w * mag / dpi, h * mag / dpi
    fig = Figure(figsize=(ax_w + left + right, ax_h + top + bottom), dpi=dpi)
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, bottom / fh, ax_w / fw, ax_h / fh))
    cax = fig.add_axes(((left + ax_w + 0.1) / fw, bottom / fh, 0.14 / fw, ax_h / fh)) if colorbar else None

    finite = img[np.isfinite(img)]
    lo = float(finite.min()) if vmin is None and finite.size else vmin
    hi = float(finite.max()) if vmax is None and finite.size else vmax
    lo = 0.0 if lo is None else lo
    hi = lo + 1.0 if hi is None or hi <= lo else hi
    width_nm, height_nm = w * pixel_size_nm, h * pixel_size_nm
    im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", resample=False,
                   extent=(0.0, width_nm, height_nm, 0.0))
    ax.set_xlim(0.0, width_nm)
    ax.set_ylim(height_nm, 0.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=title_size, pad=6)
    if cax is not None:
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.ax.yaxis.get_offset_text().set_fontsize(7)
        if colorbar_label:
            cb.set_label(colorbar_label, fontsize=8)

    for m in markers:
        if len(m.x_nm) == 0:
            ax.scatter([], [], s=m.size, marker=m.marker, label=m.label, c=m.color)
            continue
        if m.filled:
            ax.scatter(m.x_nm, m.y_nm, s=m.size, marker=m.marker, c=m.color, linewidths=1.2, label=m.label)
        else:
            ax.scatter(m.x_nm, m.y_nm, s=m.size, marker=m.marker, facecolors="none", edgecolors=m.color,
                       linewidths=1.2, label=m.label)
    if markers:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(markers), fontsize=8, frameon=False,
                  handletextpad=0.3, borderpad=0.2, columnspacing=1.2, markerscale=0.8)

    _draw_scale_bar(ax, width_nm, height_nm)
    out = figure_to_array(fig)
    fig.clear()
    return out


def wrap_title(title: str, width_in: float, size_pt: float = 10) -> str:
    """``title`` broken into lines that fit ``width_in`` inches at ``size_pt`` points (about 0.55 em a character)."""
    if not title:
        return ""
    chars = max(8, int(width_in * 72 / (0.55 * size_pt)))
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False)) or title


def _layout(h: int, w: int, target_px: int, title: int | bool, markers: bool, colorbar: bool = True,
            title_size: float = 10) -> tuple[int, float, float, float, float]:
    """(magnification, left, right, top, bottom margins in inches) of :func:`render_image`; ``title``: its lines."""
    # margins: colour bar on the right, title on top (one line height per extra line), marker legend below
    lines = int(title)
    top = (0.38 + (title_size - 10) / 72.0 * 1.4 + (lines - 1) * 1.25 * title_size / 72.0) if lines else 0.12
    return (magnification(max(h, w), target_px), 0.12, 1.05 if colorbar else 0.12, top,
            0.34 if markers else 0.12)


def image_axes_px(shape: tuple[int, int], target_px: int = 320, title: bool = True, markers: bool = False,
                  dpi: int = 100, colorbar: bool = True, title_size: float = 10) -> tuple[float, float, int]:
    """(left, top, magnification) of the image inside :func:`render_image`'s array, in array pixels.

    Array pixel (X, Y) shows image pixel column ``(X - left) / mag``, row ``(Y - top) / mag``:
    multiply by the pixel size for nm (a click on the picture -> a position in the sample).
    """
    mag, left, _, top, _ = _layout(int(shape[0]), int(shape[1]), target_px, title, markers, colorbar, title_size)
    return left * dpi, top * dpi, mag


def _draw_scale_bar(ax, width_nm: float, height_nm: float) -> None:
    bar = scale_bar_nm(width_nm)
    pad = 0.05 * width_nm
    thick = 0.018 * height_nm
    y0 = height_nm - pad
    ax.add_patch(Rectangle((pad, y0 - thick), bar, thick, facecolor="white", edgecolor="black", linewidth=0.6))
    ax.text(pad + bar / 2, y0 - thick - 0.012 * height_nm, format_nm(bar), color="white", ha="center", va="bottom",
            fontsize=8, fontweight="bold", path_effects=_OUTLINE)


def plot_rmse_vs_crlb(
    photons: np.ndarray,
    rmse_nm: np.ndarray,
    crlb_photons: np.ndarray,
    sqrt_crlb_nm: np.ndarray,
    title: str,
    ratio: np.ndarray | None = None,
    dpi: int = 100,
) -> np.ndarray:
    """Log-log plot of the measured lateral RMSE against the lateral sqrt(CRLB), as RGB array.

    Parameters
    ----------
    photons, rmse_nm : arrays
        Photon levels of the sweep and the measured lateral RMSE (nm); NaN points are skipped.
    crlb_photons, sqrt_crlb_nm : arrays
        A dense photon grid and sqrt(CRLB_x + CRLB_y) (nm) on it, drawn as a line.
    title : str
        Should say which mode (DeepSTORM / DDPM) produced the RMSE.
    ratio : array, optional
        RMSE / sqrt(CRLB) per level, written next to the points.
    """
    fig = Figure(figsize=(6.4, 4.2), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(crlb_photons, sqrt_crlb_nm, "-", color="#222222", lw=1.6, label=r"$\sqrt{\mathrm{CRLB}_x+\mathrm{CRLB}_y}$")
    ok = np.isfinite(rmse_nm)
    ax.plot(np.asarray(photons)[ok], np.asarray(rmse_nm)[ok], "o", color="#d62728", ms=7, label="measured lateral RMSE")
    if ratio is not None:
        for p, r, q in zip(np.asarray(photons)[ok], np.asarray(rmse_nm)[ok], np.asarray(ratio)[ok]):
            ax.annotate(f"{q:.2f}x", (p, r), textcoords="offset points", xytext=(6, 6), fontsize=8, color="#d62728")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.FuncFormatter(_minor_label))
    ax.set_xlabel("photons per emitter")
    ax.set_ylabel("lateral localization error (nm)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = figure_to_array(fig)
    fig.clear()
    return out


def _minor_label(v: float, _pos=None) -> str:
    """Label the 2x and 5x minor ticks of a log axis only (keeps the axis readable)."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def placeholder(text: str, width_px: int = 320, height_px: int = 240, dpi: int = 100) -> np.ndarray:
    """A light-grey panel with a centred message (e.g. 'no variance in DeepSTORM mode')."""
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    fig.patch.set_facecolor("#f3f4f6")
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="#6b7280", wrap=True)
    out = figure_to_array(fig)
    fig.clear()
    return out


def percentile_range(images, q: float = 99.8) -> tuple[float, float]:
    """(0 or the min, high percentile) of the finite values of one or more images."""
    vals = np.concatenate([np.asarray(i, dtype=np.float64).ravel() for i in images])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo = min(0.0, float(vals.min()))
    hi = float(np.percentile(vals, q))
    if not math.isfinite(hi) or hi <= lo:
        hi = float(vals.max()) if vals.max() > lo else lo + 1.0
    return lo, hi
