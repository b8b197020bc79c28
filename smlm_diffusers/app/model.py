"""The app's pipeline: where it is, loading it once, warming it up, its camera and step limit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..defaults import DEFAULT_MODEL, HUB_MODEL_ID, MODEL_ENV, default_model_candidates, resolve_model
from ..defaults import max_inference_steps as scheduler_max_steps
from ..simulation import Camera

MAX_STEPS = 100  # reverse diffusion steps of one request, whatever the scheduler allows

# One pipeline call at a time: the scheduler keeps per-call state (its timesteps).
_PIPE_LOCK = threading.Lock()


def model_location(default_root: str | os.PathLike | None = None) -> tuple[str, bool]:
    """(path or Hub repo id of the pipeline, whether it is the default).

    ``$SMLM_DIFFUSERS_MODEL`` wins; otherwise the shipped ``pretrained/smlm-ddpm-2d``, found
    next to the package (:mod:`smlm_diffusers.defaults`, whatever the working directory), or
    under ``default_root`` when given.
    """
    location, where = resolve_model(None)
    if where == "env":
        return location, False
    if default_root is not None:
        return str(Path(default_root) / "pretrained" / DEFAULT_MODEL), True
    return location or str(default_model_candidates()[0]), True


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
    frame = np.full((16, 16), pipeline_camera(pipe).offset + 10.0, dtype=np.float32)
    with _PIPE_LOCK:
        pipe(frame, num_samples=1, num_inference_steps=1, generator=torch.Generator().manual_seed(0))


def pipeline_camera(pipe) -> Camera:
    """The camera of the pipeline's config (pixel size, offset, gain, read noise)."""
    return pipe.kde_net.camera


def max_inference_steps(pipe) -> int:
    """The most steps the app runs with ``pipe``: the scheduler's limit, at most :data:`MAX_STEPS`."""
    return min(MAX_STEPS, scheduler_max_steps(pipe.scheduler))
