"""What a whole-movie run reads and writes at its edges: the input check, the output paths, the
table and the super-resolved renders, the one-paragraph summary.

Problems with the user's files raise :class:`~smlm_diffusers.movie.resume.MovieError` (one line,
meant for the user): the CLI prints it without a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..screening import describe_counts
from .resume import MovieError

TIFF_SUFFIXES = (".tif", ".tiff")

# what a run writes, as ``smlm-diffusers localize --help`` says it
OUTPUTS_HELP = """\
outputs (-o chooses the table's format by its suffix):
  TABLE.csv            ThunderSTORM table: id, frame (1-based), x [nm], y [nm], sigma [nm]
                       (the PSF sigma used: --psf-sigma, --optics or the model's),
                       intensity [photon], uncertainty [nm],
                       offset [photon], kde_mass (KDE mass of the molecule, in emitters),
                       probability (detection probability: the weight of the configurations
                       that hold it; 1 with --no-arbitrate) and, in ddpm mode,
                       n_samples. intensity and offset are the photons and the background
                       (photons per pixel) fitted jointly on the frame at the molecules.
                       x is the column axis, the outer top-left corner of the image is
                       (0, 0) nm (ThunderSTORM's convention).
                       uncertainty [nm] = sqrt((sigma_x^2 + sigma_y^2) / 2) of the 1-sigma
                       position uncertainty. deepstorm mode: the molecules are fitted jointly
                       on the frame (Poisson maximum likelihood, neighbours fitted together;
                       the folder's refine, on in the shipped ones) and sigma is sqrt(CRLB) of
                       that fit, neighbours and background as nuisance parameters (a folder
                       without refine: the CRLB of an isolated emitter at the fitted photons
                       and background). Where that fit leaves the molecules in doubt, each is
                       also tried as a pair (deepstorm mode's arbitration, the default) and, in
                       ddpm mode, the samples propose configurations of molecules too, each
                       fitted on the frame and weighed by its evidence; sigma_x =
                       sqrt(E_w[bound_x^2] + Var_w[x]) over the configurations that hold the
                       molecule (the fits' bounds and their spread, combined); elsewhere the
                       bound of that fit.
                       Rows whose numbers would be impossible are left out and counted (the
                       closing summary, the YAML's "Rows left out"): failed fits, a sigma not
                       finite or outside [0.1 nm, 10 PSF sigmas], under 1 photon, a position
                       outside the frame.
  TABLE.hdf5 / .h5     Picasso's HDF5 + YAML pair (TABLE.yaml beside it) for Render, undrift,
                       clustering: frame (0-based), x, y in camera pixels with pixel centres at
                       integers (x = x_nm / pixel size - 0.5), photons, sx, sy (PSF sigma, px),
                       bg (photons per pixel), lpx, lpy (the uncertainty above, px), kde_mass
                       [, probability, n_samples]; metadata Frames, Width, Height, Pixelsize,
                       camera. Picasso's loader drops molecules within half a pixel of the
                       top or left edge (x or y < 0).
  RENDER.png / .tif    super-resolved image: the KDE (DeepSTORM, or the mean of the DDPM
                       samples) summed over frames, molecules per KDE pixel (pixel size / 4)
                       as PNG (scale bar, colour bar) and float32 TIFF with its ImageJ
                       calibration (pixel size in nm, as Fiji shows it). Default
                       <table stem>_render.png next to the table; --render sets the PNG path.
  RENDER_uncertainty.* ddpm mode: the per-pixel variance of the DDPM samples summed over
                       frames (the variance of the render), PNG and calibrated float32 TIFF.
"""


def check_stack_path(path: str | os.PathLike) -> Path:
    """An existing TIFF file, or a MovieError that says what is wrong."""
    p = Path(path)
    if not p.exists():
        raise MovieError(f"input file not found: {path}")
    if not p.is_file():
        raise MovieError(f"input is not a file: {path}")
    if p.suffix.lower() not in TIFF_SUFFIXES:
        raise MovieError(f"input must be a TIFF movie (.tif or .tiff), got {path}")
    return p


def stack_shape(path: Path) -> tuple[int, int, int]:
    """(frames, H, W) of a TIFF movie, read from its header."""
    from ..io import tiff_shape

    try:
        return tiff_shape(path)
    except ValueError as err:
        raise MovieError(str(err)) from None


def read_frames(path: Path, ranges: list[tuple[int, int]]):
    """Yield float32 frames [stop - start, H, W] for each (start, stop), reading only those pages."""
    from ..io import iter_tiff_frames

    try:
        yield from iter_tiff_frames(path, ranges=ranges)
    except ValueError as err:
        raise MovieError(str(err)) from None


def check_camera_fits(stack: Path, total: int, camera, n_frames: int = 16, typed=None,
                      source: str = "the model's") -> list[str]:
    """Compare the first frames with the camera (:mod:`smlm_diffusers.camera_check`): MovieError when it
    cannot fit them; the warnings of a doubtful one. ``typed`` (the settings the user gave, default all)
    and ``source`` (whose the others are) as :func:`~smlm_diffusers.camera_check.check_camera`'s."""
    from ..camera_check import check_camera

    frames = next(read_frames(stack, [(0, min(total, n_frames))]))
    result = check_camera(frames, camera, typed=typed, source=source)
    if result.errors:
        raise MovieError("the camera does not fit the frames: " + "; ".join(result.errors)
                         + " (--skip-camera-check to run anyway)")
    return list(result.warnings)


@dataclass(frozen=True)
class OutputPaths:
    """The table, the partial-results folder beside it, and the renders (PNG + calibrated TIFF)."""

    csv: Path
    work: Path
    render_png: Path
    render_tif: Path
    variance_png: Path
    variance_tif: Path


def output_paths(table: str | os.PathLike, render: str | os.PathLike | None = None) -> OutputPaths:
    """The files of a run writing ``table`` (.csv or .hdf5 / .h5); renders default to ``<stem>_render``."""
    from ..io import localization_format

    out = Path(table)
    if out.is_dir():
        raise MovieError(f"-o must be a file path, got the folder {table}")
    try:
        localization_format(out)
    except ValueError as err:
        raise MovieError(f"-o: {err}") from None
    if render is None:
        base = out.with_name(f"{out.stem}_render")
    else:
        r = Path(render)
        base = r.with_suffix("") if r.suffix.lower() in (".png", ".tif", ".tiff") else r
    var = base.with_name(f"{base.name}_uncertainty")
    return OutputPaths(csv=out, work=out.with_name(out.name + ".partial"),
                       render_png=base.with_name(base.name + ".png"), render_tif=base.with_name(base.name + ".tif"),
                       variance_png=var.with_name(var.name + ".png"), variance_tif=var.with_name(var.name + ".tif"))


def write_render(image: np.ndarray, png: Path, tif: Path, camera, upsampling: int, title: str, label: str | None,
                 cmap: str) -> None:
    """A render as float32 TIFF (ImageJ calibration: the KDE pixel in nm) and as PNG (scale and colour bars)."""
    from ..io import write_tiff
    from ..render import render_image

    tif.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(tif, image.astype(np.float32), pixel_size_nm=camera.pixel_size_nm / upsampling)
    render_image(image, camera.pixel_size_nm, upsampling, png, title=title, cmap=cmap, colorbar_label=label)


def write_run_outputs(run, paths: OutputPaths, shape: tuple[int, int], camera, upsampling: int, psf_sigma_px: float,
                      samples: bool, source: str, extra_info: dict | None = None,
                      postprocess: dict | None = None) -> list[Path]:
    """The table and the renders of a finished :class:`~smlm_diffusers.movie.MovieRun`; the files written.

    ``shape`` is (H, W) of a frame; ``samples`` whether the run drew DDPM samples (then the
    variance render is written too). ``postprocess`` (options of
    :func:`~smlm_diffusers.postprocess.postprocess_localizations`): the table is linked and/or
    drift corrected first, its drift trace and summary written beside it, and the summary's
    lines kept in ``run.summary_lines``.
    """
    h, w = shape
    n = run.frames_run
    left_out = describe_counts(run.rejected)
    extra_info = dict(extra_info or {}) | {"Rows left out": left_out or "none"}
    if postprocess:
        from ..postprocess.command import postprocess_run

        written, run.summary_lines = postprocess_run(run, paths, shape, camera, psf_sigma_px, samples, source,
                                                     dict(extra_info or {}), postprocess)
    else:
        written = list(run.write_table(paths.csv, pixel_size_nm=camera.pixel_size_nm, shape=(n, h, w),
                                       psf_sigma_px=psf_sigma_px, samples=samples, camera=camera, source=source,
                                       extra_info=extra_info))
    kde_sum, kde_var = run.render()
    title = f"{source}: {'DDPM mean' if samples else 'DeepSTORM'}, {n} frames"
    write_render(kde_sum, paths.render_png, paths.render_tif, camera, upsampling, title, None, "magma")
    written += [paths.render_png, paths.render_tif]
    if samples:
        label = f"variance (molecules per {camera.pixel_size_nm / upsampling:g} nm pixel)$^2$"
        write_render(kde_var, paths.variance_png, paths.variance_tif, camera, upsampling,
                     f"{source}: DDPM variance, {n} frames", label, "viridis")
        written += [paths.variance_png, paths.variance_tif]
    return written


def run_summary(run, written: list[Path], work: Path, prog: str) -> str:
    """What a run did, in a few lines: localizations, frames, speed, the files, what is left to do."""
    n_new, seconds, rate = run.frames_new, run.seconds, ""
    if n_new and seconds > 0:
        fps = n_new / seconds
        rate = f", {fps:.1f} frames/s" if fps >= 1 else f", {seconds / n_new:.1f} s/frame"
    left_out = describe_counts(run.rejected)
    left_out = f"{prog}: left out of the table: {left_out} (counted in the table's metadata)\n" if left_out else ""
    text = (f"{prog}: {run.localizations_written} localizations in {run.frames_run} frames ({n_new} processed now "
            f"in {seconds:.1f} s{rate})\n" + left_out + "".join(f"{line}\n" for line in getattr(run, "summary_lines", []))
            + "\n".join(f"  wrote {p}" for p in written))
    if not run.complete:
        text += (f"\n{prog}: {run.frames_run} of {run.frames_total} frames done; partial results kept in "
                 f"{work} (re-run without --max-frames to continue)")
    return text


def cpu_only() -> bool:
    """Whether to run on CPU processes: no accelerator, or ``ACCELERATE_USE_CPU`` set.

    ``PartialState()`` sets up several CPU processes (gloo) only when told ``cpu=True``;
    with the default it treats a ``torchrun`` launch on a CPU machine as one process each.
    """
    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    accel = getattr(torch, "accelerator", None)
    available = accel.is_available() if accel is not None else torch.cuda.is_available()
    return not available
