"""What the app shows of a run, as pictures (uint8 RGB arrays), tables and Markdown: no Gradio here.

DeepSTORM-only runs (no samples) show only what applies: the DeepSTORM KDE and the
molecules, whose sigma is the Cramer-Rao bound at the photons and background fitted on the
frame; no gallery, sample mean or variance. Frame numbers count from 0 (as the table, the API
and the Picasso file do); the ThunderSTORM CSV counts from 1, as ThunderSTORM does.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..visualization import Markers, image_axes_px, percentile_range, render_image
from . import zoom
from .core import RunResult, run_metrics

RAW_TARGET_PX = 320  # screen pixels across the raw frame picture (the click-to-zoom mapping uses it)
GALLERY_TARGET_PX = 256
FRAME_NOTE = "frames count from 0 here and in the Picasso file; the ThunderSTORM CSV counts from 1"

TABLE_COLUMNS = {
    "frame": "frame",
    "x_nm": "x [nm]",
    "y_nm": "y [nm]",
    "sigma_x_nm": "σx [nm]",
    "sigma_y_nm": "σy [nm]",
    "photons": "photons",
    "background": "background [photons/px]",
    "probability": "probability",
    "n_samples": "samples",
    "kde_mass": "KDE mass",
}
_WEIGHED_ONLY, _SAMPLE_ONLY = ("probability",), ("n_samples",)


def header_markdown(model_name: str, camera, psf_sigma_px: float, upsampling: int, model_camera=None) -> str:
    """The line under the title: the model and the camera the page's results used (``camera``: the last
    run's; before a run, the model's, which simulations use and the upload form starts from). Where it is
    not the model's own (``model_camera``), the model's pixel size is said too."""
    from .inputs import MAX_FRAME_SIZE, MAX_FRAMES

    a = camera.pixel_size_nm
    own = ""
    if model_camera is not None and (a, camera.offset, camera.gain, camera.read_noise) != (
            model_camera.pixel_size_nm, model_camera.offset, model_camera.gain, model_camera.read_noise):
        own = f" (this run's; the model's: {model_camera.pixel_size_nm:g} nm pixels)"
    return (f"Model: `{model_name}` · camera {a:g} nm pixels, offset {camera.offset:g} ADU, gain {camera.gain:g} "
            f"ADU/e⁻, read noise {camera.read_noise:g} e⁻{own} · trained PSF σ {psf_sigma_px:g} px · KDE grid "
            f"{a / upsampling:g} nm · runs on CPU: frames ≤ {MAX_FRAME_SIZE}² px, ≤ {MAX_FRAMES} frames.")


def duration(seconds: float) -> str:
    """``45 ms``, ``3.2 s``, ``2 min 5 s``."""
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _fmt(v, spec=".3f", unit=""):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:{spec}}{unit}"


def markers(result: RunResult, frame: int) -> list[Markers]:
    out = []
    gt = result.frame_ground_truth(frame)
    if gt is not None:
        out.append(Markers(gt["x_nm"].to_numpy(), gt["y_nm"].to_numpy(), "ground truth", color="#00e5ff",
                           marker="o", size=70, filled=False))
    loc = result.frame_localizations(frame)
    out.append(Markers(loc["x_nm"].to_numpy(), loc["y_nm"].to_numpy(), "localizations", color="#ff3b30",
                       marker="+", size=70))
    return out


def frame_table(result: RunResult, frame: int) -> pd.DataFrame:
    """The frame's molecules, rounded, with the columns that apply to the run's mode."""
    loc = result.frame_localizations(frame)
    cols = [c for c in TABLE_COLUMNS if c in loc.columns and (result.has_samples or c not in _SAMPLE_ONLY)
            and (result.has_probability or c not in _WEIGHED_ONLY)]
    loc = loc[cols].copy()
    for c in ("x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm", "kde_mass", "background"):
        if c in loc:
            loc[c] = loc[c].astype(float).round(1)
    if "photons" in loc:
        loc["photons"] = loc["photons"].astype(float).round(0)
    if "probability" in loc:
        loc["probability"] = loc["probability"].astype(float).round(2)
    return loc.rename(columns=TABLE_COLUMNS)


def table_column_widths(table: pd.DataFrame) -> list[str]:
    """Widths of :func:`frame_table`'s columns, as percentages of the panel: each in proportion to its longest
    header word or value (headers wrap between words, never inside one), so that all of them fit."""
    need = []
    for col in table.columns:
        values = table[col].astype(str)
        longest = max([len(w) for w in str(col).split()] + [int(values.str.len().max()) if len(values) else 0])
        need.append(longest + 3)  # the cell's padding, about three characters
    total = sum(need)
    return [f"{100 * n / total:.2f}%" for n in need]


def samples_info(deepstorm_mode: str) -> str:
    """The samples slider's note: what 0 runs (``deepstorm_mode``: the pipeline's name for it) and that it is the
    default of the command line and the API, which the app departs from to show the samples."""
    if deepstorm_mode == "DeepSTORM":
        return "0 = DeepSTORM only (fastest; σ is then the CRLB)"
    return (f"0 = {deepstorm_mode}: the CLI's default, as good in the README's dense table and faster; "
            "the app samples to show them")


def table_label(result: RunResult) -> str:
    """The table's label: the mode that made it first (the app draws samples; the pipeline's default runs none)."""
    sigma = ("σ: per-molecule uncertainty (each configuration's bound and the spread between configurations); "
             "probability: the weight, by the frame's likelihood, of the configurations that hold the molecule"
             if result.has_probability else "σ: Cramér-Rao bound at the photons and background fitted on the frame "
             "(DeepSTORM only: no samples)")
    if result.arbitrated:
        sigma += " (DeepSTORM's molecules against their pair proposals: no samples)"
    return f"Molecules in this frame, made by {result.mode} ({FRAME_NOTE}). {sigma}"


def metrics_markdown(result: RunResult, frame: int) -> str:
    if result.ground_truth is None:
        n = len(result.localizations)
        return (f"**{len(result.frame_localizations(frame))}** molecules in frame {frame}, **{n}** in the stack.  \n"
                "No ground truth for uploaded data: metrics are shown for simulations.")
    rows = []
    for name, m in (("frame " + str(frame), run_metrics(result, frame)), ("all frames", run_metrics(result))):
        rows.append(f"| {name} | {m['n_gt']} | {m['tp']} / {m['fp']} / {m['fn']} | {_fmt(m['jaccard'])} | "
                    f"{_fmt(m['rmse_nm'], '.1f', ' nm')} | {_fmt(m['efficiency'], '.1f')} | "
                    f"{_fmt(m.get('coverage_1sigma'), '.2f')} |")
    sigma = "the predicted sigma" if result.has_probability else "the CRLB (a lower bound: expect less than 0.68)"
    return ("| | true emitters | TP / FP / FN | Jaccard | lateral RMSE | efficiency | 1σ coverage |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nMatching: Hungarian, 250 nm tolerance. 1σ coverage: fraction of errors within {sigma} "
            "(ideal 0.68).")


def status_markdown(result: RunResult) -> str:
    f, h, w = result.frames.shape
    src = "simulated" if result.source == "simulation" else f"uploaded ({result.source})"
    text = (f"Done: **{result.mode}** on {f} {src} frame{'s' if f > 1 else ''} of {h} × {w} px "
            f"({result.camera.pixel_size_nm:g} nm pixels) in **{duration(result.seconds)}**; "
            f"{len(result.localizations)} molecules.")
    for warning in result.warnings:
        text += f"  \n⚠️ Camera check: {warning}."
    return text


def kde_unit(result: RunResult) -> str:
    """The unit of a KDE pixel, as the CLI's renders say it: ``molecules per 27 nm pixel``."""
    return f"molecules per {result.kde_pixel_nm:g} nm pixel"


