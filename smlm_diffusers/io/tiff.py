"""TIFF stacks in and out: grey-level SMLM movies as float32 [F, H, W].

Only the first image series of a file is read (OME and ImageJ files included). Frames are
0-based; pixel (row i, column j) covers x in [j*a, (j+1)*a), y in [i*a, (i+1)*a) nm.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import tifffile


def _open(path: str | os.PathLike) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except tifffile.TiffFileError as err:  # empty or not a TIFF; FileNotFoundError passes through
        text = str(err)
        why = ("it is empty" if "empty" in text.lower() else
               "it has no TIFF header; was another file renamed .tif?" if "not a tiff" in text.lower() else
               text.split(":")[0])  # tifffile's reason, without the raw bytes it quotes
        raise ValueError(f"{os.fspath(path)!r} is not a readable TIFF file: {why}") from err


def _stack_shape(tif: tifffile.TiffFile, path) -> tuple[int, int, int]:
    """(F, H, W) of the first series, or a ValueError for what is not a grey-level stack."""
    if not tif.series:
        raise ValueError(f"{os.fspath(path)!r} holds no images")
    series = tif.series[0]
    page = series.pages[0] if len(series.pages) else None
    samples = getattr(page, "samplesperpixel", 1)
    rgb = page is not None and page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    if "S" in series.axes or samples > 1 or rgb:
        raise ValueError(
            f"{os.fspath(path)!r} is a colour/multi-sample image (axes {series.axes!r}, shape {series.shape}); "
            "SMLM frames must be single-channel grey levels"
        )
    shape = tuple(int(s) for s in series.shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{os.fspath(path)!r} has a {len(shape)}D series (axes {series.axes!r}, shape {shape}); "
            "expected a 2D frame [H, W] or a 3D stack [F, H, W]"
        )
    if len(shape) == 2:
        shape = (1, *shape)
    if 0 in shape:
        raise ValueError(f"{os.fspath(path)!r} holds a zero-size image (shape {shape})")
    return shape


def _as_float32(data: np.ndarray, path) -> np.ndarray:
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f"{os.fspath(path)!r} has unsupported pixel type {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise ValueError(f"{os.fspath(path)!r} contains NaN or infinite pixel values")
    return data


def _read_frames(tif: tifffile.TiffFile, start: int, stop: int, shape) -> np.ndarray:
    """Frames [start, stop) of the first series as [stop - start, H, W]."""
    series = tif.series[0]
    n_frames = series.shape[0] if len(series.shape) == 3 else 1
    if len(series.pages) == n_frames:
        # one page per frame: key= reads only these pages from disk, not the whole series
        data = tif.asarray(key=range(start, stop), series=0)
    else:  # frames not stored as pages (rare layouts): read the series, then slice
        data = series.asarray().reshape(-1, *shape[1:])[start:stop]
    return data.reshape(stop - start, *shape[1:])


def read_tiff_stack(
    path: str | os.PathLike,
    max_frames: int | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read a grey-level TIFF movie as float32 [F, H, W].

    Parameters
    ----------
    path : str or path-like
    max_frames : int, optional
        Read only the first ``max_frames`` frames (the rest are not loaded).
    max_pixels : int, optional
        Largest number of pixels (F x H x W, after ``max_frames``) accepted; larger stacks
        raise instead of filling memory.

    Returns
    -------
    numpy.ndarray, float32, [F, H, W]
        Pixel values as stored (ADU for camera data); a 2D image gives F = 1.

    Raises
    ------
    ValueError
        For files that are empty or not TIFF, colour (RGB/RGBA, several samples per pixel),
        4D or higher series, zero-size images, NaN/inf values, unsupported pixel types, or
        stacks larger than ``max_pixels``.
    """
    with _open(path) as tif:
        f, h, w = _stack_shape(tif, path)
        if max_frames is not None:
            if max_frames < 1:
                raise ValueError(f"max_frames must be >= 1, got {max_frames}")
            f = min(f, int(max_frames))
        if max_pixels is not None and f * h * w > max_pixels:
            raise ValueError(f"{os.fspath(path)!r}: {f} x {h} x {w} pixels exceed max_pixels = {max_pixels}")
        return _as_float32(_read_frames(tif, 0, f, (f, h, w)), path)


