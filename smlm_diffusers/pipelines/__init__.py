"""The SMLM diffusion pipeline (a diffusers DiffusionPipeline; its DDPM mode in :mod:`.ddpm`), its output, its tiles
(:mod:`.tiling`) and the remote-code shims its folders carry (:mod:`.remote_code`)."""

from .pipeline_output import SMLMPipelineOutput
from .pipeline_smlm import SMLMDiffusionPipeline

__all__ = ["SMLMDiffusionPipeline", "SMLMPipelineOutput"]
