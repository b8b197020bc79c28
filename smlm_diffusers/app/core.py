"""The logic behind the web demo (``app.py``): loading, input validation, runs, metrics.

``app.py`` only wires widgets to these functions. Everything here works without Gradio,
raises :class:`InputError` (a ``ValueError``) with a message meant for the user on bad
input, and follows DESIGN.md: coordinates in nm, frames 0-based, ADU only at the camera.

Limits (module constants) keep one request bounded on a CPU Space: frames at most
``MAX_FRAME_SIZE`` pixels a side, stacks at most ``MAX_FRAMES`` frames and
``MAX_TOTAL_PIXELS`` camera pixels in all (the KDE grid is 16x larger).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..camera_check import check_camera as check_camera_data
from ..defaults import DEFAULT_MODEL, HUB_MODEL_ID, MODEL_ENV, default_model_candidates, default_model_path
from ..fisher import crlb_at_truth, crlb_position_averaged
from ..io import read_tiff_stack
from ..localization import evaluate
from ..localization.crlb_uncertainty import add_crlb_uncertainty
from ..movie import localize_frames
from ..simulation import Camera, simulate
from .progress import report_steps
from .zoom import localize_samples

# -- configuration ----------------------------------------------------------------------------
MIN_FRAME_SIZE = 8  # camera pixels a side
MAX_FRAME_SIZE = 256
MAX_FRAMES = 200
MAX_TOTAL_PIXELS = 200 * 64 * 64  # camera pixels of a whole stack (F x H x W)
MAX_UPLOAD_MB = 100
MAX_SAMPLES = 16
MAX_STEPS = 100
GALLERY_SAMPLES = 8  # samples per frame kept for display (the gallery)
MAX_STORED_SAMPLE_VALUES = 32_000_000  # float16 values of kept samples per run (64 MB)
# DDPM work per request, in megapixel-steps: frames x samples x steps x the KDE pixels of the
# UNet tiles of one frame (overlaps included). The default request (one 32 x 32 frame, 4 x 10)
# is about 1; on a 2-core CPU one unit takes a few seconds. An ordinary upload of 5 frames of
# 64 x 64 at the default 4 x 10 is 20.5; up to 9 such frames fit. Longer stacks run in
# DeepSTORM mode (samples = 0), which has no such limit.
MAX_DDPM_MPX_STEPS = 40.0
MAX_READ_NOISE = 100.0  # e- rms
# the upload tab's field labels, as the camera check names them
CAMERA_FIELDS = {"offset": "'Camera offset (ADU)'", "gain": "'Gain (ADU / e⁻)'",
                 "read_noise": "'Read noise (e⁻ rms)'"}

DEFAULT_SAMPLES = 4
DEFAULT_STEPS = 10
DEFAULT_FRAME_SIZE = 32
DEFAULT_FRAMES = 1
STRUCTURES = {"Random (uniform)": "uniform", "Filaments": "filaments", "Disc": "disc"}

SWEEP_PHOTONS = (300.0, 1000.0, 3000.0)
SWEEP_FRAMES = 4  # per photon level in DeepSTORM mode; 16 isolated emitters per 64 x 64 frame
SWEEP_FRAMES_DDPM = 1  # per photon level with DDPM sampling (minutes on CPU otherwise)

TIFF_SUFFIXES = (".tif", ".tiff")

# One pipeline call at a time: the scheduler keeps per-call state (its timesteps).
_PIPE_LOCK = threading.Lock()


class InputError(ValueError):
    """Bad user input; the message is written for the user of the app."""


# -- the model ----------------------------------------------------------------------------
def model_location(default_root: str | os.PathLike | None = None) -> tuple[str, bool]:
    """(path or Hub repo id of the pipeline, whether it is the default).

    ``$SMLM_DIFFUSERS_MODEL`` wins; otherwise the shipped ``pretrained/smlm-ddpm-2d``, found
    next to the package (:mod:`smlm_diffusers.defaults`, whatever the working directory), or
    under ``default_root`` when given.
    """
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env, False
    if default_root is not None:
        return str(Path(default_root) / "pretrained" / DEFAULT_MODEL), True
    return str(default_model_path() or default_model_candidates()[0]), True


def load_pipeline(location: str | os.PathLike | None = None, default_root=None):
    """Load the SMLM pipeline once (CPU, progress bars off), with a clear error when missing.

    Parameters
    ----------
    location : str or path, optional
        Pipeline folder or Hub repo id; default :func:`model_location`.

    Raises
    ------
    FileNotFoundError
        The default folder is missing (the message says how to get or point to a model).
    """
    from ..pipelines import SMLMDiffusionPipeline

    is_default = location is None
    if location is None:
        location, is_default = model_location(default_root)
    how = (f"The app loads the shipped pipeline 'pretrained/{DEFAULT_MODEL}' (train it with "
           f"train/train_deepstorm.py and train/train_ddpm.py, or download it), or the folder or Hugging Face "
           f"Hub repo id (e.g. {HUB_MODEL_ID}) in the environment variable {MODEL_ENV}.")
    if is_default and not Path(location).is_dir():
        raise FileNotFoundError(f"Model folder not found: {location}. {how}")
    if is_default and not (Path(location) / "model_index.json").is_file():
        raise FileNotFoundError(f"Model folder {location} is incomplete (no model_index.json: the DDPM may still "
                                f"be training). {how}")
    pipe = SMLMDiffusionPipeline.from_pretrained(location)
    pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def warmup(pipe) -> None:
    """One tiny run, so that the first user request does not pay for the backends' start-up."""
    frame = np.full((16, 16), float(pipe.kde_net.config.camera_offset) + 10.0, dtype=np.float32)
    with _PIPE_LOCK:
        pipe(frame, num_samples=1, num_inference_steps=1, generator=torch.Generator().manual_seed(0))


