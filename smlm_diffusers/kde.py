"""Kernel density estimates (KDEs) of emitter positions on the upsampled grid.

The KDE of a frame is a sum of unit-mass Gaussians (standard deviation ``sigma`` in
*upsampled* pixels), one per emitter, integrated over the upsampled pixels; its sum is the
emitter count. The upsampled grid has ``upsampling`` x the camera's pixels, with the same
geometry (outer top-left corner at 0), so an emitter at camera pixel ``x`` sits at ``x * u``.

The networks see a fixed affine scaling of the KDE to about [-1, 1] (:class:`KDEScaling`):
empty background is -1 and the centre of an isolated emitter is close to +1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .optics.gaussian import render_psfs


def render_kde(
    x_px: torch.Tensor,
    y_px: torch.Tensor,
    weights: torch.Tensor,
    shape: tuple[int, int],
    upsampling: int = 4,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Render emitters as a KDE on the upsampled grid.

    Parameters
    ----------
    x_px, y_px : tensors [B, E]
        Positions in *camera* pixels (edge convention).
    weights : tensor [B, E]
        Mass of each emitter (1 for a real emitter, 0 for padding; a bool mask works).
    shape : (H, W)
        Camera frame shape; the KDE is ``(H * upsampling, W * upsampling)``.
    upsampling : int
    sigma : float
        Kernel standard deviation in upsampled pixels.

    Returns
    -------
    tensor [B, 1, H*u, W*u], float32, each emitter integrating to its weight.
    """
    h, w = shape
    u = int(upsampling)
    kde = render_psfs(x_px * u, y_px * u, weights.to(x_px.dtype), (h * u, w * u), sigma)
    return kde.unsqueeze(1)


@dataclass(frozen=True)
class KDEScaling:
    """Fixed, invertible map between KDE values and the networks' range.

    ``unit = 2 * kde / peak - 1`` with ``peak = 1 / (2 pi sigma^2)``, the continuous peak of one
    unit-mass Gaussian. Empty pixels map to exactly -1; the centre pixel of an isolated
    emitter maps to about +0.84 (sigma = 1, emitter at a pixel centre); emitters closer than
    about one kernel width add up above +1.
    """

    sigma: float = 1.0

    @property
    def peak(self) -> float:
        return 1.0 / (2.0 * math.pi * self.sigma**2)

    def to_unit(self, kde):
        return 2.0 * kde / self.peak - 1.0

    def from_unit(self, unit):
        return (unit + 1.0) * (self.peak / 2.0)
