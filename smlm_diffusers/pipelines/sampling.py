"""Where DDPM mode samples and what it reads from the samples (the pipeline's methods wrap these).

:func:`ambiguity_mask` marks the pixels around the molecules whose configuration the first weighing
leaves undecided (the only places sampled unless ``sample_everywhere``); :func:`sample_detections`
localizes each sample only where it was drawn, one connected region at a time, so that the cost
follows what was sampled; :func:`remove_phase_bias` takes out the denoiser's per-channel background offset
before the samples become densities.
"""

from __future__ import annotations

import pandas as pd
import torch
from scipy import ndimage
from torch.nn import functional as F

NO_DETECTIONS = pd.DataFrame({"frame": [], "sample": [], "x_nm": [], "y_nm": []})


def ambiguity_mask(molecules: pd.DataFrame, frames_shape, pixel_size_nm: float, upsampling: int = 1,
                   margin_px: int = 2) -> torch.Tensor:
    """[F, h * upsampling, w * upsampling] bool: ``margin_px`` camera pixels around each of ``molecules``
    (frame, x_nm, y_nm), repeated ``upsampling`` times per axis (the UNet's working grid)."""
    n_frames, height, width = frames_shape
    mask = torch.zeros(n_frames, height, width, dtype=torch.bool)
    f = molecules["frame"].to_numpy().astype(int)
    r = (molecules["y_nm"].to_numpy() / pixel_size_nm).astype(int)
    c = (molecules["x_nm"].to_numpy() / pixel_size_nm).astype(int)
    for dr in range(-margin_px, margin_px + 1):
        for dc in range(-margin_px, margin_px + 1):
            mask[f, (r + dr).clip(0, height - 1), (c + dc).clip(0, width - 1)] = True
    return mask.repeat_interleave(upsampling, 1).repeat_interleave(upsampling, 2)


def sample_detections(samples: torch.Tensor, covered: torch.Tensor, localize, margin: int = 8) -> pd.DataFrame:
    """Localizations of every sample [F, K, uH, uW] where it was drawn (``covered`` [F, uH, uW]): columns
    frame, sample, x_nm, y_nm. Each connected drawn region is localized on its own bounding box (plus
    ``margin`` KDE pixels); ``localize(kde)`` is the pipeline's peak finder, ``localize.pixel_nm`` its grid."""
    scale, tables = float(localize.pixel_nm), []
    height, width = covered.shape[-2:]
    for f in range(samples.shape[0]):
        cov = covered[f].numpy()
        for box in ndimage.find_objects(ndimage.label(cov)[0]):
            r0, c0 = max(box[0].start - margin, 0), max(box[1].start - margin, 0)
            r1, c1 = min(box[0].stop + margin, height), min(box[1].stop + margin, width)
            det = localize(samples[f, :, r0:r1, c0:c1])
            if len(det) == 0:
                continue
            x, y = det["x_nm"].to_numpy() + c0 * scale, det["y_nm"].to_numpy() + r0 * scale
            i, j = (y / scale).astype(int).clip(0, height - 1), (x / scale).astype(int).clip(0, width - 1)
            keep = cov[i, j]
            tables.append(pd.DataFrame({"frame": f, "sample": det["frame"].to_numpy()[keep],
                                        "x_nm": x[keep], "y_nm": y[keep]}))
    return pd.concat(tables, ignore_index=True) if tables else NO_DETECTIONS


def remove_phase_bias(residuals: torch.Tensor, covered: torch.Tensor, factor: int) -> torch.Tensor:
    """Residual samples [F, K, uH, uW] less each sample's background offset per sub-pixel phase.

    A camera-layout denoiser predicts the ``factor**2`` KDE pixels of one camera pixel as separate
    channels (:mod:`~smlm_diffusers.models.layout`), and each channel carries its own small bias: the
    samples' mean shows a one-camera-pixel grid and dips below zero in the background (shipped v2
    model, 8 samples x 4 steps: phase means of the background spread over 2.5e-3 molecules per KDE
    pixel, the DeepSTORM estimate's over 7e-5; a molecule's peak is about 0.16). Molecules cover a small share of a frame, so the median of a
    sample's residual ``y - y_hat`` over the drawn pixels of one phase is that phase's background
    bias; it is subtracted where the sample was drawn (elsewhere the residual is zero). ``factor`` is
    the denoiser's pixel-unshuffle factor (1 for a UNet at the KDE resolution: one offset per sample).
    ``covered`` [F, uH, uW] bool is whole working-grid pixels (:meth:`sample_residuals`).
    """
    n_frames, k, height, width = residuals.shape
    f = int(factor)
    phases = F.pixel_unshuffle(residuals, f).reshape(n_frames, k, f * f, height // f, width // f)
    drawn = covered[:, ::f, ::f]
    out = phases.clone()
    for i in range(n_frames):
        if drawn[i].any():
            values = phases[i][..., drawn[i]]  # [K, f*f, n drawn working pixels]
            out[i][..., drawn[i]] = values - values.median(dim=-1, keepdim=True).values
    return F.pixel_shuffle(out.reshape(n_frames, k * f * f, height // f, width // f), f)