def pipeline_camera(pipe) -> Camera:
    """The camera of the pipeline's config (pixel size, offset, gain, read noise)."""
    return pipe.kde_net.camera


def max_inference_steps(pipe) -> int:
    return int(min(MAX_STEPS, getattr(pipe.scheduler.config, "max_inference_steps", MAX_STEPS) or MAX_STEPS))


# -- input ----------------------------------------------------------------------------------
def check_stack(frames: np.ndarray, what: str = "The stack") -> np.ndarray:
    """Validate frames [F, H, W] (or [H, W]) against the limits; float32 [F, H, W]."""
    a = np.asarray(frames)
    if a.dtype.kind not in "iuf":
        raise InputError(f"{what} has pixel type {a.dtype}; expected integer or float grey levels.")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"{what} has shape {a.shape}; expected a single frame [H, W] or a stack [F, H, W].")
    f, h, w = a.shape
    if f == 0 or h == 0 or w == 0:
        raise InputError(f"{what} is empty (shape {a.shape}).")
    if min(h, w) < MIN_FRAME_SIZE:
        raise InputError(f"Frames of {h} x {w} pixels are too small: at least {MIN_FRAME_SIZE} x {MIN_FRAME_SIZE}.")
    if max(h, w) > MAX_FRAME_SIZE:
        raise InputError(f"Frames of {h} x {w} pixels are too large for this demo: at most "
                         f"{MAX_FRAME_SIZE} x {MAX_FRAME_SIZE}. Crop the region of interest first.")
    if f > MAX_FRAMES:
        raise InputError(f"{what} has {f} frames; this demo takes at most {MAX_FRAMES}.")
    if f * h * w > MAX_TOTAL_PIXELS:
        raise InputError(f"{what} has {f} x {h} x {w} = {f * h * w:,} pixels; this demo takes at most "
                         f"{MAX_TOTAL_PIXELS:,} (e.g. {MAX_TOTAL_PIXELS // (64 * 64)} frames of 64 x 64). "
                         "Use fewer frames or a smaller region.")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError(f"{what} contains NaN or infinite pixel values.")
    return a


