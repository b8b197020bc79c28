"""smlm-diffusers: uncertainty-aware SMLM with a conditional diffusion model."""

from .kde import KDEScaling, render_kde
from .simulation import Camera, FrameSimulator, simulate

__version__ = "0.1.0"

__all__ = ["Camera", "FrameSimulator", "KDEScaling", "render_kde", "simulate", "__version__"]
