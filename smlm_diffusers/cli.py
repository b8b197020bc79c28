"""The ``smlm-diffusers`` command: localize TIFF movies, estimate a microscope's PSF.

``smlm-diffusers localize STACK.tif -o locs.csv`` streams a movie through the pipeline in
batches of frames (never the whole stack in memory), writes a ThunderSTORM CSV and a
super-resolved render, checkpoints as it goes so that an interrupted run continues where it
stopped, and splits the frames between processes under ``accelerate launch``.

``smlm-diffusers estimate STACK.tif`` measures PSF sigma, background and photons per
emitter from isolated spots (:mod:`smlm_diffusers.psf_estimation`), the numbers a training
config for a new microscope needs.

Camera, pipeline and accelerate imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_MODEL, DEFAULT_SAMPLES, DEFAULT_STEPS, HUB_MODEL_ID, MODEL_ENV

PROG = "smlm-diffusers"
TIFF_SUFFIXES = (".tif", ".tiff")


class CLIError(Exception):
    """A problem with the user's input or options; printed as one line, no traceback."""


# -- argument parsing --------------------------------------------------------------------------
LOCALIZE_EPILOG = f"""\
outputs (-o chooses the table's format by its suffix):
  TABLE.csv            ThunderSTORM table: id, frame (1-based), x [nm], y [nm], sigma [nm]
                       (the model's PSF sigma), intensity [photon], uncertainty [nm],
                       offset [photon], kde_mass (KDE mass of the molecule, in emitters) and,
                       in ddpm mode, probability (fraction of samples that found it) and
                       n_samples. intensity and offset are the photons and the background
                       (photons per pixel) fitted jointly on the frame at the molecules.
                       x is the column axis, the outer top-left corner of the image is
                       (0, 0) nm (ThunderSTORM's convention).
                       uncertainty [nm] = sqrt((sigma_x^2 + sigma_y^2) / 2) of the 1-sigma
                       position uncertainty: in ddpm mode the model's sigma model (spread of
                       the samples + CRLB); in deepstorm mode the Cramer-Rao bound of an
                       isolated emitter at the fitted photons and background (a lower bound;
                       to be replaced by the CRLB of a full MLE refinement).
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

camera check:
  Before localizing, the first frames are compared with the camera (--offset, --gain,
  --read-noise or the model's): pixels below the offset, the background it implies, and the
  noise of the darkest pixels against the camera's noise model. A camera that cannot fit the
  frames stops the run with the option to change and the value the data suggest; a doubtful
  one prints a warning. --skip-camera-check turns this off.

resume:
  Results are checkpointed after every batch of frames in the folder <CSV>.partial/
  (localizations so far, the accumulated render as .npy, and progress.json with the model,
  the options and the frames done). If a run stops (crash, Ctrl-C, killed job, --max-frames),
  re-run the same command: it continues after the last completed batch and writes the same
  files as an uninterrupted run (sampling noise is seeded per batch from --seed). Changing the
  model, input, mode or any numeric option restarts from scratch (with a message); so does
  --restart. --max-frames and the render path may change between runs. The folder is deleted
  once the whole stack is done.

multi-GPU:
  accelerate launch --multi_gpu --num_processes 4 -m smlm_diffusers.cli localize STACK.tif -o locs.csv
  (or torchrun --nproc_per_node 4 -m smlm_diffusers.cli localize ...) splits the batches
  between the processes (one GPU each); each checkpoints its own part in <CSV>.partial/ and
  the main process merges them in frame order: the same files as one process. On CPUs,
  torchrun starts several CPU processes (gloo). Resuming works with any number of processes.

The model is a pipeline folder or a Hugging Face Hub repo id (--model {HUB_MODEL_ID}):
--model, else ${MODEL_ENV}, else the shipped folder pretrained/{DEFAULT_MODEL} found next to the
installed package (from any working directory). Camera options default to the model's config
(the camera it was trained for).
"""


