"""The app's input checks: limits of one request, uploads, camera fields, simulation settings, sampling.

Every check raises :class:`InputError` (a ``ValueError``) with a message meant for the user.
Limits keep one request bounded on a CPU Space: frames at most ``MAX_FRAME_SIZE`` pixels a
side, stacks at most ``MAX_FRAMES`` frames and ``MAX_TOTAL_PIXELS`` camera pixels in all (the
KDE grid is 16x larger), DDPM work at most ``MAX_DDPM_MPX_STEPS``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..camera_check import check_camera as check_camera_data
from ..defaults import check_inference_steps, default_steps
from ..io import read_tiff_stack
from ..models.layout import layout_of
from ..simulation import PAPER_CAMERA, Camera, simulate
from .model import MAX_STEPS

MIN_FRAME_SIZE = 8  # camera pixels a side
MAX_FRAME_SIZE = 256
MAX_FRAMES = 200
MAX_TOTAL_PIXELS = 200 * 64 * 64  # camera pixels of a whole stack (F x H x W)
MAX_UPLOAD_MB = 100
MAX_SAMPLES = 16
GALLERY_SAMPLES = 8  # samples per frame kept for display (the gallery)
MAX_STORED_SAMPLE_VALUES = 32_000_000  # float16 values of kept samples per run (64 MB)
# DDPM work per request, in megapixel-steps: frames x samples x steps x the KDE pixels of the
# UNet tiles of one frame (overlaps included; a camera-layout UNet's tiles hold 16 KDE pixels per
# camera pixel, and one of its steps costs far less than a KDE-layout step over the same pixels,
# so the measure is conservative for it). An ordinary upload of 5 frames of 64 x 64 at the
# default 8 samples x the folder's steps fits (tests/test_app.py). Longer stacks run in
# DeepSTORM mode (samples = 0), which has no such limit.
MAX_DDPM_MPX_STEPS = 40.0
MAX_READ_NOISE = 100.0  # e- rms
MAX_MAP_MB = 8  # an sCMOS calibration map: float64 of the largest frame is 0.5 MB
MAP_FIELDS = {"offset": "'Offset map (ADU)'", "variance": "'Read-noise variance map (ADU²)'",
              "gain": "'Gain map (ADU / e⁻)'"}
# the upload tab's field labels, as the camera check names them
CAMERA_FIELDS = {"offset": "'Camera offset (ADU)'", "gain": "'Gain (ADU / e⁻)'",
                 "read_noise": "'Read noise (e⁻ rms)'"}

DEFAULT_FRAME_SIZE = 32
DEFAULT_FRAMES = 1
STRUCTURES = {"Random (uniform)": "uniform", "Filaments": "filaments", "Disc": "disc"}

SWEEP_PHOTONS = (300.0, 1000.0, 3000.0)
SWEEP_FRAMES = 4  # per photon level in DeepSTORM mode; 16 isolated emitters per 64 x 64 frame
SWEEP_FRAMES_DDPM = 1  # per photon level with DDPM sampling (minutes on CPU otherwise)

TIFF_SUFFIXES = (".tif", ".tiff")


class InputError(ValueError):
    """Bad user input; the message is written for the user of the app."""


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
    except ValueError as err:  # the reader's message, naming the file as the user knows it
        msg = str(err).replace(repr(os.fspath(p)), f"'{name}'").replace(os.fspath(p), name)
        msg = msg[:1].upper() + msg[1:]
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


def check_camera(offset: float, gain: float, pixel_size_nm: float,
                 read_noise: float = PAPER_CAMERA.read_noise) -> Camera:
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


def read_camera_map(path, name: str, frame_shape: tuple[int, int]) -> np.ndarray:
    """An uploaded per-pixel calibration map (``name``: offset, variance or gain): a grey-level TIFF of one
    image with the frames' rows and columns, finite; an InputError naming the field otherwise."""
    field = MAP_FIELDS[name]
    p = Path(path)
    if p.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError(f"{field}: '{p.name}' is not a TIFF file: upload a float .tif/.tiff image [H, W].")
    if not p.is_file() or p.stat().st_size == 0:
        raise InputError(f"{field}: the upload of '{p.name}' failed or the file is empty.")
    if p.stat().st_size > MAX_MAP_MB * 2**20:
        raise InputError(f"{field}: '{p.name}' is {p.stat().st_size / 2**20:.0f} MB; a map of frames of at most "
                         f"{MAX_FRAME_SIZE} x {MAX_FRAME_SIZE} px is under {MAX_MAP_MB} MB.")
    try:
        data = read_tiff_stack(p, max_frames=2)
    except ValueError as err:
        raise InputError(f"{field}: {str(err).replace(repr(os.fspath(p)), repr(p.name))}") from None
    except Exception as err:  # corrupt files can raise anything inside tifffile
        raise InputError(f"{field}: '{p.name}' could not be read as a TIFF ({type(err).__name__}).") from None
    if data.shape[0] != 1:
        raise InputError(f"{field}: '{p.name}' holds several images; a map is one image [H, W].")
    h, w = (int(v) for v in frame_shape)
    if data.shape[1:] != (h, w):
        flipped = " (transposed? a map has the frames' rows and columns)" if data.shape[1:] == (w, h) else ""
        raise InputError(f"{field}: '{p.name}' is {data.shape[1]} x {data.shape[2]} pixels but the frames are "
                         f"{h} x {w}{flipped}.")
    return data[0]


