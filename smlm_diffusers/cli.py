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
import contextlib
import sys
from pathlib import Path

import numpy as np

from .cli_types import (_finite_float, _int_at_least, _non_negative_float, _non_negative_int,  # noqa: F401
                        _positive_float, _positive_int)
from .defaults import DEFAULT_MODEL, DEFAULT_SAMPLES, DEFAULT_STEPS, HUB_MODEL_ID, MODEL_ENV
from .movie.outputs import OUTPUTS_HELP
from .postprocess.command import POSTPROCESS_HELP, add_postprocess_options, add_postprocess_parser

PROG = "smlm-diffusers"


class CLIError(Exception):
    """A problem with the user's input or options; printed as one line, no traceback."""


# -- argument parsing --------------------------------------------------------------------------
LOCALIZE_EPILOG = OUTPUTS_HELP + POSTPROCESS_HELP + f"""
camera check:
  Before localizing, the first frames are compared with the camera (--offset, --gain,
  --read-noise, else --optics' or the model's): pixels below the offset, the background it
  implies, and the noise of the darkest pixels against the camera's noise model. A camera that
  cannot fit the frames stops the run with the option to change and the value the data
  suggest; a doubtful one prints a warning. --skip-camera-check turns this off. Frames whose
  pixel size or PSF sigma (in nm: --psf-sigma x --pixel-size, or --optics) is more than 15%
  from what the model was trained for get a warning that names a shipped folder that fits
  (--model NAME), or the training recipe.

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

The model: --model, else ${MODEL_ENV}, else the shipped folder pretrained/{DEFAULT_MODEL} found next to
the installed package (from any working directory). --model is a pipeline folder relative to the working
directory, else a shipped folder by name (--model smlm-ddpm-2d-100nm works anywhere), else a Hugging Face
Hub repo id (--model {HUB_MODEL_ID}); a failure lists what was tried. Camera options default to the
model's config (the camera it was trained for); a pixel size or PSF width far from it gets a warning.
"""


def _add_camera_options(p: argparse.ArgumentParser, default_note: str) -> None:
    g = p.add_argument_group(f"camera ({default_note})")
    g.add_argument("--offset", type=_finite_float, metavar="ADU", help="camera baseline, ADU")
    g.add_argument("--gain", type=_positive_float, metavar="ADU/e-", help="conversion gain, ADU per photo-electron")
    g.add_argument("--pixel-size", type=_positive_float, metavar="NM", help="camera pixel size in the sample, nm")
    g.add_argument("--read-noise", type=_non_negative_float, metavar="E", help="read noise, photo-electrons rms")
    g.add_argument("--excess-noise", type=_positive_float, metavar="F2",
                   help="an EMCCD's excess noise factor squared (2 at high EM gain): the shot-noise variance is F2 "
                        "times the signal; --gain is then ADU per photo-electron with the EM gain included")


