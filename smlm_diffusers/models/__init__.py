"""Networks: the DeepSTORM KDE estimator (the DDPM denoiser is a diffusers UNet2DModel)."""

from .deepstorm import DeepSTORM, check_frames

__all__ = ["DeepSTORM", "check_frames"]