def add_camera_maps(camera: Camera, frame_shape: tuple[int, int], offset_map=None, variance_map=None,
                    gain_map=None) -> Camera:
    """``camera`` with the uploaded sCMOS maps (TIFF paths; any may be missing: that kind stays the field's
    value) checked by :func:`read_camera_map`; the camera itself when none is given."""
    given = {k: v for k, v in (("offset", offset_map), ("variance", variance_map), ("gain", gain_map))
             if v is not None and str(v) != ""}
    if not given:
        return camera
    maps = {k: read_camera_map(v, k, frame_shape) for k, v in given.items()}
    try:
        return camera.with_maps(**maps)
    except ValueError as err:
        name = next((k for k in maps if k in str(err)), None)
        raise InputError(f"{MAP_FIELDS[name] + ': ' if name else ''}{err}.") from None


def check_camera_fits(frames: np.ndarray, camera: Camera) -> list[str]:
    """The camera check of :mod:`smlm_diffusers.camera_check` on uploaded frames, in the upload tab's words.

    Raises InputError when the camera cannot fit the frames (the message names the field to
    change and the value the data suggest); returns the warnings of a doubtful one.
    """
    result = check_camera_data(frames, camera, options=CAMERA_FIELDS)
    if result.errors:
        raise InputError("; ".join(result.errors) + ".")  # each leads with the field, its value and the fix
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


def check_sampling(num_samples, num_inference_steps, pipe=None) -> tuple[int, int]:
    """(samples, steps) as ints: samples in [0, MAX_SAMPLES] (0 is DeepSTORM alone, steps unused),
    steps in [1, the model's maximum, at most MAX_STEPS]; steps None is the folder's default."""
    if num_inference_steps is None:
        num_inference_steps = default_steps(pipe)
    k, s = int(num_samples), int(num_inference_steps)
    if not 0 <= k <= MAX_SAMPLES:
        raise InputError(f"Samples must be between 0 (DeepSTORM only) and {MAX_SAMPLES}, got {k}.")
    if k > 0:
        try:
            s = check_inference_steps(s, None if pipe is None else pipe.scheduler, limit=MAX_STEPS)
        except ValueError as err:
            raise InputError(f"Steps {err}.") from None
    return k, s


def tiles_per_frame(pipe, shape: tuple[int, int]) -> int:
    """UNet tiles the pipeline cuts one frame of ``shape`` (camera pixels) into."""
    return len(pipe.frame_tiles(*shape).corners)


def frames_per_chunk(pipe, shape: tuple[int, int], num_samples: int, items: int = 64) -> int:
    """Frames per pipeline call: about ``items`` UNet tiles (x samples) per call."""
    if num_samples == 0:
        return 32
    return max(1, items // (tiles_per_frame(pipe, shape) * num_samples))


def tile_pixels_per_frame(pipe, shape: tuple[int, int]) -> int:
    """KDE pixels the UNet processes per frame of ``shape`` (camera pixels) and diffusion step:
    of its tiles, overlaps included (a camera-layout UNet's tile pixels count ``upsampling**2``
    each, the KDE pixels they hold)."""
    plan = pipe.frame_tiles(*shape)
    u = int(pipe.kde_net.config.upsampling)
    per_pixel = u * u if layout_of(pipe.unet.config) == "camera" else 1
    return int(plan.tile[0]) * int(plan.tile[1]) * len(plan.corners) * per_pixel


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
