"""Where DDPM tensors become UNet input and back: the denoiser's layout, in one place.

The DDPM always diffuses the KDE residual ``r = y - y_hat`` on the 4x upsampled grid; only
the tensor layout that the ``UNet2DModel`` sees differs, and the UNet's config tells which:

``"kde"`` (v1, ``out_channels == 1``)
    The UNet runs at the KDE resolution. Input ``[r_t, y_hat]`` plus, with
    ``in_channels == 3``, the normalized frame upsampled bicubically.
``"camera"`` (v2, ``out_channels == f**2``, ``f`` the upsampling)
    The UNet runs at camera resolution on pixel-unshuffled tensors (``F.pixel_unshuffle`` by
    ``f``: the ``f x f`` KDE pixels of one camera pixel become ``f**2`` channels, the patching
    of "simple diffusion", Hoogeboom et al. 2023). Input ``[unshuffle(r_t), unshuffle(y_hat)]``
    (``2 f**2`` channels) plus, with ``in_channels == 2 f**2 + 1``, the normalized frame itself;
    output ``f**2`` channels, shuffled back with ``F.pixel_shuffle``. Each step costs about 17x
    less than the same UNet at the KDE resolution.

Training (``train/train_ddpm.py``) and the pipeline both build the UNet input through
:func:`condition_channels`, :func:`to_working` and :func:`to_kde`, so they cannot drift apart.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def layout_of(unet_config) -> str:
    """``"kde"`` or ``"camera"``, read from a ``UNet2DModel`` config (module docstring)."""
    out = int(unet_config.out_channels if hasattr(unet_config, "out_channels") else unet_config["out_channels"])
    if out == 1:
        return "kde"
    factor = math.isqrt(out)
    if factor * factor != out:
        raise ValueError(f"a camera-layout UNet has f**2 output channels; got out_channels={out}")
    return "camera"


def factor_of(unet_config) -> int:
    """Pixel-unshuffle factor of a camera-layout UNet (1 for the KDE layout)."""
    out = int(unet_config.out_channels if hasattr(unet_config, "out_channels") else unet_config["out_channels"])
    return math.isqrt(out)


def uses_frame(unet_config) -> bool:
    """Whether the UNet takes the frame as a conditioning channel."""
    get = (lambda k: getattr(unet_config, k)) if hasattr(unet_config, "in_channels") else unet_config.__getitem__
    return int(get("in_channels")) == 2 * int(get("out_channels")) + 1


def unet_channels(layout: str, upsampling: int, condition_on_frame: bool) -> tuple[int, int]:
    """``(in_channels, out_channels)`` of a new UNet for ``layout``."""
    if layout not in ("kde", "camera"):
        raise ValueError(f"layout must be 'kde' or 'camera', got {layout!r}")
    out = 1 if layout == "kde" else upsampling**2
    return 2 * out + int(condition_on_frame), out


def to_working(x_kde: torch.Tensor, unet_config) -> torch.Tensor:
    """KDE-grid tensor [B, 1, fH, fW] -> the UNet's working layout."""
    if layout_of(unet_config) == "kde":
        return x_kde
    return F.pixel_unshuffle(x_kde, factor_of(unet_config))


def to_kde(x_working: torch.Tensor, unet_config) -> torch.Tensor:
    """The UNet's working layout -> KDE-grid tensor [B, 1, fH, fW] (inverse of :func:`to_working`)."""
    if layout_of(unet_config) == "kde":
        return x_working
    return F.pixel_shuffle(x_working, factor_of(unet_config))


def condition_channels(y_hat: torch.Tensor, frame_norm: torch.Tensor | None, unet_config) -> torch.Tensor:
    """The UNet's conditioning channels in its working layout.

    ``y_hat`` is the DeepSTORM KDE [B, 1, fH, fW] in [-1, 1] units; ``frame_norm`` the frames
    as DeepSTORM normalizes them (:meth:`DeepSTORM.normalize`) [B, 1, H, W], needed only when
    the UNet takes the frame. Returns [B, C, h, w] with ``C = in_channels - out_channels``.
    """
    cond = [to_working(y_hat, unet_config)]
    if uses_frame(unet_config):
        if frame_norm is None:
            raise ValueError("this UNet is conditioned on the frame: pass frame_norm")
        if layout_of(unet_config) == "kde":
            frame_norm = F.interpolate(frame_norm, size=y_hat.shape[-2:], mode="bicubic", align_corners=False)
        cond.append(frame_norm.to(y_hat.dtype))
    return torch.cat(cond, dim=1)


def condition_pad_values(unet_config) -> list[float]:
    """Per conditioning channel, the value of an empty field outside the frame: the KDE's
    background level (-1) on the KDE channels, 0 (the frame's median) on the frame channel."""
    n_kde = factor_of(unet_config) ** 2 if layout_of(unet_config) == "camera" else 1
    return [-1.0] * n_kde + [0.0] * int(uses_frame(unet_config))
