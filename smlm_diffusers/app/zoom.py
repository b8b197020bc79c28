"""The zoomed uncertainty view: one small region of a frame, where the molecules are blobs.

Left, the raw frame (camera pixels, ADU) with every molecule's 1-sigma ellipse drawn to
scale and coloured by its sigma, and the localizations of each posterior sample scattered
around it; right, the per-pixel variance of the samples (where they disagree) with the same
ellipses. A molecule the model is unsure of stands out three ways: a large, bright ellipse,
a wide cloud of sample positions, and a bright variance patch. In DeepSTORM-only mode the
ellipses are the Cramer-Rao bound at the fitted photons and there are no samples: the right
panel shows the DeepSTORM KDE instead.

The region is chosen by :func:`crowded_window` (the square of ``window_px`` camera pixels
centred on the molecules' density peak at that scale) or centred on a point the user picks.
Everything follows the pixel geometry of docs/conventions.md (nm, the image's outer top-left
corner at (0, 0)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import cm, colormaps, colors, patheffects, ticker
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerPatch
from matplotlib.patches import Ellipse

from ..visualization import figure_to_array, format_nm, percentile_range, scale_bar_nm

DEFAULT_WINDOW_PX = 8  # camera pixels a side (864 nm at 108 nm pixels)
MIN_ELLIPSE_PX = 16  # the median 1-sigma ellipse is drawn at least this many screen pixels across
ELLIPSE_FACTORS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
_FIG_IN, _DPI, _AXES_FRACTION = (12.4, 6.3), 100, 0.39  # figure size (inches), its dpi, one panel's width
_OUTLINE = [patheffects.withStroke(linewidth=2.2, foreground="black")]
SIGMA_CMAP = "plasma"
CROWD_DENSITY_KEPT = 0.8  # a window moved off the crowd's peak to frame its molecules whole keeps this much density
SIGMA_PERCENTILE = 95  # the sigma colour scale ends here (a data point, never the largest of two or more)


def crowded_window(x_nm, y_nm, shape_px: tuple[int, int], pixel_size_nm: float,
                   window_px: int = DEFAULT_WINDOW_PX, margin_px: float | None = None) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), camera pixels, of the ``window_px`` square centred on the most crowded region.

    The crowd is where the molecules' density at the window's scale peaks: a Gaussian kernel of
    sd a quarter window summed at each window's centre. (The count of molecules a window holds
    would reward windows whose edges just reach a crowd's outliers: the crowd's rim, its centre
    empty.) Of the windows holding at least :data:`CROWD_DENSITY_KEPT` of the peak density, the
    one with the fewest molecules in its border band (closer than ``margin_px``, default a
    sixteenth of the window and at least half a pixel, to its edge) wins, so that ellipses,
    samples and labels are seen whole where that costs little of the crowd; then the densest.
    With no molecules, the centre of the frame.
    """
    h, w = (int(s) for s in shape_px)
    n = max(1, min(int(window_px), h, w))
    m = max(0.5, n / 16) if margin_px is None else float(margin_px)
    m = min(m, n / 2 - 1e-6)
    x = np.asarray(x_nm, np.float64) / pixel_size_nm
    y = np.asarray(y_nm, np.float64) / pixel_size_nm
    if len(x) == 0:
        return window_at((h * pixel_size_nm / 2, w * pixel_size_nm / 2), shape_px, pixel_size_nm, n)
    r0 = np.arange(h - n + 1, dtype=np.float64)[:, None]  # candidate windows: rows [R, 1], columns [C, 1]
    c0 = np.arange(w - n + 1, dtype=np.float64)[:, None]
    sd = n / 4
    density = np.exp(-0.5 * ((y - (r0 + n / 2)) / sd) ** 2) @ np.exp(-0.5 * ((x - (c0 + n / 2)) / sd) ** 2).T  # [R, C]
    on_y = (y >= r0) & (y < r0 + n)  # [R, N]: inside the window along y
    on_x = (x >= c0) & (x < c0 + n)
    in_y = (y >= r0 + m) & (y < r0 + n - m)  # framed along y: inside and off the border band
    in_x = (x >= c0 + m) & (x < c0 + n - m)
    band = on_y.astype(np.float64) @ on_x.T.astype(np.float64) - in_y.astype(np.float64) @ in_x.T.astype(np.float64)
    density /= density.max()  # in (0, 1], so that one molecule in the band outweighs any density
    score = np.where(density >= CROWD_DENSITY_KEPT, density - band, -np.inf)
    row, col = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(row), int(col), int(row) + n, int(col) + n