def read_upload(path: str | os.PathLike | None) -> np.ndarray:
    """Read and validate an uploaded TIFF stack; float32 [F, H, W] in ADU.

    Checks the file name, the file size, that it is a grey-level 2D/3D TIFF (not RGB, not
    4D, not empty) and the limits of :func:`check_stack`, reading no more than needed.
    """
    if path is None or str(path) == "":
        raise InputError("No file uploaded: choose a TIFF stack (.tif / .tiff) first.")
    p = Path(path)
    name = p.name
    if p.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"'{name}' is not a TIFF file: upload a grey-level .tif/.tiff stack "
                         "(PNG/JPEG are 8-bit colour images and lose the camera counts).")
    if not p.is_file():
        raise InputError(f"The upload of '{name}' failed: the file is missing on the server.")
    size_mb = p.stat().st_size / 2**20
    if p.stat().st_size == 0:
        raise InputError(f"'{name}' is empty (0 bytes).")
    if size_mb > MAX_UPLOAD_MB:
        raise InputError(f"'{name}' is {size_mb:.0f} MB; this demo takes files up to {MAX_UPLOAD_MB} MB.")
    try:
        # one frame more than allowed: enough to tell a too-long stack without reading it all
        frames = read_tiff_stack(p, max_frames=MAX_FRAMES + 1,
                                 max_pixels=max(MAX_TOTAL_PIXELS, MAX_FRAME_SIZE**2) + MAX_FRAME_SIZE**2)
    except ValueError as err:
        msg = str(err).replace(repr(os.fspath(p)), f"'{name}'").replace(os.fspath(p), name)
        if "max_pixels" in msg:
            msg = (f"'{name}' is too large for this demo: frames at most {MAX_FRAME_SIZE} x {MAX_FRAME_SIZE} pixels, "
                   f"stacks at most {MAX_FRAMES} frames and {MAX_TOTAL_PIXELS:,} pixels in all.")
        raise InputError(msg) from None
    except Exception as err:  # corrupt files can raise anything inside tifffile
        raise InputError(f"'{name}' could not be read as a TIFF stack ({type(err).__name__}).") from None
    if frames.shape[0] > MAX_FRAMES:
        raise InputError(f"'{name}' has more than {MAX_FRAMES} frames; this demo takes at most {MAX_FRAMES}. "
                         "Upload a substack.")
    return check_stack(frames, f"'{name}'")


def check_camera(offset: float, gain: float, pixel_size_nm: float, read_noise: float = 1.6) -> Camera:
    """A Camera from the upload tab's fields (offset ADU, gain ADU/e-, pixel size nm, read noise
    e- rms), or an InputError that names the field and its allowed range."""
    fields = {CAMERA_FIELDS["offset"]: offset, CAMERA_FIELDS["gain"]: gain, "'Pixel size (nm)'": pixel_size_nm,
              CAMERA_FIELDS["read_noise"]: read_noise}
    for k, v in fields.items():
        if v is None or not math.isfinite(float(v)):
            raise InputError(f"{k} must be a finite number, got {v}.")
    if gain <= 0:
        raise InputError(f"{CAMERA_FIELDS['gain']} must be > 0 ADU per photo-electron, got {gain:g}.")
    if not 10 <= pixel_size_nm <= 1000:
        raise InputError(f"'Pixel size (nm)' must be between 10 and 1000 nm, got {pixel_size_nm:g}.")
    if not 0 <= read_noise <= MAX_READ_NOISE:
        raise InputError(f"{CAMERA_FIELDS['read_noise']} must be between 0 and {MAX_READ_NOISE:g} e- rms, "
                         f"got {read_noise:g}.")
    return Camera(pixel_size_nm=float(pixel_size_nm), offset=float(offset), gain=float(gain),
                  read_noise=float(read_noise))


