"""The web demo's logic (``app.py`` only builds the page): no Gradio imports here.

- :mod:`~smlm_diffusers.app.model`: where the pipeline is, loading and warming it up, its step limit;
- :mod:`~smlm_diffusers.app.inputs`: the limits of one request and every input check (:class:`InputError`);
- :mod:`~smlm_diffusers.app.core`: runs (:class:`RunResult`), metrics, the RMSE-vs-CRLB sweep;
- :mod:`~smlm_diffusers.app.downloads`: the download files (the CLI's table writers, calibrated TIFFs);
- :mod:`~smlm_diffusers.app.progress`: progress in frames and diffusion steps;
- :mod:`~smlm_diffusers.app.views`, :mod:`~smlm_diffusers.app.zoom`: the figures and the zoomed uncertainty view.

``import smlm_diffusers.app as au`` names everything ``app.py`` uses.
"""

from ..defaults import APP_SAMPLES as DEFAULT_SAMPLES
from ..defaults import APP_STEPS as DEFAULT_STEPS
from ..defaults import DEFAULT_MODEL, HUB_MODEL_ID, MODEL_ENV, model_steps
from .core import RunResult, crlb_curve, rmse_crlb_sweep, run_metrics, run_pipeline
from .downloads import write_outputs
from .inputs import (CAMERA_FIELDS, DEFAULT_FRAME_SIZE, DEFAULT_FRAMES, GALLERY_SAMPLES, MAX_DDPM_MPX_STEPS,
                     MAX_FRAME_SIZE, MAX_FRAMES, MAX_READ_NOISE, MAX_SAMPLES, MAX_STORED_SAMPLE_VALUES,
                     MAX_TOTAL_PIXELS, MAX_UPLOAD_MB, MIN_FRAME_SIZE, STRUCTURES, SWEEP_FRAMES, SWEEP_FRAMES_DDPM,
                     SWEEP_PHOTONS, InputError, SimulationSettings, check_camera, check_camera_fits, check_sampling,
                     check_stack, check_work, frames_per_chunk, read_upload, simulate_frames, tile_pixels_per_frame,
                     tiles_per_frame)
from .model import MAX_STEPS, load_pipeline, max_inference_steps, model_location, pipeline_camera, warmup

__all__ = [
    "model_steps", "CAMERA_FIELDS", "DEFAULT_FRAMES", "DEFAULT_FRAME_SIZE", "DEFAULT_MODEL", "DEFAULT_SAMPLES", "DEFAULT_STEPS",
    "GALLERY_SAMPLES", "HUB_MODEL_ID", "MAX_DDPM_MPX_STEPS", "MAX_FRAMES", "MAX_FRAME_SIZE", "MAX_READ_NOISE",
    "MAX_SAMPLES", "MAX_STEPS", "MAX_STORED_SAMPLE_VALUES", "MAX_TOTAL_PIXELS", "MAX_UPLOAD_MB", "MIN_FRAME_SIZE",
    "MODEL_ENV", "STRUCTURES", "SWEEP_FRAMES", "SWEEP_FRAMES_DDPM", "SWEEP_PHOTONS", "InputError", "RunResult",
    "SimulationSettings", "check_camera", "check_camera_fits", "check_sampling", "check_stack", "check_work",
    "crlb_curve", "frames_per_chunk", "load_pipeline", "max_inference_steps", "model_location", "pipeline_camera",
    "read_upload", "rmse_crlb_sweep", "run_metrics", "run_pipeline", "simulate_frames", "tile_pixels_per_frame",
    "tiles_per_frame", "warmup", "write_outputs",
]
