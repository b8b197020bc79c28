"""Sparse frames: run DeepSTORM only around the spots a cheap detector sees on the camera frame.

On a sparse movie most of a frame is background, and DeepSTORM's output there is the empty level
(-1 in the networks' units) after the clamp. :func:`spot_windows` finds candidate spots on the
network's own input (the variance-stabilized frame, whose noise is about ``1 / input_scale`` per
pixel): a Gaussian matched filter of the PSF's width, local maxima over ``threshold`` times the
filtered noise. Each candidate gets a window of ``core + 2 * margin`` camera pixels centred on it
(centres snapped to a grid of ``core / 2 - spot_reach`` pixels, so that near candidates share one
window); the network runs on the stacked windows, and each window's central ``core`` pixels are
written into an empty-level KDE canvas (the maximum where two cores overlap). Only frames whose
windows cover less than ``max_fraction`` of the frame take this path; the others run whole.

The margin gives the network the context it needs: it was trained on 32 x 32 patches with zero
padding, so a spot 10 pixels inside a window is one it knows. ``python -m benchmarks.speed --sparse``
measures the gain and compares the localizations with the whole-frame run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class SpotWindows:
    """How :func:`spot_windows` cuts frames: camera pixels throughout.

    ``threshold`` is in units of the matched filter's noise, ``core`` the side of the kept part
    around a candidate, ``margin`` the context on each side, ``sigma_px`` the detector's Gaussian
    and ``max_fraction`` the share of a frame the windows may cover before the frame runs whole.
    """

    threshold: float = 4.0
    core: int = 12
    margin: int = 10
    sigma_px: float = 1.0
    max_fraction: float = 0.5
    spot_reach: int = 4  # a molecule's KDE lies within this many camera pixels of its detection

    def __post_init__(self):
        if self.core < 2 * self.spot_reach + 2:
            raise ValueError(f"core ({self.core}) must be at least 2 * spot_reach + 2 = {2 * self.spot_reach + 2}")
        if self.margin < 0 or self.threshold <= 0 or not 0 < self.max_fraction <= 1:
            raise ValueError("margin must be >= 0, threshold > 0 and max_fraction in (0, 1]")

    @property
    def size(self) -> int:
        return self.core + 2 * self.margin

    @property
    def grid(self) -> int:
        return max(1, self.core // 2 - self.spot_reach)


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def candidates(x: torch.Tensor, noise: float, plan: SpotWindows) -> torch.Tensor:
    """(frame, row, col) [K, 3] of candidate spots in normalized frames ``x`` [B, 1, H, W] whose pixel
    noise is ``noise``: local maxima (3 x 3) of the Gaussian-filtered frame above ``plan.threshold``
    times the filtered noise."""
    k = _gaussian_kernel(plan.sigma_px, x.device)
    r = len(k) // 2
    s = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    s = F.conv2d(F.pad(s, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    level = plan.threshold * noise * float(torch.sqrt((k**2).sum()) ** 2)  # the 2D filter's noise: |k|^2
    peaks = (s == F.max_pool2d(s, 3, 1, 1)) & (s > level)
    idx = peaks[:, 0].nonzero()
    return idx


def window_corners(idx: torch.Tensor, h: int, w: int, plan: SpotWindows) -> torch.Tensor:
    """Unique (frame, row0, col0) [N, 3] of the windows for candidates ``idx`` [K, 3] (frame, row, col)."""
    g = plan.grid
    centre = torch.div(idx[:, 1:] + g // 2, g, rounding_mode="floor") * g
    row0 = (centre[:, 0] - plan.size // 2).clamp(0, max(h - plan.size, 0))
    col0 = (centre[:, 1] - plan.size // 2).clamp(0, max(w - plan.size, 0))
    return torch.unique(torch.stack([idx[:, 0], row0, col0], 1), dim=0)


def predict_windows(net, x: torch.Tensor, noise: float, plan: SpotWindows, upsampling: int = 4,
                    empty=(-1.0,), batch_size: int = 256):
    """KDEs [B, C, uH, uW] of normalized frames ``x`` [B, 1, H, W] through ``net`` (normalized frames
    -> clamped KDE of C channels, whose empty levels are ``empty``), windowed where the spots are sparse
    (module docstring). Returns the KDE and the number of camera pixels the network ran on."""
    b, _, h, w = x.shape
    size = plan.size
    if h < size or w < size:
        return net(x), b * h * w
    corners = window_corners(candidates(x, noise, plan), h, w, plan)
    per_frame = torch.bincount(corners[:, 0], minlength=b) if len(corners) else torch.zeros(b, dtype=torch.long)
    whole = per_frame * size * size >= plan.max_fraction * h * w
    u = upsampling
    levels = torch.as_tensor(empty if isinstance(empty, (tuple, list)) else (empty,), dtype=torch.float32)
    out = levels.to(x.device).view(1, -1, 1, 1).repeat(b, 1, u * h, u * w)
    pixels = 0
    if whole.any():
        rows = whole.nonzero()[:, 0]
        out[rows] = net(x[rows].contiguous(memory_format=torch.channels_last)).float()
        pixels += len(rows) * h * w
    corners = corners[~whole[corners[:, 0]]] if len(corners) else corners
    if len(corners):
        offs = torch.arange(size, device=x.device)
        for start in range(0, len(corners), batch_size):
            c = corners[start:start + batch_size]
            rr = (c[:, 1, None] + offs)[:, :, None]
            cc = (c[:, 2, None] + offs)[:, None, :]
            tiles = x[c[:, 0, None, None], 0, rr, cc].unsqueeze(1).contiguous(memory_format=torch.channels_last)
            kde = net(tiles).float()
            pixels += len(c) * size * size
            _place_cores(out, kde, c, plan, u, h, w)
    return out, pixels


def _place_cores(out, kde, corners, plan: SpotWindows, u: int, h: int, w: int) -> None:
    """Write each window's core (its central ``core`` pixels, shifted with the window at the frame's
    edges so that it covers the same candidates) into ``out``, keeping the maximum where cores overlap."""
    size = plan.size
    for k in range(len(corners)):
        f, r0, c0 = (int(v) for v in corners[k])
        # the core is the window's centre, except where the window was pushed in from a frame edge:
        # then it extends to that edge (the context there is the frame's edge, as in a whole-frame run)
        a0 = plan.margin if r0 > 0 else 0
        a1 = size - plan.margin if r0 + size < h else size
        b0 = plan.margin if c0 > 0 else 0
        b1 = size - plan.margin if c0 + size < w else size
        dst = out[f, :, u * (r0 + a0):u * (r0 + a1), u * (c0 + b0):u * (c0 + b1)]
        src = kde[k, :, u * a0:u * a1, u * b0:u * b1]
        # the density: the maximum where cores overlap; a z channel follows the window whose density won
        won = src[0] > dst[0]
        dst[1:] = torch.where(won, src[1:], dst[1:])
        dst[0] = torch.maximum(dst[0], src[0])