def check_camera_fits(frames: np.ndarray, camera: Camera) -> list[str]:
    """The camera check of :mod:`smlm_diffusers.camera_check` on uploaded frames, in the upload tab's words.

    Raises InputError when the camera cannot fit the frames (the message names the field to
    change and the value the data suggest); returns the warnings of a doubtful one.
    """
    result = check_camera_data(frames, camera, options=CAMERA_FIELDS)
    if result.errors:
        raise InputError("The camera settings do not fit these frames: " + "; ".join(result.errors) + ".")
    return result.warnings


@dataclass
class SimulationSettings:
    """Simulation controls of the app (photons per emitter, background photons per pixel,
    density in emitters per square micrometre, PSF sigma in camera pixels, frame side in
    pixels)."""

    photons: float = 2000.0
    background: float = 20.0
    density: float = 1.0
    sigma_px: float = 1.0
    size: int = DEFAULT_FRAME_SIZE
    n_frames: int = DEFAULT_FRAMES
    structure: str = "uniform"
    seed: int = 0

    def check(self) -> "SimulationSettings":
        s = self
        if s.structure in STRUCTURES:
            s.structure = STRUCTURES[s.structure]
        if s.structure not in STRUCTURES.values():
            raise InputError(f"Unknown structure {s.structure!r}: choose one of {list(STRUCTURES)}.")
        for name, v, lo, hi in [("photons", s.photons, 1, 1e6), ("background", s.background, 0, 1e4),
                                ("density", s.density, 0, 50), ("PSF sigma", s.sigma_px, 0.3, 5)]:
            if v is None or not math.isfinite(float(v)) or not lo <= float(v) <= hi:
                raise InputError(f"{name} must be between {lo:g} and {hi:g}, got {v}.")
        s.size, s.n_frames, s.seed = int(s.size), int(s.n_frames), int(s.seed)
        if not MIN_FRAME_SIZE <= s.size <= MAX_FRAME_SIZE:
            raise InputError(f"The frame size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE} pixels.")
        if not 1 <= s.n_frames <= MAX_FRAMES:
            raise InputError(f"The number of frames must be between 1 and {MAX_FRAMES}.")
        if s.n_frames * s.size**2 > MAX_TOTAL_PIXELS:
            raise InputError(f"{s.n_frames} frames of {s.size} x {s.size} exceed the demo's limit of "
                             f"{MAX_TOTAL_PIXELS:,} pixels per stack.")
        return s


def simulate_frames(settings: SimulationSettings, camera: Camera) -> tuple[np.ndarray, pd.DataFrame]:
    """Simulated ADU frames [F, H, W] and ground truth (frame, x_nm, y_nm, photons, background)."""
    s = settings.check()
    return simulate(n_frames=s.n_frames, shape=(s.size, s.size), density=float(s.density), photons=float(s.photons),
                    background=float(s.background), sigma_px=float(s.sigma_px), seed=s.seed, structure=s.structure,
                    camera=camera)


