"""Pipeline settings that outlived their old places: the KDE peak settings, once in the
DeepSTORM config, and the per-call camera, once four loose floats."""

from __future__ import annotations

import dataclasses
import warnings

from ..localization.peaks import DEFAULT_REFINE, DEFAULT_THRESHOLD, DEFAULT_WINDOW
from ..simulation.camera import Camera

# pipeline setting -> (key of a kde_net config saved before the settings moved to the pipeline, default)
PEAK_SETTINGS = {"threshold": ("threshold", DEFAULT_THRESHOLD), "peak_refine": ("refine", DEFAULT_REFINE),
                 "peak_window": ("refine_window", DEFAULT_WINDOW)}
# deprecated per-call camera float -> the Camera field it sets
CAMERA_FLOATS = {"camera_offset": "offset", "camera_gain": "gain", "read_noise": "read_noise",
                 "pixel_size_nm": "pixel_size_nm"}


def peak_settings(given: dict, legacy: dict) -> dict:
    """The pipeline's ``threshold``, ``peak_refine``, ``peak_window``: the given value, else the
    old kde_net config's (``DeepSTORM.legacy_localization``), else ``localize_kde``'s default."""
    return {name: type(default)(legacy.get(old, default) if given.get(name) is None else given[name])
            for name, (old, default) in PEAK_SETTINGS.items()}


def call_camera(model_camera: Camera, camera: Camera | None, floats: dict) -> Camera:
    """The camera of one call: ``camera``, else the model's with the deprecated floats applied
    (``FutureWarning``); both at once is an error."""
    given = {CAMERA_FLOATS[k]: v for k, v in floats.items() if v is not None}
    if not given:
        return model_camera if camera is None else camera
    if camera is not None:
        raise ValueError(f"give camera= or the deprecated {sorted(floats)} floats, not both")
    warnings.warn(f"{', '.join(k for k in floats if floats[k] is not None)}: passing camera floats to the "
                  "pipeline is deprecated and will be removed in the next release; pass "
                  "camera=smlm_diffusers.Camera(...) instead", FutureWarning, stacklevel=4)
    return dataclasses.replace(model_camera, **given)
