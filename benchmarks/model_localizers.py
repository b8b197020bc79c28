"""The project's own localizers in the benchmark: DeepSTORM alone and the DDPM posterior mean.

Neither has a tuning hook: their peak threshold and refinement were tuned once on a
validation simulation (``train/tune_localization.py``) and live in the model config, so
the benchmark scenarios never select their parameters.
"""

from __future__ import annotations

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


@register_localizer("DeepSTORM")
def make_deepstorm(model: str = DEFAULT_MODEL, batch_size: int = 64, mixed_precision: str = "auto",
                   refine: bool | None = None, split: bool | None = None, arbitrate: bool = False):
    """DeepSTORM alone, as ``pipe(frames, num_samples=0, arbitrate=False)`` returns it: KDE peaks with sub-pixel
    Gaussian refinement, then (``refine``, default the pipeline's setting) the joint maximum-likelihood
    fit on the frame, whose bound is the sigma. ``arbitrate=True`` (``--option 'DeepSTORM+arb.arbitrate=true'``
    with ``--methods 'DeepSTORM+arb=DeepSTORM'``) is the pipeline's default mode, DeepSTORM + arbitration.

    ``model`` is a pipeline folder; ``mixed_precision="no"`` runs DeepSTORM in float32
    (``--option 'DeepSTORM.mixed_precision="no"'``, quoted: YAML reads a bare no as false).
    """
    pipe = _pipeline(model)

    def localize(frames_adu, camera: sd.Camera, sigma_px: float = 1.0) -> pd.DataFrame:
        out = pipe(frames_adu, num_samples=0, batch_size=batch_size, mixed_precision=mixed_precision, refine=refine,
                   split=split, camera=camera, arbitrate=arbitrate)
        return out.localizations

    return localize


@register_localizer("DDPM")
def make_ddpm(model: str = DEFAULT_MODEL, num_samples: int = 8, num_inference_steps: int | None = None, seed: int = 0,
              batch_size: int = 64, sampler: str | None = None, schedule: str | None = None,
              refine: bool | None = None, split: bool | None = None):
    """Molecules of the DDPM samples (mean position, sigma from the sample spread)."""
    pipe = _pipeline(model)

    def localize(frames_adu, camera: sd.Camera, sigma_px: float = 1.0) -> pd.DataFrame:
        out = pipe(frames_adu, num_samples=num_samples, num_inference_steps=num_inference_steps,
                   generator=torch.Generator().manual_seed(seed), batch_size=batch_size, sampler=sampler,
                   schedule=schedule, refine=refine, split=split, camera=camera)
        return out.localizations

    return localize