def _add_map_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sCMOS per-pixel calibration (float TIFFs [H, W] with the frames' rows and columns; "
                             "optics.yaml can name them too: offset_map, variance_map, gain_map)")
    g.add_argument("--offset-map", metavar="TIF", help="each pixel's offset (dark level), ADU")
    g.add_argument("--variance-map", metavar="TIF", help="each pixel's read-noise variance, ADU^2")
    g.add_argument("--gain-map", metavar="TIF", help="each pixel's gain, ADU per photo-electron")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Uncertainty-aware SMLM: localize molecules in TIFF movies with DeepSTORM and a "
                    "conditional diffusion model, estimate a microscope's PSF for training, calibrate an "
                    "astigmatic 3D PSF, post-process localization tables.",
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
                     help=f"a pipeline folder (relative to here), else a shipped folder by name (such as "
                          f"smlm-ddpm-2d-100nm, from any folder), else a Hub repo id such as {HUB_MODEL_ID} "
                          f"(default ${MODEL_ENV}, else the shipped {DEFAULT_MODEL})")
    loc.add_argument("--mode", choices=("ddpm", "deepstorm"), default=None,
                     help="deepstorm (the default: as good as ddpm at several times less time in the README's "
                          "dense table, Benchmarks): the CNN, then a joint Poisson maximum-likelihood fit of its molecules on "
                          "the frame, and each molecule the fit leaves in doubt weighed against a pair of them on "
                          "the frame's likelihood (the folder's deepstorm_arbitrate, on in the shipped 2D folders): "
                          "a detection probability per molecule, sigma from the fits' bounds (the only mode of a 3D "
                          "folder such as pretrained/smlm-3d-as-100nm: the DDPM is 2D only). ddpm: the same, and "
                          "there DDPM samples propose more configurations, fitted and weighed on the frame; it "
                          "writes the samples' variance render too. --samples or --steps without --mode choose ddpm")
    loc.add_argument("--no-arbitrate", action="store_true",
                     help="deepstorm: plain DeepSTORM, no weighing of pair proposals (faster on dense frames; "
                          "sigma is the CRLB of the fit, no detection probability)")
    loc.add_argument("--samples", type=_positive_int, default=None, metavar="K",
                     help=f"DDPM samples per frame (default {DEFAULT_SAMPLES})")
    loc.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, metavar="S",
                     help="reverse diffusion steps (default: the model's default_inference_steps, 4 for the "
                          "shipped one)")
    loc.add_argument("--batch-size", type=_positive_int, default=32, metavar="B",
                     help="frames read and processed per batch; also UNet tiles per forward pass (default 32)")
    loc.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the sampling noise (default 0)")
    loc.add_argument("--threshold", type=_finite_float, metavar="T",
                     help="KDE peak threshold for localization (default: the model's tuned value)")
    loc.add_argument("--min-probability", type=_non_negative_float, metavar="P",
                     help="ddpm and deepstorm with the arbitration: keep molecules of at least this detection "
                          "probability in the table "
                          "(default: the model's probability_floor, 0.1)")
    loc.add_argument("--mixed-precision", choices=("auto", "bf16", "no"), default="auto",
                     help="auto (default): bfloat16 autocast only where the device runs it natively (GPUs, CPUs "
                          "with AVX512-BF16 or AMX), else float32 (on a CPU DeepSTORM then runs as a compiled "
                          "TorchScript copy); bf16: always (emulated and slower on other CPUs); no: float32")
    loc.add_argument("--whole-frames", action="store_true",
                     help="deepstorm: run the network on whole frames, also where the spots are sparse (by "
                          "default it runs only around the spots a matched filter sees on such frames)")
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
    loc.add_argument("--optics", metavar="YAML", help="optics.yaml (camera + PSF, from 'estimate --out' or "
                     "'calibrate-z -o') replacing the model's; a 3D PSF localizes in 3D (detector + 3D MLE)")
    loc.add_argument("--psf-sigma", type=_positive_float, metavar="PX",
                     help="Gaussian PSF sigma, camera pixels (default: --optics, else the model's)")
    _add_camera_options(loc, "default: --optics, else the model's config")
    _add_map_options(loc)
    add_postprocess_options(loc)
    loc.set_defaults(func=cmd_localize)

    est = sub.add_parser(
        "estimate", help="estimate PSF sigma, background and photons per emitter of a movie",
        description="Estimate PSF sigma, background and photons per emitter from bright isolated spots of a "
                    "raw movie (best on sparse frames): the numbers a training config for a new microscope "
                    "needs (train/configs/*.yaml, 'data:'). With fewer than 20 fitted spots it writes nothing, "
                    "exits with status 2 and says what to change.",
    )
    est.add_argument("stack", metavar="STACK.tif", help="grey-level TIFF movie, raw ADU")
    est.add_argument("--out", metavar="YAML", help="also write the estimate (a 'data:' config block and an "
                                                   "'optics:' block that 'localize --optics' reads) as YAML")
    est.add_argument("--max-frames", type=_positive_int, default=200, metavar="N",
                     help="analyse at most the first N frames (default 200)")
    est.add_argument("--sigma-guess", type=_positive_float, default=1.0, metavar="PX",
                     help="rough PSF sigma, camera pixels (default 1.0)")
    est.add_argument("--threshold-snr", type=_positive_float, default=8.0, metavar="SNR",
                     help="detection threshold, in robust noise units of the smoothed frame (default 8)")
    _add_camera_options(est, "default: the paper's camera, 108 nm, offset 100 ADU, gain 1, read noise 1.6 e-")
    _add_map_options(est)
    est.set_defaults(func=cmd_estimate)
    from .cli_optics import add_calibrate_z

    add_calibrate_z(sub, _finite_float, _positive_float, _int_at_least(3), _add_camera_options, cmd_calibrate_z)
    add_postprocess_parser(sub, cmd_postprocess)
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