def tiff_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(frames, H, W) of a grey-level TIFF movie, from its header (no pixels are read).

    Raises
    ------
    ValueError
        As :func:`read_tiff_stack` for files that are not grey-level 2D or 3D stacks.
    """
    with _open(path) as tif:
        return _stack_shape(tif, path)


def iter_tiff_frames(
    path: str | os.PathLike,
    batch_size: int = 64,
    max_frames: int | None = None,
    ranges: Iterable[tuple[int, int]] | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 batches [B, H, W] of a TIFF movie without loading all of it.

    Only the pages of each batch are read from disk (one page per frame, as cameras and
    ImageJ write them), so memory holds one batch whatever the movie's length.

    Parameters
    ----------
    path : str or path-like
    batch_size : int
        Frames per batch (the last batch may be shorter).
    max_frames : int, optional
        Stop after this many frames.
    ranges : iterable of (start, stop), optional
        Yield frames ``[start, stop)`` for each range instead (0-based, any order, from one
        open file): a resumed run, or one process of several, reads only its own frames.
        ``batch_size`` and ``max_frames`` are then ignored.

    Yields
    ------
    numpy.ndarray, float32, [B, H, W]
        Consecutive frames; the first batch starts at frame 0 (or the first range's start).

    Raises
    ------
    ValueError
        As :func:`read_tiff_stack`, checked before the first batch (NaN/inf per batch), or
        for a range outside the movie.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with _open(path) as tif:
        tif.pages.cache = False  # keep no page objects of pages already read: memory stays flat
        shape = _stack_shape(tif, path)
        if ranges is None:
            n = shape[0] if max_frames is None else min(shape[0], int(max_frames))
            ranges = ((start, min(start + batch_size, n)) for start in range(0, n, batch_size))
        for start, stop in ranges:
            if not 0 <= start < stop <= shape[0]:
                raise ValueError(f"{os.fspath(path)!r}: frames [{start}, {stop}) are outside its {shape[0]} frames")
            yield _as_float32(_read_frames(tif, start, stop, shape), path)


def write_tiff(path: str | os.PathLike, array, pixel_size_nm: float | None = None) -> None:
    """Write a float32 image [H, W] or stack [F, H, W] (one page per frame) as an ImageJ TIFF.

    Parameters
    ----------
    path : str or path-like
    array : array-like, [H, W] or [F, H, W]
        Converted to float32 (ImageJ/Fiji read it as a 32-bit stack; a stack's pages are
        frames, ImageJ axis T).
    pixel_size_nm : float, optional
        Side of one pixel of ``array`` in nm (for a KDE: the camera pixel / upsampling).
        Stored as ImageJ calibration: X/Y resolution ``1 / pixel_size_nm`` pixels per unit
        and ``unit: nm``, so Fiji's *Image > Properties* and scale bars show nanometres.
        Without it the file carries no calibration (Fiji shows pixels).
    """
    data = np.asarray(array, dtype=np.float32)
    if data.ndim not in (2, 3) or data.size == 0:
        raise ValueError(f"write_tiff expects a non-empty [H, W] or [F, H, W] array, got shape {data.shape}")
    metadata = {"axes": "TYX" if data.ndim == 3 else "YX"}
    kwargs = {}
    if pixel_size_nm is not None:
        a = float(pixel_size_nm)
        if not (np.isfinite(a) and a > 0):
            raise ValueError(f"pixel_size_nm must be a positive number, got {pixel_size_nm}")
        metadata["unit"] = "nm"
        kwargs["resolution"] = (1.0 / a, 1.0 / a)
    tifffile.imwrite(path, data, imagej=True, metadata=metadata, **kwargs)


def tiff_pixel_size_nm(path: str | os.PathLike) -> float | None:
    """Pixel size (nm) stored in a TIFF's ImageJ calibration (unit nm, um/micron or µm), or None."""
    with _open(path) as tif:
        page = tif.pages[0]
        unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
        if "XResolution" not in page.tags:
            return None
        num, den = page.tags["XResolution"].value
        if num == 0:
            return None
        per_pixel = den / num  # units per pixel
    scale = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "micron": 1e3, "µm": 1e3}.get(unit)
    return None if scale is None else per_pixel * scale
