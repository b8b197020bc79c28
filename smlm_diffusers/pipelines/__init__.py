"""The SMLM diffusion pipeline (a diffusers DiffusionPipeline)."""

from .pipeline_output import SMLMPipelineOutput
from .pipeline_smlm import SMLMDiffusionPipeline

__all__ = ["SMLMDiffusionPipeline", "SMLMPipelineOutput"]
