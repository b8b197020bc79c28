"""smlm-diffusers: uncertainty-aware SMLM with a conditional diffusion model."""

from .fisher import crlb, crlb_3d, fisher_information
from .kde import KDEScaling, render_kde
from .localization import evaluate, localize_kde
from .models import DeepSTORM
from .optics import AstigmaticPSF, GaussianPSF, Optics
from .pipelines import SMLMDiffusionPipeline, SMLMPipelineOutput
from .schedulers import GammaDDPMScheduler
from .simulation import Camera, FrameSimulator, simulate

__version__ = "0.1.0"

__all__ = [
    "AstigmaticPSF",
    "Camera",
    "GaussianPSF",
    "Optics",
    "DeepSTORM",
    "FrameSimulator",
    "GammaDDPMScheduler",
    "KDEScaling",
    "SMLMDiffusionPipeline",
    "SMLMPipelineOutput",
    "crlb",
    "crlb_3d",
    "evaluate",
    "fisher_information",
    "localize_kde",
    "render_kde",
    "simulate",
    "__version__",
]