# -- running the pipeline --------------------------------------------------------------------
@dataclass
class RunResult:
    """Everything the app shows of one run (numpy arrays on the 4x KDE grid, nm tables).

    ``samples`` keeps at most :data:`GALLERY_SAMPLES` samples per frame, as float16 (for
    display only; ``kde_mean``/``kde_var`` come from all samples in float32), and
    ``sample_localizations`` their localizations (frame, sample, x_nm, y_nm) for the zoomed
    uncertainty view; ``kde_var`` is None in DeepSTORM mode (``num_samples == 0``), where the
    molecules' sigmas are the CRLB at their fitted photons and background. ``name`` is the
    stem of the download files (the input file's, or ``simulation_seed<N>``).
    """

    frames: np.ndarray  # [F, H, W] ADU
    localizations: pd.DataFrame
    kde_mean: np.ndarray  # [F, uH, uW]
    kde_var: np.ndarray | None
    samples: np.ndarray | None  # [F, k <= GALLERY_SAMPLES, uH, uW]
    deepstorm_kde: np.ndarray
    camera: Camera
    upsampling: int
    num_samples: int
    num_inference_steps: int
    seed: int
    seconds: float
    ground_truth: pd.DataFrame | None = None
    source: str = "simulation"
    sum_mean: np.ndarray = field(init=False)
    sum_var: np.ndarray | None = field(init=False)
    sample_localizations: pd.DataFrame | None = None
    psf_sigma_px: float = 1.0
    name: str = "simulation"
    warnings: list = field(default_factory=list)  # camera check, shown with the status
    folder: str | None = None  # where this run's download and picture files are written

    def __post_init__(self):
        self.sum_mean = self.kde_mean.sum(axis=0)
        self.sum_var = None if self.kde_var is None else self.kde_var.sum(axis=0)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def kde_pixel_nm(self) -> float:
        return self.camera.pixel_size_nm / self.upsampling

    @property
    def mode(self) -> str:
        if self.num_samples == 0:
            return "DeepSTORM only"
        return f"DDPM, {self.num_samples} samples x {self.num_inference_steps} steps"

    @property
    def has_samples(self) -> bool:
        return self.num_samples > 0

    def frame_localizations(self, frame: int) -> pd.DataFrame:
        return self.localizations[self.localizations["frame"] == frame].reset_index(drop=True)

    def frame_ground_truth(self, frame: int) -> pd.DataFrame | None:
        if self.ground_truth is None:
            return None
        return self.ground_truth[self.ground_truth["frame"] == frame].reset_index(drop=True)


def check_sampling(num_samples, num_inference_steps, pipe=None) -> tuple[int, int]:
    k, s = int(num_samples), int(num_inference_steps)
    if not 0 <= k <= MAX_SAMPLES:
        raise InputError(f"Samples must be between 0 (DeepSTORM only) and {MAX_SAMPLES}, got {k}.")
    s_max = max_inference_steps(pipe) if pipe is not None else MAX_STEPS
    if k > 0 and not 1 <= s <= s_max:
        raise InputError(f"Steps must be between 1 and {s_max}, got {s}.")
    return k, s


def tiles_per_frame(pipe, shape: tuple[int, int]) -> int:
    """UNet tiles the pipeline cuts one frame of ``shape`` (camera pixels) into."""
    u = int(pipe.kde_net.config.upsampling)
    try:
        return len(pipe.tile_layout(shape[0] * u, shape[1] * u)[1])
    except AttributeError:  # pragma: no cover - a pipeline without the tiling helper
        return 1