@contextlib.contextmanager
def _user_errors():
    """The library's one-line errors about the user's files (MovieError) as CLIError."""
    from .movie import MovieError

    try:
        yield
    except MovieError as err:
        raise CLIError(str(err)) from None


def camera_from_args(args, defaults) -> "Camera":  # noqa: F821 - imported lazily
    """The camera of the options over ``defaults``; per-pixel maps (``--offset-map`` ..., or the defaults' from
    an optics.yaml) replace the scalar of their kind."""
    from .simulation import Camera

    try:
        camera = Camera(
            pixel_size_nm=defaults.pixel_size_nm if args.pixel_size is None else args.pixel_size,
            offset=defaults.offset if args.offset is None else args.offset,
            gain=defaults.gain if args.gain is None else args.gain,
            read_noise=defaults.read_noise if args.read_noise is None else args.read_noise,
            qe=defaults.qe,
            maps=defaults.maps,
        )
        maps = {k: getattr(args, f"{k}_map", None) for k in ("offset", "variance", "gain")}
        if any(v is not None for v in maps.values()):
            camera = camera.with_maps(**maps)
        excess = getattr(args, "excess_noise", None)
        if excess is None:
            return camera
        if camera.has_maps:
            raise CLIError("--excess-noise describes an EMCCD, per-pixel maps an sCMOS camera: give one or the other")
        return Camera.emccd(camera.pixel_size_nm, camera.offset, camera.gain, camera.read_noise, camera.qe, excess)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _check_maps(camera, stack, h: int, w: int) -> None:
    """CLIError naming both shapes when the camera's per-pixel maps do not have the movie's rows and columns."""
    try:
        camera.check_shape((h, w), f"the frames of {stack.name}")
    except ValueError as err:
        raise CLIError(str(err)) from None


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


