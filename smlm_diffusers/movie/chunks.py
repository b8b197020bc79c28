"""One batch of frames through the pipeline: tiles, bounded calls, localizations, render sums."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..screening import add_counts, screen_localizations
from .tiles import Tile, keep_core, tile_frame

# Camera pixels per pipeline call (all its KDEs are held at once: 16 x this many float32
# values per output array, 64 MB) and per DeepSTORM forward pass in DeepSTORM mode (the
# paper's head holds 16-channel activations at the KDE resolution: 32 MB per layer on a CPU,
# where larger passes are no faster: 64 x 64 frames ran at 10.9 / 10.7 / 10.1 frames/s with
# 2^15 / 2^16 / 2^17 pixels per pass, peak memory 0.74 / 0.91 / 1.24 GB; 8x more on a GPU).
CALL_PIXELS = 2**20
FORWARD_PIXELS = 2**15
FORWARD_PIXELS_GPU = 2**18


@dataclass
class ChunkResult:
    """Results of :func:`localize_frames` for frames ``[start, stop)`` of a movie.

    localizations : DataFrame
        The pipeline's columns (plus any ``postprocess`` adds); ``frame`` is the movie's
        0-based frame index, x_nm and y_nm are in the frame's coordinates.
    kde_sum : float64 array [uH, uW]
        The KDE (DeepSTORM, or the mean of the DDPM samples) summed over these frames.
    kde_var : float64 array [uH, uW] or None
        The per-pixel sample variance summed over these frames (DDPM mode).
    rejected : dict
        Rows left out of ``localizations`` by reason (:mod:`smlm_diffusers.screening`).
    images : dict or None
        With ``keep_images``: ``kde_mean``, ``kde_var``, ``deepstorm_kde`` [F, uH, uW] and
        ``samples`` [F, K, uH, uW] (float32; None where the mode has none), stitched from the
        tiles' cores.
    """

    start: int
    stop: int
    localizations: pd.DataFrame
    kde_sum: np.ndarray
    kde_var: np.ndarray | None
    images: dict | None = None
    rejected: dict | None = None


def _window_stack(frames: np.ndarray, items: list[tuple[int, int]], tiles: list[Tile]) -> np.ndarray:
    """The windows of ``items`` (frame, tile) as one [n, th, tw] array (a view when untiled)."""
    if len(tiles) == 1:
        first, last = items[0][0], items[-1][0]
        return frames[first:last + 1]
    return np.stack([frames[f, t.window[0]:t.window[1], t.window[2]:t.window[3]]
                     for f, t in ((f, tiles[k]) for f, k in items)])


def _calls(items: list[tuple[int, int]], per_call: int, by_tile: bool) -> list[list[tuple[int, int]]]:
    """The items (frame, tile) of each pipeline call: ``per_call`` at a time, never two tiles in one call when
    ``by_tile``."""
    if not by_tile:
        return [items[i:i + per_call] for i in range(0, len(items), per_call)]
    out = []
    for k in dict.fromkeys(t for _, t in items):
        mine = [item for item in items if item[1] == k]
        out += [mine[i:i + per_call] for i in range(0, len(mine), per_call)]
    return out


def localize_frames(
    pipe,
    frames: np.ndarray,
    start: int = 0,
    *,
    num_samples: int = 0,
    generator=None,
    camera=None,
    optics=None,
    tile_size: int = 256,
    tile_margin: int = 16,
    batch_size: int = 32,
    call_pixels: int = CALL_PIXELS,
    forward_pixels: int | None = None,
    postprocess: Callable[[pd.DataFrame, np.ndarray], pd.DataFrame] | None = None,
    keep_images: bool = False,
    **pipeline_kwargs,
) -> ChunkResult:
    """Localize frames [F, H, W] (ADU) with the pipeline, tile by tile, in calls of bounded size.

    Parameters
    ----------
    pipe : SMLMDiffusionPipeline
    frames : array [F, H, W]
        Raw frames, ADU.
    start : int
        Movie index of ``frames[0]`` (added to the ``frame`` column).
    num_samples : int
        DDPM samples per frame; 0 runs DeepSTORM alone.
    generator : torch.Generator, optional
        Sampling noise of the whole chunk (the calls draw from it in order).
    camera : Camera, optional
        Overrides the model's camera (offset, gain, read noise, pixel size). Its per-pixel maps (an sCMOS)
        must have the frames' shape; each tile is localized with the maps cut to its window
        (:meth:`~smlm_diffusers.simulation.camera.Camera.crop`), one tile per call.
    tile_size, tile_margin : int
        Frames larger than ``tile_size`` camera pixels are cut into tiles with this margin
        (:mod:`smlm_diffusers.movie.tiles`).
    batch_size : int
        The pipeline's ``batch_size`` (frames per DeepSTORM pass, UNet tiles x samples per
        UNet pass); in DeepSTORM mode at most ``forward_pixels`` camera pixels per pass.
    call_pixels : int
        Camera pixels (x samples) per pipeline call: bounds the KDEs held at once.
    forward_pixels : int, optional
        Camera pixels per DeepSTORM pass in DeepSTORM mode (default ``FORWARD_PIXELS`` on a
        CPU, ``FORWARD_PIXELS_GPU`` on an accelerator).
    postprocess : callable, optional
        ``postprocess(localizations, windows)`` per call, in window coordinates, before
        the tiles are put together (e.g. photometry on the raw windows); with a camera that has per-pixel
        maps, ``postprocess(localizations, windows, camera=...)`` with the windows' camera. The rows are
        screened after it (:func:`~smlm_diffusers.screening.screen_localizations`, counts in ``rejected``).
    keep_images : bool
        Also return the per-frame images (memory grows with the chunk: for short stacks).
    **pipeline_kwargs
        Passed to the pipeline call (``num_inference_steps``, ``threshold``,
        ``min_probability``, ``mixed_precision``, ...).
    """
    frames = np.asarray(frames)
    n_frames, height, width = frames.shape
    optics = pipe.resolve_optics(optics, camera)  # resolved once: every call gets this PSF and (a tile of) its camera
    camera = optics.camera
    camera.check_shape((height, width))
    u = int(pipe.kde_net.config.upsampling)
    tiles = tile_frame(height, width, tile_size, tile_margin)
    th, tw = tiles[0].window[1] - tiles[0].window[0], tiles[0].window[3] - tiles[0].window[2]
    items = [(f, k) for f in range(n_frames) for k in range(len(tiles))]
    by_tile = camera.has_maps and len(tiles) > 1  # a call's windows share one camera: the maps cut to their tile
    if by_tile:
        items = [(f, k) for k in range(len(tiles)) for f in range(n_frames)]
    per_call = max(1, int(call_pixels) // (th * tw * max(1, num_samples)))
    if forward_pixels is None:
        forward_pixels = FORWARD_PIXELS if pipe.device.type == "cpu" else FORWARD_PIXELS_GPU
    if num_samples == 0:
        batch_size = max(1, min(int(batch_size), int(forward_pixels) // (th * tw)))
    call = dict(num_samples=num_samples, batch_size=batch_size, optics=optics)
    kde_sum = np.zeros((height * u, width * u))
    kde_var = np.zeros_like(kde_sum) if num_samples > 0 else None
    images = None
    tables, tile_of_row, rejected = [], [], add_counts(None, None)
    psf_sigma_px = float(optics.psf.sigma_px)
    row0 = np.array([t.window[0] for t in tiles], dtype=np.float64)
    col0 = np.array([t.window[2] for t in tiles], dtype=np.float64)
    for part in _calls(items, per_call, by_tile):
        windows = _window_stack(frames, part, tiles)
        if camera.has_maps:
            r0, r1, c0, c1 = tiles[part[0][1]].window
            call["optics"] = optics.replace(camera=camera.crop(r0, c0, r1 - r0, c1 - c0))
        out = pipe(windows, generator=generator, screen=False, **call, **pipeline_kwargs)
        locs = out.localizations
        if postprocess is not None:
            locs = postprocess(locs, windows, camera=call["optics"].camera) if camera.has_maps else postprocess(locs, windows)
        locs, left_out = screen_localizations(locs, windows.shape[-2:], camera.pixel_size_nm, psf_sigma_px)
        rejected = add_counts(rejected, left_out)
        item = locs["frame"].to_numpy(np.int64)  # index into ``windows``
        frame_of = np.array([f for f, _ in part], dtype=np.int64)
        tile_of = np.array([k for _, k in part], dtype=np.int64)
        if len(tiles) > 1:  # window -> frame coordinates
            locs["x_nm"] = locs["x_nm"].to_numpy(np.float64) + col0[tile_of[item]] * camera.pixel_size_nm
            locs["y_nm"] = locs["y_nm"].to_numpy(np.float64) + row0[tile_of[item]] * camera.pixel_size_nm
        images = _add_cores(out, tiles, tile_of, frame_of, u, kde_sum, kde_var,
                            (n_frames, height * u, width * u) if keep_images else None, images)
        locs["frame"] = frame_of[item] + int(start)
        tables.append(locs)
        tile_of_row.append(tile_of[item])
    table = pd.concat(tables, ignore_index=True)
    if len(tiles) > 1:
        keep = keep_core(table, np.concatenate(tile_of_row), tiles, camera.pixel_size_nm)
        table = table[keep].sort_values("frame", kind="stable").reset_index(drop=True)
    return ChunkResult(int(start), int(start) + n_frames, table, kde_sum, kde_var, images, rejected)


def _add_cores(out, tiles, tile_of, frame_of, u, kde_sum, kde_var, images_shape, images):
    """Add the KDE mean (and variance) of each call's tile cores to the chunk's sums; with ``images_shape``
    (frames, KDE height, KDE width), also stitch the per-frame images. Returns the images (or None)."""
    for k in np.unique(tile_of):
        sel = slice(None) if len(tiles) == 1 else np.flatnonzero(tile_of == k)
        ys, xs = tiles[k].core_in_window()
        ky, kx = slice(ys.start * u, ys.stop * u), slice(xs.start * u, xs.stop * u)
        r0, r1, c0, c1 = (v * u for v in tiles[k].core)
        kde_sum[r0:r1, c0:c1] += np.sum(out.kde_mean[sel, ky, kx], axis=0, dtype=np.float64)
        if kde_var is not None:
            kde_var[r0:r1, c0:c1] += np.sum(out.kde_var[sel, ky, kx], axis=0, dtype=np.float64)
        if images_shape is not None:
            images = _stitch(images, out, sel, frame_of[sel], (r0, r1, c0, c1), (ky, kx), images_shape[0],
                             images_shape[1:])
    return images


def _stitch(images, out, sel, frames, core, window_core, n_frames, shape):
    """Paste one tile's core of each selected output into the per-frame images."""
    if images is None:
        def alloc(a, extra=()):
            return None if a is None else np.zeros((n_frames, *extra, *shape), dtype=np.float32)

        k = None if out.samples is None else out.samples.shape[1]
        images = {"kde_mean": alloc(out.kde_mean), "kde_var": alloc(out.kde_var),
                  "deepstorm_kde": alloc(out.deepstorm_kde), "samples": alloc(out.samples, (k,))}
    r0, r1, c0, c1 = core
    ky, kx = window_core
    for name in ("kde_mean", "kde_var", "deepstorm_kde"):
        if images[name] is not None:
            images[name][frames, r0:r1, c0:c1] = getattr(out, name)[sel, ky, kx]
    if images["samples"] is not None:
        images["samples"][frames, :, r0:r1, c0:c1] = out.samples[sel][:, :, ky, kx]
    return images
