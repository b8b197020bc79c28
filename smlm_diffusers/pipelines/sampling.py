"""Where DDPM mode samples and what it reads from the samples (the pipeline's methods wrap these).

:func:`ambiguity_mask` marks the pixels around the molecules whose configuration the first weighing
leaves undecided (the only places sampled unless ``sample_everywhere``); :func:`sample_detections`
localizes each sample only where it was drawn, one connected region at a time, so that the cost
follows what was sampled.
"""

from __future__ import annotations

import pandas as pd
import torch
from scipy import ndimage

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