def variance_unit(result: RunResult) -> str:
    """The unit of a variance of KDE pixels: ``variance (molecules per 27 nm pixel)²``."""
    return f"variance (molecules per {result.kde_pixel_nm:g} nm pixel)²"


def frame_images(result: RunResult, frame: int) -> dict:
    """raw, deepstorm, gallery (list of (picture, caption)), mean, variance; None where it does not apply."""
    a, ka = result.camera.pixel_size_nm, result.kde_pixel_nm
    unit = kde_unit(result)
    out = {"raw": render_image(result.frames[frame], a, f"Raw frame {frame} (ADU)", cmap="gray", colorbar_label="ADU",
                               markers=markers(result, frame), target_px=RAW_TARGET_PX)}
    ds = result.deepstorm_kde[frame]
    out["deepstorm"] = render_image(ds, ka, "DeepSTORM KDE", colorbar_label=unit, vmin=0.0,
                                    vmax=percentile_range([ds], 99.9)[1])
    if not result.has_samples:
        return out | {"gallery": None, "mean": None, "variance": None}
    lo, hi = 0.0, percentile_range([result.samples[frame], result.kde_mean[frame]], 99.9)[1]
    # thumbnails share the mean's colour range: no colour bar of their own (unreadable when small); the
    # gallery's caption names each one (no title in the picture: one label per sample)
    out["gallery"] = [(render_image(s.astype(np.float32), ka, "", vmin=lo, vmax=hi, colorbar=False,
                                    target_px=GALLERY_TARGET_PX), f"Sample {i + 1}")
                      for i, s in enumerate(result.samples[frame])]
    out["mean"] = render_image(result.kde_mean[frame], ka, f"Mean of {result.num_samples} samples",
                               colorbar_label=unit, vmin=lo, vmax=hi)
    out["variance"] = render_image(result.kde_var[frame], ka, "Per-pixel variance of the samples", cmap="magma",
                                   colorbar_label=variance_unit(result), vmin=0.0,
                                   vmax=percentile_range([result.kde_var[frame]], 99.9)[1])
    return out