# -- localize ----------------------------------------------------------------------------------
def cmd_localize(args) -> int:
    from .movie import outputs
    from .postprocess.command import postprocess_options

    try:
        post = postprocess_options(args)
    except ValueError as err:
        raise CLIError(str(err)) from None
    with _user_errors():
        stack = outputs.check_stack_path(args.stack)
        total, h, w = outputs.stack_shape(stack)
        paths = outputs.output_paths(args.output, args.render)
    try:
        paths.csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create the output folder {paths.csv.parent}: {err}") from None

    from accelerate import PartialState

    from .defaults import model_steps
    from .localization.crlb_uncertainty import add_crlb_uncertainty
    from .movie import localize_movie

    optics = optics_from_args(args)
    if optics is not None and optics.ndim == 3:
        return localize_3d_stack(args, stack, paths, optics)
    pipe, model = load_model(args.model)
    if pipe.optics.ndim == 3:  # a 3D folder
        return localize_3d_stack(args, stack, paths, pipe.optics.replace(camera=camera_from_args(args, pipe.camera)),
                                 pipe, model)
    mode = _localize_mode(args, pipe)
    trained = (float(pipe.kde_net.config.pixel_size_nm), float(pipe.kde_net.config.psf_sigma_px))
    # the frames' optics, resolved once (--optics, else the folder's; camera flags and --psf-sigma on top) and
    # passed to the movie runner as one value: the network's config keeps what it was trained for
    from .optics import GaussianPSF

    from_file = optics is not None
    base = pipe.optics if optics is None else optics
    camera = camera_from_args(args, pipe.kde_net.camera if optics is None else optics.camera)
    optics = base.replace(camera=camera)
    if args.psf_sigma is not None:
        optics = optics.replace(psf=GaussianPSF(float(args.psf_sigma)))
    cfg = pipe.kde_net.config
    _check_maps(camera, stack, h, w)
    ddpm = mode.num_samples > 0
    if ddpm:
        try:
            args.steps = model_steps(pipe, args.steps)
        except ValueError as err:
            raise CLIError(f"--steps {err}") from None
    if args.min_probability is not None and args.min_probability > 1:
        raise CLIError(f"--min-probability must be in [0, 1], got {args.min_probability:g}")
    if min(h, w) < 4:
        raise CLIError(f"frames of {h} x {w} pixels are too small (at least 4 x 4)")
    from .cli_optics import model_fit_warning

    mismatch = model_fit_warning(model, *trained, camera.pixel_size_nm, float(optics.psf.sigma_px), ddpm)
    if mismatch:
        _log(f"{PROG}: warning: {mismatch}", args.quiet)
    if not args.skip_camera_check:
        typed = {k for k in ("offset", "gain", "read_noise") if getattr(args, k) is not None}
        with _user_errors():
            for message in outputs.check_camera_fits(stack, total, camera, typed=typed,
                                                     source="the --optics file's" if from_file else "the model's"):
                _log(f"{PROG}: warning: {message}", args.quiet)

    state = PartialState(cpu=outputs.cpu_only())
    quiet = args.quiet or not state.is_main_process
    pipe.to(state.device)
    psf = float(optics.psf.sigma_px)

    def crlb(locs, windows, camera=camera):  # deepstorm mode: photometry and the CRLB on the raw frames (a tile's camera)
        return add_crlb_uncertainty(locs, windows, camera, psf)

    try:
        with _user_errors():
            run = localize_movie(
                pipe, stack, paths.work, num_samples=mode.num_samples, arbitrate=mode.arbitrate,
                num_inference_steps=args.steps, batch_size=args.batch_size, seed=args.seed, optics=optics,
                threshold=args.threshold, min_probability=args.min_probability if ddpm or mode.arbitrate else None,
                mixed_precision=args.mixed_precision,
                sparse_windows=None if ddpm or not args.whole_frames else False, tile_size=args.tile_size, max_frames=args.max_frames, restart=args.restart, state=state,
                postprocess=None if ddpm else crlb, signature={"deepstorm_uncertainty": None if ddpm else "crlb"},
                model_id=model, progress=not quiet, log=lambda message: _log(f"{PROG}: {message}", quiet))
    except KeyboardInterrupt:
        _log(f"{PROG}: interrupted; completed batches are kept in {paths.work}: re-run the same command to continue")
        return 130
    if not run.is_main_process:
        return 0
    written = outputs.write_run_outputs(run, paths, (h, w), camera, int(cfg.upsampling), psf, samples=ddpm,
                                        source=stack.name, extra_info={"Mode": mode.name, "Model": model},
                                        postprocess=post)
    run.finish()
    _log(outputs.run_summary(run, written, paths.work, PROG), quiet)
    return 0


def _localize_mode(args, pipe):
    """The mode ``localize`` runs (:class:`~smlm_diffusers.pipelines.modes.CallMode`): ``--mode``, else ddpm when
    ``--samples`` or ``--steps`` is given, else the folder's default (DeepSTORM + arbitration in the shipped ones)."""
    folder = pipe.call_mode()
    mode = args.mode or ("ddpm" if folder.num_samples > 0 or args.samples or args.steps else "deepstorm")
    if mode == "ddpm" and args.no_arbitrate:
        raise CLIError("--no-arbitrate is for --mode deepstorm: DDPM mode always weighs its proposals on the frame")
    samples = (args.samples or folder.num_samples or DEFAULT_SAMPLES) if mode == "ddpm" else 0
    return pipe.call_mode(samples, False if args.no_arbitrate else None)


