"""The tiny random pipeline the tests share: fast, deterministic, meaningless outputs."""

import torch
from diffusers import UNet2DModel

import smlm_diffusers as sd


def tiny_pipeline(in_channels: int = 2, threshold: float = 0.0, **settings) -> sd.SMLMDiffusionPipeline:
    """DeepSTORM with 8 channels and a two-level UNet of (8, 16) channels, 32-pixel tiles."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=in_channels, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=8)
    net = sd.DeepSTORM(context_channels=8, dilations=(1, 2), upsample_channels=(8, 4), prediction_channels=4,
                       threshold=threshold)
    settings = {"tile_size": 32, "tile_overlap": 4} | settings
    pipe = sd.SMLMDiffusionPipeline(net.eval(), unet.eval(), sd.GammaDDPMScheduler(), **settings)
    pipe.set_progress_bar_config(disable=True)
    return pipe
