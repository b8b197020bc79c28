"""Where the shipped model lives, the sampling defaults of the CLI and the app, the range of steps.

The default pipeline folder is found relative to this package, never to the working
directory, so ``smlm-diffusers localize`` and ``python app.py`` work from any folder:

1. an explicit location (``--model``, ``load_pipeline(location)``): a folder or a Hub repo id;
2. else the environment variable :data:`MODEL_ENV` (``SMLM_DIFFUSERS_MODEL``);
3. else :data:`DEFAULT_MODEL` in the repository that holds this package
   (``<repo>/pretrained/smlm-ddpm-2d``: a clone, or an editable install of it);
4. else the copy a wheel installs under ``<sys.prefix>/share/smlm-diffusers/pretrained/``
   (``pip install .`` from a clone carries the folder, see ``pyproject.toml``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODEL_ENV = "SMLM_DIFFUSERS_MODEL"
DEFAULT_MODEL = "smlm-ddpm-2d"  # name of the shipped pipeline folder under pretrained/
HUB_MODEL_ID = "smlm-diffusers/smlm-ddpm-2d"  # the Hub id the Space's front matter names (README.md)
DEFAULT_SAMPLES = 8  # DDPM samples per frame (CLI)
DEFAULT_STEPS = None  # reverse diffusion steps (CLI): None is the folder's default_inference_steps
FALLBACK_STEPS = 20  # for a pipeline folder without default_inference_steps
APP_SAMPLES = 8  # the web demo's defaults (8 x the folder's steps: about a second per 64x64 frame here)
APP_STEPS = None

_PACKAGE = Path(__file__).resolve().parent


def default_model_candidates() -> list[Path]:
    """The folders searched, in order, for the shipped pipeline when no model is given."""
    return [
        _PACKAGE.parent / "pretrained" / DEFAULT_MODEL,  # a clone or an editable install
        Path(sys.prefix) / "share" / "smlm-diffusers" / "pretrained" / DEFAULT_MODEL,  # a wheel's data files
    ]


def shipped_roots() -> list[Path]:
    """The folders that hold the shipped pipeline folders (a clone's ``pretrained/``, a wheel's copy)."""
    return [p.parent for p in default_model_candidates()]


def shipped_model_path(name: str | os.PathLike) -> Path | None:
    """The shipped pipeline folder called ``name`` (or the last part of ``name``, so ``pretrained/NAME`` works
    from any folder), or None."""
    base = Path(str(name).rstrip("/\\")).name
    if not base:
        return None
    for root in shipped_roots():
        if (root / base / "model_index.json").is_file():
            return root / base
    return None


def shipped_model_names() -> list[str]:
    """Names of the shipped pipeline folders (``--model NAME`` works from any folder)."""
    names = {p.name for root in shipped_roots() if root.is_dir() for p in root.iterdir()
             if (p / "model_index.json").is_file()}
    return sorted(names)


def default_model_path() -> Path | None:
    """The first folder of :func:`default_model_candidates` that holds a ``model_index.json``, or None."""
    for folder in default_model_candidates():
        if (folder / "model_index.json").is_file():
            return folder
    return None


def resolve_model(location: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """(pipeline folder or Hub repo id, where it came from).

    ``where`` is ``"given"``, ``"env"`` or ``"default"``. The location is None only when no
    model was given, the environment variable is unset and no shipped folder exists:
    :func:`missing_model_message` says what to do then.
    """
    if location is not None and str(location).strip():
        return str(location), "given"
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env, "env"
    found = default_model_path()
    return (None if found is None else str(found)), "default"


def missing_model_message(option: str = "--model") -> str:
    """What to do when no model is given and the shipped folder is missing."""
    searched = ", ".join(str(p) for p in default_model_candidates())
    return (f"no model given and the shipped pipeline folder {DEFAULT_MODEL} was not found (looked in {searched}): "
            f"pass {option} with a pipeline folder or a Hugging Face Hub repo id (e.g. {option} {HUB_MODEL_ID}), "
            f"or set ${MODEL_ENV}")


MAX_STEPS_FALLBACK = 1000  # a scheduler that does not say


def max_inference_steps(scheduler) -> int:
    """The most reverse diffusion steps ``scheduler`` takes (its ``max_inference_steps``)."""
    return int(getattr(scheduler.config, "max_inference_steps", 0) or MAX_STEPS_FALLBACK)


def default_steps(pipe) -> int:
    """The pipeline folder's ``default_inference_steps`` (the few-step sampling its accuracy was
    measured with), else :data:`FALLBACK_STEPS`."""
    return getattr(getattr(pipe, "config", None), "default_inference_steps", None) or FALLBACK_STEPS


def model_steps(pipe, steps: int | None = None) -> int:
    """``steps``, or when None :func:`default_steps`; checked against the model's range
    (:func:`check_inference_steps`)."""
    return check_inference_steps(default_steps(pipe) if steps is None else steps, getattr(pipe, "scheduler", None))


def check_inference_steps(steps, scheduler=None, limit: int | None = None) -> int:
    """``steps`` as an int in [1, max], else ValueError ("must be between 1 and ..., got ...").

    max is the scheduler's :func:`max_inference_steps`, or ``limit`` when that is smaller (the
    app's bound on one request); the CLI and the app both check through here.
    """
    tops = ([] if scheduler is None else [max_inference_steps(scheduler)]) + ([] if limit is None else [int(limit)])
    top = min(tops) if tops else MAX_STEPS_FALLBACK
    n = int(steps)
    if not 1 <= n <= top:
        raise ValueError(f"must be between 1 and {top} for this model, got {n}")
    return n