def window_at(centre_yx_nm: tuple[float, float], shape_px: tuple[int, int], pixel_size_nm: float,
              window_px: int = DEFAULT_WINDOW_PX) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the ``window_px`` square around a point (y_nm, x_nm), kept inside the frame."""
    h, w = (int(s) for s in shape_px)
    n = max(1, min(int(window_px), h, w))
    cy, cx = (float(v) / pixel_size_nm for v in centre_yx_nm)
    r0 = int(np.clip(round(cy - n / 2), 0, h - n))
    c0 = int(np.clip(round(cx - n / 2), 0, w - n))
    return r0, c0, r0 + n, c0 + n


def localize_samples(pipe, samples: np.ndarray, pixel_size_nm: float, threshold: float | None = None) -> pd.DataFrame:
    """Localizations of each posterior sample: frame, sample, x_nm, y_nm (as the pipeline finds them).

    ``samples`` [F, K, uH, uW] in KDE density units (``out.samples``); each sample KDE is
    localized as the pipeline does before linking them (:meth:`SMLMDiffusionPipeline.localize_density`).
    """
    import torch

    f, k = samples.shape[:2]
    if f * k == 0:
        return pd.DataFrame({"frame": pd.Series(dtype=np.int64), "sample": pd.Series(dtype=np.int64),
                             "x_nm": pd.Series(dtype=np.float64), "y_nm": pd.Series(dtype=np.float64)})
    kde = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32).reshape(f * k, *samples.shape[2:]))
    locs = pipe.localize_density(kde, pixel_size_nm=pixel_size_nm, threshold=threshold)
    out = pd.DataFrame({"frame": (locs["frame"].to_numpy() // k).astype(np.int64),
                        "sample": (locs["frame"].to_numpy() % k).astype(np.int64),
                        "x_nm": locs["x_nm"].to_numpy(np.float64), "y_nm": locs["y_nm"].to_numpy(np.float64)})
    return out


def ellipse_factor(sigma_nm, window_nm: float, axes_px: float, min_px: float = MIN_ELLIPSE_PX) -> int:
    """The smallest of :data:`ELLIPSE_FACTORS` that draws the median 1-sigma ellipse (diameter 2 sigma)
    at least ``min_px`` screen pixels across, and the smallest at least half that, in a panel of ``axes_px``
    pixels showing ``window_nm``; 1 (to scale) where they already are. (The median alone left a 4 nm
    molecule 4 px across beside 20 nm ones.)"""
    sig = np.asarray(sigma_nm, np.float64)
    sig = sig[np.isfinite(sig) & (sig > 0)]
    if sig.size == 0:
        return 1
    px_median, px_min = (2 * float(v) * axes_px / window_nm for v in (np.median(sig), sig.min()))
    return next((k for k in ELLIPSE_FACTORS if k * px_median >= min_px and k * px_min >= min_px / 2),
                ELLIPSE_FACTORS[-1])


def _inside(df: pd.DataFrame | None, x0, x1, y0, y1) -> pd.DataFrame:
    if df is None:
        return pd.DataFrame({"x_nm": pd.Series(dtype=np.float64), "y_nm": pd.Series(dtype=np.float64)})
    keep = df["x_nm"].between(x0, x1) & df["y_nm"].between(y0, y1)
    return df[keep]


def _sci() -> ticker.ScalarFormatter:
    """Colour-bar labels with a common power of ten (no '0.0001' repeated down the bar)."""
    fmt = ticker.ScalarFormatter(useMathText=True)
    fmt.set_powerlimits((-2, 3))
    return fmt


def _scale_bar(ax, x0, x1, y1, width_nm):
    bar = scale_bar_nm(width_nm, 0.3)
    pad = 0.05 * width_nm
    ax.plot([x0 + pad, x0 + pad + bar], [y1 - pad, y1 - pad], color="white", lw=4, solid_capstyle="butt",
            path_effects=[patheffects.withStroke(linewidth=6, foreground="black")])
    ax.text(x0 + pad + bar / 2, y1 - pad - 0.03 * width_nm, format_nm(bar), color="white", ha="center", va="bottom",
            fontsize=10, fontweight="bold", path_effects=_OUTLINE)


def sigma_colour_top(sigma_nm) -> float:
    """Top of the sigma colour scale, nm: the :data:`SIGMA_PERCENTILE` th percentile of the finite sigmas (a
    data point, ``method="lower"``, so the single largest of two or more never sets it), at least twice their
    lower median (alike sigmas stay alike and a few larger ones stand out). One 150 nm outlier among 3 nm
    sigmas saturates at the top colour (the colour bar's arrow, its label says its size) instead of
    crushing every other molecule into the bottom colour."""
    s = np.asarray(sigma_nm, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return 1.0
    top = max(float(np.percentile(s, SIGMA_PERCENTILE, method="lower")),
              2.0 * float(np.percentile(s, 50, method="lower")))
    return max(top, 1e-3)


def _legend_ellipse(legend, orig_handle, xdescent, ydescent, width, height, fontsize):
    """A legend key drawn as the ellipses are: an unfilled circle with their edge colour and line style."""
    return Ellipse((width / 2 - xdescent, height / 2 - ydescent), 1.2 * height, 1.2 * height)


def _draw_molecules(ax_l, ax_r, mol: pd.DataFrame, sig: np.ndarray, k: int, colour, x0: float, width: float
                    ) -> list[dict]:
    """Each molecule's 1-sigma ellipse (``k`` times its size), centre and label on both panels: solid when
    it is certain (probability 1), dashed otherwise; ``colour(sigma)`` its colour on the left panel. An
    ellipse is clipped to its panel (one larger than the view shows as an arc; its label says so).
    Returns what was drawn per molecule with a sigma: sigma_nm, colour (hex), linestyle, beyond_view."""
    prob = mol["probability"].to_numpy(np.float64) if "probability" in mol else np.ones(len(mol))
    drawn = []
    for (x, y, sx, sy), s, p in zip(mol[["x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm"]].to_numpy(np.float64), sig, prob):
        if not np.isfinite(s):
            ax_l.plot(x, y, "+", color="white", ms=10, mew=1.5, zorder=5)
            continue
        color, ls = colour(s), ("-" if p >= 0.999 else "--")
        for ax, ec, lw in ((ax_l, color, 2.0), (ax_r, "white", 1.2)):
            patch = ax.add_patch(Ellipse((x, y), 2 * k * sx, 2 * k * sy, fill=False, ec=ec, lw=lw, zorder=5, ls=ls,
                                         clip_on=True))
            patch.set_clip_path(ax.patch)
            ax.plot(x, y, "+", color=ec, ms=8, mew=1.2, zorder=5)
        beyond = bool(k * max(sx, sy) > 0.5 * width)  # wider than the view
        drawn.append({"sigma_nm": float(s), "colour": colors.to_hex(color), "linestyle": ls, "beyond_view": beyond})
        text = f"{s:.0f} nm" if s >= 9.5 else f"{s:.1f} nm"
        if beyond:
            text += "\nellipse beyond view"
        if p < 0.999:
            text += f"\np {p:.2f}"
        # a label goes to the left of its molecule where it would run off the right edge (about 0.014 of the
        # panel per character at this font size)
        right_side = x + (0.035 + 0.014 * max(map(len, text.split("\n")))) * width < x0 + width
        ax_l.text(x + (0.035 if right_side else -0.035) * width, y - 0.02 * width, text, color=color, fontsize=9,
                  fontweight="bold", ha="left" if right_side else "right", path_effects=_OUTLINE, zorder=6,
                  clip_on=True)
    return drawn


def _legend_keys(drawn: list[dict], k: int) -> list[tuple[Ellipse, str]]:
    """Legend keys that look like the drawn ellipses: the colour of the median-sigma molecule of each line
    style drawn (solid: certain; dashed: probability below 1)."""
    keys = []
    for ls, what in (("-", ""), ("--", "p < 1")):
        same = sorted((d for d in drawn if d["linestyle"] == ls), key=lambda d: d["sigma_nm"])
        if not same:
            continue
        label = "1σ ellipse" + ("" if k == 1 else f" ×{k}")
        label = label if not what else (what if len(keys) else f"{label}, {what}")
        keys.append((Ellipse((0, 0), 1, 1, fill=False, ec=same[(len(same) - 1) // 2]["colour"], lw=2.0, ls=ls), label))
    return keys


def _panels(crop, right, right_label: str, box, dpi: int):
    """The figure, its left panel (the raw crop, grey) and colour-bar axes, and its right panel (``right``,
    magma, with its colour bar), both on the window's extent ``box`` = (x0, x1, y0, y1) nm, no ticks."""
    x0, x1, y0, y1 = box
    fig = Figure(figsize=_FIG_IN, dpi=dpi)
    ax_l = fig.add_axes((0.03, 0.12, _AXES_FRACTION, 0.76))
    cax_l = fig.add_axes((0.43, 0.12, 0.012, 0.76))
    ax_r = fig.add_axes((0.52, 0.12, _AXES_FRACTION, 0.76))
    cax_r = fig.add_axes((0.92, 0.12, 0.012, 0.76))
    extent = (x0, x1, y1, y0)
    ax_l.imshow(crop, cmap="gray", interpolation="nearest", extent=extent)
    lo, hi = percentile_range([right], 99.5)
    im_r = ax_r.imshow(right, cmap="magma", interpolation="nearest", extent=extent, vmin=max(lo, 0.0), vmax=hi)
    cb_r = fig.colorbar(im_r, cax=cax_r, format=_sci())
    cb_r.set_label(right_label, fontsize=10)
    cb_r.ax.tick_params(labelsize=9)
    for ax in (ax_l, ax_r):
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, ax_l, cax_l, ax_r


def _plotted(mol: pd.DataFrame, window_nm, k: int, axes_px: float, sigma_top: float, drawn: list[dict],
             legend: list[dict]) -> dict:
    """What :func:`render_zoom` drew, JSON-ready (its docstring)."""
    x0, y0, x1, y1 = window_nm
    xy = mol[["x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm"]].to_numpy(np.float64)
    diam = 2 * k * np.minimum(xy[:, 2], xy[:, 3]) * axes_px / (x1 - x0)
    return {"window_nm": [x0, y0, x1, y1], "molecules_nm": np.round(xy, 3).tolist(), "ellipse_factor": k,
            "axes_px": axes_px, "min_ellipse_px": float(np.nanmin(diam)) if np.isfinite(diam).any() else None,
            "sigma_colour_range_nm": [0.0, float(sigma_top)], "ellipses": drawn, "legend": legend}


def render_zoom(
    frame_adu: np.ndarray,
    molecules: pd.DataFrame,
    pixel_size_nm: float,
    upsampling: int,
    window: tuple[int, int, int, int],
    right_image: np.ndarray,
    right_label: str,
    right_title: str,
    samples: pd.DataFrame | None = None,
    ground_truth: pd.DataFrame | None = None,
    title: str = "",
    sigma_note: str = "1σ ellipses",
    samples_label: str = "sample localizations",
    dpi: int = _DPI,
    return_info: bool = False,
):
    """The two-panel zoom (module docstring) as a uint8 RGB array (and, with ``return_info``, what it plots).

    Ellipses of sigmas too small to see at the window's scale are drawn magnified by a round
    factor (:func:`ellipse_factor`), stated in the panel's title and legend; positions and
    sample dots stay to scale. The info dict (JSON-ready) holds the window (``window_nm``: x0,
    y0, x1, y1), the molecules drawn (``molecules_nm``: x, y, sigma_x, sigma_y), the
    ``ellipse_factor``, the panel's width in screen pixels (``axes_px``) and the smallest drawn
    ellipse's diameter (``min_ellipse_px``), the sigma colour scale (``sigma_colour_range_nm``, from
    :func:`sigma_colour_top` of the frame's molecules), each drawn ellipse (``ellipses``: sigma_nm, colour,
    linestyle, beyond_view) and the legend's ellipse keys (``legend``: label, colour, linestyle), each the
    colour and style of a drawn ellipse.

    Parameters
    ----------
    frame_adu : array [H, W]
        The raw frame.
    molecules : DataFrame
        The frame's molecules: x_nm, y_nm, sigma_x_nm, sigma_y_nm (+ probability).
    pixel_size_nm : float
        Camera pixel size.
    upsampling : int
        KDE grid factor of ``right_image``.
    window : (row0, col0, row1, col1)
        The region, camera pixels.
    right_image : array [uH, uW]
        Variance of the samples (or the DeepSTORM KDE) on the KDE grid, for the right panel.
    right_label, right_title : str
        Its colour-bar label and title.
    samples : DataFrame, optional
        Per-sample localizations (x_nm, y_nm) to scatter.
    ground_truth : DataFrame, optional
        True positions (simulations), drawn as small crosses.
    sigma_note : str
        Start of the left panel's title (the ellipse scale follows it).
    """
    a, u = float(pixel_size_nm), int(upsampling)
    r0, c0, r1, c1 = window
    x0, x1, y0, y1, width = c0 * a, c1 * a, r0 * a, r1 * a, (c1 - c0) * a
    crop = np.asarray(frame_adu, np.float64)[r0:r1, c0:c1]
    right = np.asarray(right_image, np.float64)[r0 * u:r1 * u, c0 * u:c1 * u]
    mol = _inside(molecules, x0, x1, y0, y1)
    mol = mol.assign(**{c: np.nan for c in ("sigma_x_nm", "sigma_y_nm") if c not in mol})
    smp = _inside(samples, x0, x1, y0, y1)
    gt = _inside(ground_truth, x0, x1, y0, y1)
    sig = np.sqrt((mol["sigma_x_nm"].to_numpy(np.float64) ** 2 + mol["sigma_y_nm"].to_numpy(np.float64) ** 2) / 2)
    finite = np.isfinite(sig)
    # from 0, so that alike sigmas look alike; its top robust (sigma_colour_top) over the frame's molecules,
    # so that one outlier neither sets it nor makes a window's colours differ from the next window's
    every = molecules if molecules is not None and len(molecules) else mol
    every_sig = (np.sqrt((every["sigma_x_nm"].to_numpy(np.float64) ** 2 + every["sigma_y_nm"].to_numpy(np.float64) ** 2)
                         / 2) if {"sigma_x_nm", "sigma_y_nm"} <= set(every.columns) else sig)
    s_top = sigma_colour_top(every_sig)
    norm = colors.Normalize(vmin=0.0, vmax=s_top)
    cmap = colormaps[SIGMA_CMAP]

    axes_px = _FIG_IN[0] * dpi * _AXES_FRACTION
    k = ellipse_factor(sig, width, axes_px)
    scale = "to scale" if k == 1 else (f"×{k} (to scale {2 * np.nanmin(sig) * axes_px / width:.0f}–"
                                       f"{2 * np.nanmax(sig) * axes_px / width:.0f} px across)")

    fig, ax_l, cax_l, ax_r = _panels(crop, right, right_label, (x0, x1, y0, y1), dpi)
    if len(smp):
        ax_l.scatter(smp["x_nm"], smp["y_nm"], s=10, c="#7fffd4", edgecolors="black", linewidths=0.3, alpha=0.8,
                     label=samples_label, zorder=3)
    if len(gt):
        ax_l.scatter(gt["x_nm"], gt["y_nm"], s=40, marker="x", c="#39ff14", linewidths=1.2, label="ground truth",
                     zorder=4)
    drawn = _draw_molecules(ax_l, ax_r, mol, sig, k, lambda v: cmap(norm(v)), x0, width)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    cb_l = fig.colorbar(sm, cax=cax_l, extend="max" if (sig[finite] > s_top).any() else "neither")
    cb_l.set_label("molecule 1σ (nm)", fontsize=10)
    cb_l.ax.tick_params(labelsize=9)
    _scale_bar(ax_l, x0, x1, y1, width)
    _scale_bar(ax_r, x0, x1, y1, width)
    ax_l.set_title(f"Frame: {sigma_note} {scale}", fontsize=11)
    ax_r.set_title(right_title, fontsize=11)
    keys = _legend_keys(drawn, k)
    handles, labels = ax_l.get_legend_handles_labels()
    handles, labels = handles + [h for h, _ in keys], labels + [lab for _, lab in keys]
    if handles:
        ax_l.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=len(handles), fontsize=9,
                    frameon=False, handler_map={Ellipse: HandlerPatch(patch_func=_legend_ellipse)})
    if title:
        fig.suptitle(title, fontsize=12, y=0.975)
    out = figure_to_array(fig)
    fig.clear()
    if not return_info:
        return out
    legend = [{"label": lab, "colour": colors.to_hex(h.get_edgecolor()), "linestyle": h.get_linestyle()}
              for h, lab in keys]
    return out, _plotted(mol, (x0, y0, x1, y1), k, axes_px, s_top, drawn, legend)
