"""Networks: the DeepSTORM KDE estimator, a pure network from frames to KDE (localization
is :mod:`smlm_diffusers.localization`'s); the DDPM denoiser is a diffusers UNet2DModel whose
layout :mod:`.layout` describes."""

from .deepstorm import DeepSTORM, check_frames

__all__ = ["DeepSTORM", "check_frames"]