def optics_from_args(args):
    """The ``--optics`` file as an Optics (camera options and ``--psf-sigma`` applied), or None without it."""
    from .cli_optics import optics_from_args as read

    try:
        return read(args, lambda defaults: camera_from_args(args, defaults))
    except (OSError, ValueError, TypeError) as err:
        raise CLIError(f"cannot read --optics {args.optics}: {err}") from None


def localize_3d_stack(args, stack, paths, optics, pipe=None, where: str = "--optics") -> int:
    """3D localization (a 3D PSF in ``--optics`` or in the folder ``where``): DeepSTORM mode only."""
    from .cli_optics import localize_3d_stack as run

    if args.mode == "ddpm":
        raise CLIError(f"--mode ddpm: the DDPM is 2D only, and the PSF of {where} is 3D: use --mode deepstorm "
                       "(the default for 3D)")
    from .movie import outputs

    _check_maps(optics.camera, stack, *outputs.stack_shape(stack)[1:])
    if pipe is None and args.model:  # --model: its detections seed the 3D fit too
        pipe = load_model(args.model)[0]
    with _user_errors():
        _log(f"{PROG}: {run(args, stack, paths, optics, pipe)}", args.quiet)
    return 0


def cmd_calibrate_z(args) -> int:
    from .cli_optics import calibrate_z
    from .simulation import Camera

    try:
        with _user_errors():
            print(calibrate_z(args, camera_from_args(args, Camera())))
    except ValueError as err:
        raise CLIError(str(err)) from None
    except OSError as err:
        raise CLIError(f"cannot write {err.filename}: {err}") from None
    return 0


# -- postprocess -------------------------------------------------------------------------------
def cmd_postprocess(args) -> int:
    from .postprocess.command import run_postprocess_command

    try:
        return run_postprocess_command(args, lambda message: _log(message, args.quiet))
    except (ValueError, OSError) as err:
        raise CLIError(str(err)) from None


# -- estimate ----------------------------------------------------------------------------------
def cmd_estimate(args) -> int:
    from .movie import outputs
    from .psf_estimation import MIN_SPOTS, estimate_psf
    from .psf_report import estimate_document, estimate_lines, too_few_spots
    from .simulation import Camera

    with _user_errors():
        stack = outputs.check_stack_path(args.stack)
        total, h, w = outputs.stack_shape(stack)
        n = min(total, args.max_frames)
        frames = np.concatenate(list(outputs.read_frames(stack, [(s, min(s + 64, n)) for s in range(0, n, 64)])))
    camera = camera_from_args(args, Camera())
    _check_maps(camera, stack, h, w)
    try:
        est = estimate_psf(frames, camera, sigma_guess_px=args.sigma_guess, threshold_snr=args.threshold_snr)
    except ValueError as err:
        raise CLIError(str(err)) from None
    print("\n".join(estimate_lines(est, camera, stack.name, n, total, (h, w))))
    if est["n_spots"] < MIN_SPOTS:  # nothing usable: say why and what to change, write nothing, exit 2
        from .camera_check import check_camera

        typed = {k for k in ("offset", "gain", "read_noise") if getattr(args, k) is not None}
        problems = check_camera(frames, camera, typed=typed, source="the default camera's").errors
        raise CLIError(too_few_spots(est, camera, n, total, args.threshold_snr, args.sigma_guess, problems,
                                     "" if {"offset", "gain"} & typed else "the default camera's"))
    del frames
    if args.out:
        import yaml

        doc = estimate_document(est, camera, str(stack), n, total)
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
