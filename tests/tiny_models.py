"""The tiny random pipeline the tests share: fast, deterministic, meaningless outputs."""

import torch
from diffusers import UNet2DModel

import smlm_diffusers as sd
from smlm_diffusers.models.layout import unet_channels


def tiny_pipeline(in_channels: int = 2, threshold: float = 0.0, layout: str = "kde", **settings) -> sd.SMLMDiffusionPipeline:
    """DeepSTORM with 8 channels and a two-level UNet of (8, 16) channels.

    ``layout="kde"`` (v1): the UNet at the KDE resolution, ``in_channels`` 2 or 3, 32-pixel tiles.
    ``layout="camera"`` (v2): the UNet at camera resolution on the pixel-unshuffled KDE
    (``in_channels`` 2 or 3 says whether the frame is a channel), 16-pixel tiles.
    """
    torch.manual_seed(0)
    c_in, c_out = unet_channels(layout, 4, condition_on_frame=in_channels == 3)
    unet = UNet2DModel(sample_size=32, in_channels=c_in, out_channels=c_out, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=8)
    net = sd.DeepSTORM(context_channels=8, dilations=(1, 2), upsample_channels=(8, 4), prediction_channels=4)
    tiles = {"tile_size": 32, "tile_overlap": 4} if layout == "kde" else {"tile_size": 16, "tile_overlap": 2}
    # the random DeepSTORM's estimate is empty everywhere: sample every tile all the same
    tiles["skip_empty_tiles"] = False
    pipe = sd.SMLMDiffusionPipeline(net.eval(), unet.eval(), sd.GammaDDPMScheduler(), threshold=threshold,
                                    **(tiles | settings))
    pipe.set_progress_bar_config(disable=True)
    return pipe
