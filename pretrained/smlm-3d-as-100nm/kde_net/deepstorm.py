"""Written by smlm_diffusers' save_pretrained: the class comes from the installed package.

It lets `diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` load
this folder; the code itself is not copied here.
"""

from diffusers import ModelMixin  # noqa: F401  (diffusers resolves the component's base class here)

try:
    from smlm_diffusers.models.deepstorm import DeepSTORM  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "This pipeline needs the smlm-diffusers package: `pip install smlm-diffusers` "
        "(or `pip install -e .` in a clone of its repository)."
    ) from err
