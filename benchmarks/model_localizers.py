"""The project's own localizers in the benchmark: DeepSTORM alone and the DDPM posterior mean.

Neither has a tuning hook: their peak threshold and refinement were tuned once on a
validation simulation (``train/tune_localization.py``) and live in the model config, so
the benchmark scenarios never select their parameters.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

import smlm_diffusers as sd
from smlm_diffusers.defaults import resolve_model

from .localizers import register_localizer

DEFAULT_MODEL = resolve_model()[0] or "pretrained/smlm-ddpm-2d"  # $SMLM_DIFFUSERS_MODEL, else the shipped folder


def _pipeline(model: str):
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _camera_kwargs(camera: sd.Camera) -> dict:
    return dict(camera_offset=camera.offset, camera_gain=camera.gain, read_noise=camera.read_noise,
                pixel_size_nm=camera.pixel_size_nm)


@register_localizer("DeepSTORM")
def make_deepstorm(model: str = DEFAULT_MODEL, batch_size: int = 64, mixed_precision: str = "bf16"):
    """DeepSTORM KDE + sub-pixel Gaussian refinement (what ``pipe(num_samples=0)`` returns).

    ``model`` is a pipeline folder (its ``kde_net`` is used) or a DeepSTORM folder;
    ``mixed_precision="no"`` runs it in float32 (``--option 'DeepSTORM.mixed_precision="no"'``,
    quoted: YAML reads a bare no as false).
    """
    path = Path(model)
    net = sd.DeepSTORM.from_pretrained(path / "kde_net" if (path / "kde_net").is_dir() else path).eval()

    def localize(frames_adu, camera: sd.Camera, sigma_px: float = 1.0) -> pd.DataFrame:
        return net.localize(frames_adu, camera=camera, batch_size=batch_size,
                            mixed_precision=mixed_precision)[["frame", "x_nm", "y_nm"]]

    return localize


@register_localizer("DDPM")
def make_ddpm(model: str = DEFAULT_MODEL, num_samples: int = 8, num_inference_steps: int = 20, seed: int = 0,
              batch_size: int = 64, sampler: str | None = None, schedule: str | None = None):
    """Molecules of the DDPM samples (mean position, sigma from the sample spread)."""
    pipe = _pipeline(model)

    def localize(frames_adu, camera: sd.Camera, sigma_px: float = 1.0) -> pd.DataFrame:
        out = pipe(frames_adu, num_samples=num_samples, num_inference_steps=num_inference_steps,
                   generator=torch.Generator().manual_seed(seed), batch_size=batch_size, sampler=sampler,
                   schedule=schedule, **_camera_kwargs(camera))
        return out.localizations

    return localize
