"""smlm-diffusers: uncertainty-aware SMLM with a conditional diffusion model.

The names below load on first use (PEP 562), so that ``import smlm_diffusers.io`` or ``.cli`` does not
load torch and diffusers: a script that only reads and writes tables starts in a fraction of a second.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "crlb": ".fisher", "crlb_3d": ".fisher", "fisher_information": ".fisher",
    "KDEScaling": ".kde", "render_kde": ".kde",
    "evaluate": ".localization", "localize_kde": ".localization",
    "DeepSTORM": ".models",
    "AstigmaticPSF": ".optics", "GaussianPSF": ".optics", "Optics": ".optics",
    "SMLMDiffusionPipeline": ".pipelines", "SMLMPipelineOutput": ".pipelines",
    "GammaDDPMScheduler": ".schedulers",
    "Camera": ".simulation", "CameraMaps": ".simulation", "FrameSimulator": ".simulation", "simulate": ".simulation",
    # the base classes diffusers' pipeline loader looks up in a component's library ("smlm_diffusers" in
    # model_index.json) to find how to load it: DeepSTORM is a ModelMixin, the scheduler a SchedulerMixin
    "ModelMixin": "diffusers", "SchedulerMixin": "diffusers",
}

__all__ = sorted(set(_EXPORTS) - {"ModelMixin", "SchedulerMixin"}) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smlm_diffusers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