def stack_images(result: RunResult) -> tuple[np.ndarray, np.ndarray | None]:
    """The super-resolved image and (DDPM mode) its uncertainty, summed over the frames."""
    ka, n = result.kde_pixel_nm, result.n_frames
    what = "DDPM mean" if result.has_samples else "DeepSTORM KDE"
    over = f", summed over {n} frames" if n > 1 else ""
    s_mean = render_image(result.sum_mean, ka, f"Super-resolved: {what}{over}", colorbar_label=kde_unit(result),
                          vmin=0.0, vmax=percentile_range([result.sum_mean], 99.9)[1])
    if result.sum_var is None:
        return s_mean, None
    s_var = render_image(result.sum_var, ka, f"Uncertainty: variance of the samples{over}", cmap="magma",
                         colorbar_label=variance_unit(result), vmin=0.0,
                         vmax=percentile_range([result.sum_var], 99.9)[1])
    return s_mean, s_var


# -- the zoomed uncertainty view ------------------------------------------------------------------
def click_to_nm(result: RunResult, frame: int, x_px: float, y_px: float) -> tuple[float, float] | None:
    """(x_nm, y_nm) in the sample of a click at (x_px, y_px) on the raw frame picture; None outside the image."""
    h, w = result.frames.shape[1:]
    left, top, mag = image_axes_px((h, w), RAW_TARGET_PX, title=True, markers=True)
    col, row = (float(x_px) - left) / mag, (float(y_px) - top) / mag
    if not (0 <= col <= w and 0 <= row <= h):
        return None
    a = result.camera.pixel_size_nm
    return col * a, row * a


def zoom_window(result: RunResult, frame: int, window_px: int, centre_nm: tuple[float, float] | None = None):
    """(row0, col0, row1, col1): around ``centre_nm`` (x, y), else the frame's most crowded square."""
    shape, a = result.frames.shape[1:], result.camera.pixel_size_nm
    if centre_nm is None:
        loc = result.frame_localizations(frame)
        return zoom.crowded_window(loc["x_nm"], loc["y_nm"], shape, a, window_px)
    return zoom.window_at((centre_nm[1], centre_nm[0]), shape, a, window_px)


def window_centre_um(result: RunResult, window) -> tuple[float, float]:
    """Centre (x, y) of a window, µm."""
    r0, c0, r1, c1 = window
    a = result.camera.pixel_size_nm / 1000
    return round((c0 + c1) / 2 * a, 3), round((r0 + r1) / 2 * a, 3)


def zoom_image(result: RunResult, frame: int, window, return_info: bool = False):
    """The zoomed uncertainty view (:mod:`smlm_diffusers.app.zoom`) of one frame's window
    (and, with ``return_info``, what it plots: :func:`~smlm_diffusers.app.zoom.render_zoom`)."""
    loc = result.frame_localizations(frame)
    samples = None
    if result.sample_localizations is not None:
        sl = result.sample_localizations
        samples = sl[sl["frame"] == frame]
    r0, c0, r1, c1 = window
    a = result.camera.pixel_size_nm
    n_in = int((loc["x_nm"].between(c0 * a, c1 * a) & loc["y_nm"].between(r0 * a, r1 * a)).sum())
    title = (f"Frame {frame}, region x {c0 * a / 1000:.2f}–{c1 * a / 1000:.2f} µm, "
             f"y {r0 * a / 1000:.2f}–{r1 * a / 1000:.2f} µm: {n_in} molecule{'s' if n_in != 1 else ''}")
    if result.has_samples:
        k = result.samples.shape[1]
        right, label = result.kde_var[frame], variance_unit(result)
        right_title = f"Where the {result.num_samples} samples disagree: per-pixel variance"
        note, dots = "1σ ellipses", f"localizations of {k} samples"
    else:
        right, label = result.deepstorm_kde[frame], kde_unit(result)
        right_title = "DeepSTORM KDE (no samples: no variance)"
        note, dots = "1σ = CRLB,", "sample localizations"
    gt = result.frame_ground_truth(frame)
    return zoom.render_zoom(result.frames[frame], loc, a, result.upsampling, window, right, label, right_title,
                            samples=samples, ground_truth=gt, title=title, sigma_note=note, samples_label=dots,
                            return_info=return_info)