def frames_per_chunk(pipe, shape: tuple[int, int], num_samples: int, items: int = 64) -> int:
    """Frames per pipeline call: about ``items`` UNet tiles (x samples) per call."""
    if num_samples == 0:
        return 32
    return max(1, items // (tiles_per_frame(pipe, shape) * num_samples))


def tile_pixels_per_frame(pipe, shape: tuple[int, int]) -> int:
    """KDE pixels the UNet processes per frame of ``shape`` (camera pixels) and diffusion step."""
    u = int(pipe.kde_net.config.upsampling)
    try:
        (th, tw), corners, _ = pipe.tile_layout(shape[0] * u, shape[1] * u)
        return int(th) * int(tw) * len(corners)
    except AttributeError:  # pragma: no cover - a pipeline without the tiling helper
        return shape[0] * shape[1] * u * u


def check_work(pipe, shape: tuple[int, int, int], num_samples: int, num_inference_steps: int) -> float:
    """DDPM work of a request in megapixel-steps; InputError above :data:`MAX_DDPM_MPX_STEPS`."""
    f, h, w = shape
    if num_samples == 0:
        return 0.0
    work = f * num_samples * num_inference_steps * tile_pixels_per_frame(pipe, (h, w)) / 1e6
    if work > MAX_DDPM_MPX_STEPS:
        fits = int(MAX_DDPM_MPX_STEPS // (work / f))
        fit = (f"at these settings up to {fits} frame{'s' if fits != 1 else ''} of this size fit" if fits
               else "not even one frame of this size fits at these settings")
        raise InputError(
            f"DDPM sampling of {f} frame{'s' if f > 1 else ''} of {h} x {w} px with {num_samples} samples x "
            f"{num_inference_steps} steps is {work / MAX_DDPM_MPX_STEPS:.1f}x more work than this CPU demo allows "
            f"per request ({fit}). Use fewer frames, samples or steps, or samples = 0 (DeepSTORM only) for long "
            "stacks.")
    return work


def run_pipeline(
    pipe,
    frames: np.ndarray,
    num_samples: int = DEFAULT_SAMPLES,
    num_inference_steps: int = DEFAULT_STEPS,
    seed: int = 0,
    camera: Camera | None = None,
    ground_truth: pd.DataFrame | None = None,
    source: str = "simulation",
    progress: Callable[[float, str], None] | None = None,
    name: str | None = None,
) -> RunResult:
    """Run the pipeline chunk by chunk, keeping what the app displays.

    The sampling noise comes from one ``torch.Generator`` seeded with ``seed``: same
    inputs and seed, same result. ``progress(fraction, message)`` is called after each chunk
    of frames and, with DDPM samples, after each diffusion step ("2 of 5 frames done; DDPM
    step 7 of 10, batch 1 of 2"). In DeepSTORM mode each molecule's sigma is the CRLB at the
    photons and background fitted on the frame
    (:func:`~smlm_diffusers.localization.crlb_uncertainty.add_crlb_uncertainty`).
    """
    frames = check_stack(frames)
    k, steps = check_sampling(num_samples, num_inference_steps, pipe)
    check_work(pipe, frames.shape, k, steps)
    camera = camera or pipeline_camera(pipe)
    psf = float(getattr(pipe.kde_net.config, "psf_sigma_px", 1.0))
    n = frames.shape[0]
    # samples kept for display: at most GALLERY_SAMPLES per frame, float16, bounded in all
    per_sample = n * frames.shape[1] * frames.shape[2] * int(pipe.kde_net.config.upsampling) ** 2
    keep = max(1, min(GALLERY_SAMPLES, MAX_STORED_SAMPLE_VALUES // max(per_sample, 1)))
    chunk = frames_per_chunk(pipe, frames.shape[1:], k)
    gen = torch.Generator().manual_seed(int(seed))
    locs, means, variances, samples, deepstorm, per_sample_locs = [], [], [], [], [], []
    t0 = time.perf_counter()
    what = "DDPM" if k else "DeepSTORM"

    def say(done: int, inner: float = 0.0, detail: str = "") -> None:
        if progress is not None:
            stop = min(done + chunk, n)
            progress((done + inner * (stop - done)) / n,
                     f"{what}: {done} of {n} frame{'s' if n > 1 else ''} done" + (f" · {detail}" if detail else ""))

    def crlb(found, windows):  # DeepSTORM mode: photometry and the CRLB on the raw frames
        return add_crlb_uncertainty(found, windows, camera, psf)

    say(0)
    for start in range(0, n, chunk):
        part = frames[start:start + chunk]

        def on_step(fraction, step, n_steps, batch, batches, start=start):
            more = f", batch {batch} of {batches}" if batches > 1 else ""
            say(start, fraction, f"DDPM step {step} of {n_steps}{more}")

        with _PIPE_LOCK, report_steps(pipe, max(steps, 1), on_step if k else None):
            # the movie runner's chunk step (tiles for large frames, bounded calls), as the CLI runs it
            out = localize_frames(pipe, part, start, num_samples=k, num_inference_steps=max(steps, 1),
                                  generator=gen, camera=camera, batch_size=64, keep_images=True,
                                  postprocess=None if k else crlb)
        locs.append(out.localizations)
        means.append(out.images["kde_mean"])
        deepstorm.append(out.images["deepstorm_kde"])
        if k > 0:
            variances.append(out.images["kde_var"])
            kept = out.images["samples"][:, :keep]
            samples.append(kept.astype(np.float16))
            sl = localize_samples(pipe, kept, camera.pixel_size_nm)
            sl["frame"] += start
            per_sample_locs.append(sl)
        say(min(start + chunk, n))
    seconds = time.perf_counter() - t0
    table = pd.concat(locs, ignore_index=True) if locs else pd.DataFrame()
    return RunResult(
        frames=frames,
        localizations=table,
        kde_mean=np.concatenate(means).astype(np.float32),
        kde_var=np.concatenate(variances).astype(np.float32) if k > 0 else None,
        samples=np.concatenate(samples) if k > 0 else None,
        deepstorm_kde=np.concatenate(deepstorm).astype(np.float32),
        camera=camera,
        upsampling=int(pipe.kde_net.config.upsampling),
        num_samples=k,
        num_inference_steps=steps,
        seed=int(seed),
        seconds=seconds,
        ground_truth=ground_truth,
        source=source,
        sample_localizations=pd.concat(per_sample_locs, ignore_index=True) if k > 0 else None,
        psf_sigma_px=psf,
        name=name or (Path(source).stem if source != "simulation" else f"simulation_seed{int(seed)}"),
    )


# -- metrics ------------------------------------------------------------------------------
def run_metrics(result: RunResult, frame: int | None = None, tolerance_nm: float = 250.0) -> dict | None:
    """``smlm_diffusers.evaluate`` against the ground truth (one frame, or all with None)."""
    if result.ground_truth is None:
        return None
    gt, pred = result.ground_truth, result.localizations
    if frame is not None:
        gt, pred = result.frame_ground_truth(frame), result.frame_localizations(frame)
    return evaluate(gt[["frame", "x_nm", "y_nm"]], pred, tolerance_nm=tolerance_nm)


# -- output files (smlm_diffusers.app.downloads) -------------------------------------------------
from .downloads import write_outputs  # noqa: E402  (re-exported: app.py and older callers use au.write_outputs)


# -- RMSE against the CRLB ---------------------------------------------------------------------
def rmse_crlb_sweep(
    pipe,
    photon_levels=SWEEP_PHOTONS,
    background: float = 20.0,
    sigma_px: float = 1.0,
    n_frames: int = SWEEP_FRAMES,
    num_samples: int = 0,
    num_inference_steps: int = DEFAULT_STEPS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Lateral RMSE and sqrt(CRLB_x + CRLB_y) over a photon sweep of isolated emitters.

    Returns a DataFrame with photons, rmse_nm, sqrt_crlb_nm, ratio (DESIGN.md's RMSE/CRLB
    ratio), jaccard, n_gt, tp.
    """
    camera = pipeline_camera(pipe)
    rows = []
    levels = [float(p) for p in photon_levels]
    for i, p in enumerate(levels):
        frames, gt = simulate(n_frames=n_frames, shape=(64, 64), photons=p, background=background, sigma_px=sigma_px,
                              seed=int(seed) + 1000 * i, camera=camera, structure="grid")
        res = run_pipeline(pipe, frames, num_samples, num_inference_steps, seed=seed, camera=camera,
                           ground_truth=gt)
        cx, cy = crlb_at_truth(gt, sigma_px, camera)
        m = evaluate(gt, res.localizations[["frame", "x_nm", "y_nm"]], crlb_nm2=(cx, cy))
        rows.append({"photons": p, "rmse_nm": m["rmse_nm"], "sqrt_crlb_nm": math.sqrt(float(np.mean(cx + cy))),
                     "ratio": m.get("rmse_crlb_ratio", math.nan), "jaccard": m["jaccard"], "n_gt": m["n_gt"],
                     "tp": m["tp"]})
        if progress is not None:
            progress(i + 1, len(levels))
    return pd.DataFrame(rows)


def crlb_curve(background: float, sigma_px: float, camera: Camera, lo: float, hi: float, n: int = 40,
               n_sub: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(photons, sqrt(CRLB_x + CRLB_y) nm) on a log grid, averaged over sub-pixel positions."""
    photons = np.geomspace(lo, hi, n)
    return photons, crlb_position_averaged(photons, background, sigma_px, camera, n_sub)