def _int_at_least(minimum: int):
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def _add_camera_options(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_argument_group(f"camera ({default_note})")
    g.add_argument("--offset", type=_finite_float, metavar="ADU", help="camera baseline, ADU")
    g.add_argument("--gain", type=_positive_float, metavar="ADU/e-", help="conversion gain, ADU per photo-electron")
    g.add_argument("--pixel-size", type=_positive_float, metavar="NM", help="camera pixel size in the sample, nm")
    g.add_argument("--read-noise", type=_non_negative_float, metavar="E", help="read noise, photo-electrons rms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Uncertainty-aware SMLM: localize molecules in TIFF movies with DeepSTORM and a "
                    "conditional diffusion model, or estimate a microscope's PSF for training.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    loc = sub.add_parser(
        "localize", help="localize molecules in a TIFF movie (CSV + super-resolved render)",
        description="Localize molecules in a TIFF movie, frame batch by frame batch, with DeepSTORM alone "
                    "or with DDPM posterior samples (per-molecule uncertainty).",
        epilog=LOCALIZE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    loc.add_argument("stack", metavar="STACK.tif", help="grey-level TIFF movie [frames, H, W], raw ADU")
    loc.add_argument("-o", "--output", required=True, metavar="TABLE",
                     help="localization table to write: .csv (ThunderSTORM) or .hdf5 / .h5 (Picasso HDF5 + YAML)")
    loc.add_argument("--model", metavar="PATH_OR_REPO",
                     help=f"pipeline folder or Hub repo id such as {HUB_MODEL_ID} (default ${MODEL_ENV}, "
                          f"else the shipped pretrained/{DEFAULT_MODEL})")
    loc.add_argument("--mode", choices=("ddpm", "deepstorm"), default="ddpm",
                     help="ddpm: DeepSTORM + DDPM samples, per-molecule uncertainty (default); "
                          "deepstorm: the CNN alone, fast, no uncertainty")
    loc.add_argument("--samples", type=_positive_int, default=DEFAULT_SAMPLES, metavar="K",
                     help=f"DDPM samples per frame (default {DEFAULT_SAMPLES})")
    loc.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, metavar="S",
                     help=f"reverse diffusion steps (default {DEFAULT_STEPS})")
    loc.add_argument("--batch-size", type=_positive_int, default=32, metavar="B",
                     help="frames read and processed per batch; also UNet tiles per forward pass (default 32)")
    loc.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampling noise (default 0)")
    loc.add_argument("--threshold", type=_finite_float, metavar="T",
                     help="KDE peak threshold for localization (default: the model's tuned value)")
    loc.add_argument("--min-probability", type=_non_negative_float, metavar="P",
                     help="ddpm: drop molecules found in fewer than this fraction of samples (default: the model's)")
    loc.add_argument("--mixed-precision", choices=("bf16", "no"), default="bf16",
                     help="run the networks under bfloat16 autocast (default) or in float32")
    loc.add_argument("--render", metavar="PNG", help="render PNG path (a .tif of the same name is written too); "
                                                     "default <csv stem>_render.png")
    loc.add_argument("--tile-size", type=_int_at_least(16), default=256, metavar="PX",
                     help="frames larger than this (camera pixels) are processed in tiles of this size plus a "
                          "16-pixel margin (bounded memory; default 256)")
    loc.add_argument("--max-frames", type=_positive_int, metavar="N",
                     help="process only the first N frames (partial results are kept to continue later)")
    loc.add_argument("--restart", action="store_true", help="ignore partial results of an earlier run")
    loc.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")
    loc.add_argument("--skip-camera-check", action="store_true",
                     help="do not compare the frames with the camera before localizing")
    _add_camera_options(loc, "default: the model's config")
    loc.set_defaults(func=cmd_localize)

    est = sub.add_parser(
        "estimate", help="estimate PSF sigma, background and photons per emitter of a movie",
        description="Estimate PSF sigma, background and photons per emitter from bright isolated spots of a "
                    "raw movie (best on sparse frames): the numbers a training config for a new microscope "
                    "needs (train/configs/*.yaml, 'data:').",
    )
    est.add_argument("stack", metavar="STACK.tif", help="grey-level TIFF movie, raw ADU")
    est.add_argument("--out", metavar="YAML", help="also write the estimate (and a 'data:' config block) as YAML")
    est.add_argument("--max-frames", type=_positive_int, default=200, metavar="N",
                     help="analyse at most the first N frames (default 200)")
    est.add_argument("--sigma-guess", type=_positive_float, default=1.0, metavar="PX",
                     help="rough PSF sigma, camera pixels (default 1.0)")
    est.add_argument("--threshold-snr", type=_positive_float, default=8.0, metavar="SNR",
                     help="detection threshold, in robust noise units of the smoothed frame (default 8)")
    _add_camera_options(est, "default: the paper's camera, 108 nm, offset 100 ADU, gain 1, read noise 1.6 e-")
    est.set_defaults(func=cmd_estimate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smlm-diffusers`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        parser.exit(2, f"{PROG} {args.command}: error: {err}\n")


# -- helpers shared by the commands ----------------------------------------------------------
def _log(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def check_stack_path(path: str) -> Path:
    """An existing TIFF file, or a CLIError that says what is wrong."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file not found: {path}")
    if not p.is_file():
        raise CLIError(f"input is not a file: {path}")
    if p.suffix.lower() not in TIFF_SUFFIXES:
        raise CLIError(f"input must be a TIFF movie (.tif or .tiff), got {path}")
    return p


def stack_shape(path: Path) -> tuple[int, int, int]:
    """(frames, H, W) of a TIFF movie, read from its header."""
    from .io import tiff_shape

    try:
        return tiff_shape(path)
    except ValueError as err:
        raise CLIError(str(err)) from None


def read_frames(path: Path, ranges: list[tuple[int, int]]):
    """Yield float32 frames [stop - start, H, W] for each (start, stop), reading only those pages."""
    from .io import iter_tiff_frames

    try:
        yield from iter_tiff_frames(path, ranges=ranges)
    except ValueError as err:
        raise CLIError(str(err)) from None


def camera_from_args(args, defaults) -> "Camera":  # noqa: F821 - imported lazily
    from .simulation import Camera

    try:
        return Camera(
            pixel_size_nm=defaults.pixel_size_nm if args.pixel_size is None else args.pixel_size,
            offset=defaults.offset if args.offset is None else args.offset,
            gain=defaults.gain if args.gain is None else args.gain,
            read_noise=defaults.read_noise if args.read_noise is None else args.read_noise,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None


def check_camera_fits(stack: Path, total: int, camera, quiet: bool = False, n_frames: int = 16) -> None:
    """Compare the first frames with the camera (:mod:`smlm_diffusers.camera_check`): CLIError when it cannot
    fit them, a warning on stderr when it is doubtful."""
    from .camera_check import check_camera

    frames = next(read_frames(stack, [(0, min(total, n_frames))]))
    result = check_camera(frames, camera)
    if result.errors:
        raise CLIError("the camera does not fit the frames: " + "; ".join(result.errors)
                       + " (--skip-camera-check to run anyway)")
    for message in result.warnings:
        _log(f"{PROG}: warning: {message}", quiet)


# -- localize ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputPaths:
    csv: Path
    work: Path
    render_png: Path
    render_tif: Path
    variance_png: Path
    variance_tif: Path


def output_paths(csv_path: str, render: str | None) -> OutputPaths:
    from .io import localization_format

    out = Path(csv_path)
    if out.is_dir():
        raise CLIError(f"-o must be a file path, got the folder {csv_path}")
    try:
        localization_format(out)
    except ValueError as err:
        raise CLIError(f"-o: {err}") from None
    if render is None:
        base = out.with_name(f"{out.stem}_render")
    else:
        r = Path(render)
        base = r.with_suffix("") if r.suffix.lower() in (".png", ".tif", ".tiff") else r
    var = base.with_name(f"{base.name}_uncertainty")
    return OutputPaths(csv=out, work=out.with_name(out.name + ".partial"),
                       render_png=base.with_name(base.name + ".png"), render_tif=base.with_name(base.name + ".tif"),
                       variance_png=var.with_name(var.name + ".png"), variance_tif=var.with_name(var.name + ".tif"))


def load_model(location: str | None):
    from .pipelines import SMLMDiffusionPipeline

    from .defaults import missing_model_message, resolve_model

    location, _ = resolve_model(location)
    if location is None:
        raise CLIError(missing_model_message("--model"))
    try:
        pipe = SMLMDiffusionPipeline.from_pretrained(location)
    except (FileNotFoundError, OSError, ValueError) as err:
        raise CLIError(f"cannot load the model {location}: {err}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe, str(location)


def _cpu_only() -> bool:
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


def write_render(image: np.ndarray, png: Path, tif: Path, camera, upsampling: int, title: str, label: str | None,
                 cmap: str) -> None:
    from .io import write_tiff
    from .render import render_image

    tif.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(tif, image.astype(np.float32), pixel_size_nm=camera.pixel_size_nm / upsampling)
    render_image(image, camera.pixel_size_nm, upsampling, png, title=title, cmap=cmap, colorbar_label=label)


def cmd_localize(args) -> int:
    stack = check_stack_path(args.stack)
    total, h, w = stack_shape(stack)
    paths = output_paths(args.output, args.render)
    try:
        paths.csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create the output folder {paths.csv.parent}: {err}") from None

    from accelerate import PartialState

    from .localization.crlb_uncertainty import add_crlb_uncertainty
    from .movie import MovieError, localize_movie

    pipe, model = load_model(args.model)
    cfg = pipe.kde_net.config
    camera = camera_from_args(args, pipe.kde_net.camera)
    ddpm = args.mode == "ddpm"
    if ddpm:
        max_steps = int(getattr(pipe.scheduler.config, "max_inference_steps", 0) or 1000)
        if args.steps > max_steps:
            raise CLIError(f"--steps must be at most {max_steps} for this model, got {args.steps}")
    if args.min_probability is not None and args.min_probability > 1:
        raise CLIError(f"--min-probability must be in [0, 1], got {args.min_probability:g}")
    if min(h, w) < 4:
        raise CLIError(f"frames of {h} x {w} pixels are too small (at least 4 x 4)")
    if not args.skip_camera_check:
        check_camera_fits(stack, total, camera, args.quiet)

    state = PartialState(cpu=_cpu_only())
    quiet = args.quiet or not state.is_main_process
    pipe.to(state.device)
    upsampling = int(cfg.upsampling)
    psf = float(cfg.psf_sigma_px)

    def crlb(locs, windows):  # deepstorm mode: photometry and the CRLB on the raw frames
        return add_crlb_uncertainty(locs, windows, camera, psf)

    try:
        run = localize_movie(
            pipe, stack, paths.work, num_samples=args.samples if ddpm else 0, num_inference_steps=args.steps,
            batch_size=args.batch_size, seed=args.seed, camera=camera, threshold=args.threshold,
            min_probability=args.min_probability if ddpm else None, mixed_precision=args.mixed_precision,
            tile_size=args.tile_size, max_frames=args.max_frames, restart=args.restart, state=state,
            postprocess=None if ddpm else crlb, signature={"deepstorm_uncertainty": None if ddpm else "crlb"},
            model_id=model, progress=not quiet, log=lambda message: _log(f"{PROG}: {message}", quiet))
    except KeyboardInterrupt:
        _log(f"{PROG}: interrupted; completed batches are kept in {paths.work}: re-run the same command to continue")
        return 130
    except MovieError as err:
        raise CLIError(str(err)) from None
    if not run.is_main_process:
        return 0

    run_frames = run.frames_run
    tables = run.write_table(paths.csv, pixel_size_nm=camera.pixel_size_nm, shape=(run_frames, h, w),
                             psf_sigma_px=psf, samples=ddpm, camera=camera, source=stack.name,
                             extra_info={"Mode": args.mode, "Model": model})
    kde_sum, kde_var = run.render()
    title = f"{stack.name}: {'DDPM mean' if ddpm else 'DeepSTORM'}, {run_frames} frames"
    write_render(kde_sum, paths.render_png, paths.render_tif, camera, upsampling, title, None, "magma")
    written = [*tables, paths.render_png, paths.render_tif]
    if ddpm:
        label = f"variance (molecules per {camera.pixel_size_nm / upsampling:g} nm pixel)$^2$"
        write_render(kde_var, paths.variance_png, paths.variance_tif, camera, upsampling,
                     f"{stack.name}: DDPM variance, {run_frames} frames", label, "viridis")
        written += [paths.variance_png, paths.variance_tif]
    run.finish()
    kept = "" if run.complete else (f"\n{PROG}: {run_frames} of {total} frames done; partial results kept in "
                                    f"{paths.work} (re-run without --max-frames to continue)")
    if not quiet:
        n_new, seconds, rate = run.frames_new, run.seconds, ""
        if n_new and seconds > 0:
            fps = n_new / seconds
            rate = f", {fps:.1f} frames/s" if fps >= 1 else f", {seconds / n_new:.1f} s/frame"
        _log(f"{PROG}: {run.localizations_written} localizations in {run_frames} frames ({n_new} processed now in "
             f"{seconds:.1f} s{rate})\n" + "\n".join(f"  wrote {p}" for p in written) + kept)
    return 0


# -- estimate ----------------------------------------------------------------------------------
def cmd_estimate(args) -> int:
    stack = check_stack_path(args.stack)
    total, h, w = stack_shape(stack)
    n = min(total, args.max_frames)
    from .psf_estimation import estimate_psf
    from .simulation import Camera

    camera = camera_from_args(args, Camera())
    frames = np.concatenate(list(read_frames(stack, [(s, min(s + 64, n)) for s in range(0, n, 64)])), axis=0)
    try:
        est = estimate_psf(frames, camera, sigma_guess_px=args.sigma_guess, threshold_snr=args.threshold_snr)
    except ValueError as err:
        raise CLIError(str(err)) from None
    del frames

    def r(x, nd=3):
        return None if x is None or not math.isfinite(x) else round(float(x), nd)

    lines = [
        f"{stack.name}: {n} of {total} frames of {h} x {w} pixels analysed",
        f"camera: {camera.pixel_size_nm:g} nm pixels, offset {camera.offset:g} ADU, gain {camera.gain:g} ADU/e-, "
        f"read noise {camera.read_noise:g} e-",
        f"spots fitted: {est['n_spots']} (isolated: {est['n_isolated']}, bright candidates: {est['n_candidates']})",
    ]
    if est["n_spots"] == 0:
        lines.append("no isolated bright spots found: check --offset/--gain, lower --threshold-snr, "
                     "or use sparser frames")
    else:
        lines += [
            f"PSF sigma: {est['sigma_px']:.3f} px = {est['sigma_nm']:.1f} nm (IQR {est['sigma_px_iqr']:.3f} px)",
            f"background: {est['background']:.2f} photons/pixel (median of the fits; "
            f"median of frame medians {est['background_frame_median']:.2f})",
            f"photons per emitter: {est['photons']:.0f} (median; 10-90%: {est['photons_p10']:.0f}-"
            f"{est['photons_p90']:.0f})",
        ]
        if est["sigma_px_iqr"] > 0.15 * est["sigma_px"]:
            lines.append("caution: the fitted sigmas spread widely; the frames may be too dense (overlapping spots "
                         "bias sigma and photons up): use sparser frames if you have them")
    print("\n".join(lines))
    if args.out:
        import yaml

        doc = {
            "source": {"stack": str(stack), "frames_analysed": n, "frames_in_stack": total},
            "estimate": {
                "psf_sigma_px": r(est["sigma_px"], 4), "psf_sigma_nm": r(est["sigma_nm"], 2),
                "psf_sigma_px_iqr": r(est["sigma_px_iqr"], 4),
                "background_photons_per_px": r(est["background"]),
                "background_frame_median_photons_per_px": r(est["background_frame_median"]),
                "photons_median": r(est["photons"], 1), "photons_p10": r(est["photons_p10"], 1),
                "photons_p90": r(est["photons_p90"], 1),
                "n_spots": int(est["n_spots"]), "n_isolated": int(est["n_isolated"]),
                "n_candidates": int(est["n_candidates"]),
            },
            # keys of the training configs' data section (train/configs/*.yaml)
            "data": {
                "sigma_px": r(est["sigma_px"], 3), "pixel_size_nm": float(camera.pixel_size_nm),
                "camera_offset": float(camera.offset), "camera_gain": float(camera.gain),
                "read_noise": float(camera.read_noise),
            },
        }
        try:
            Path(args.out).write_text(
                "# smlm-diffusers estimate: PSF, background and brightness of isolated spots\n"
                + yaml.safe_dump(doc, sort_keys=False))
        except OSError as err:
            raise CLIError(f"cannot write {args.out}: {err}") from None
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # ``accelerate launch -m smlm_diffusers.cli`` and ``python -m``
    sys.exit(main())
