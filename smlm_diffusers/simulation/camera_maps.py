"""Per-pixel calibration of an sCMOS camera: offset, read-noise variance and gain maps (the paper's eq. 4).

A :class:`CameraMaps` value rides inside a :class:`~smlm_diffusers.simulation.camera.Camera`; code reads it
through the camera (``adu_to_photons``, ``read_variance``, ``crop``), never as loose arrays.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MAP_NAMES = ("offset", "variance", "gain")
MAP_KEYS = {f"{name}_map": name for name in MAP_NAMES}
"""Key of a map in a camera block (``optics.yaml``, :meth:`Camera.to_dict`) -> its :class:`CameraMaps` name."""


def _read_map(path, name: str) -> np.ndarray:
    """A calibration map [H, W] from a single-image TIFF (a stack of one frame reads too)."""
    import tifffile

    where = os.fspath(path)
    try:
        data = np.asarray(tifffile.imread(where))
    except FileNotFoundError:
        raise ValueError(f"the {name} map {where!r} does not exist") from None
    except Exception as err:  # not a TIFF, corrupt: tifffile raises many kinds
        raise ValueError(f"the {name} map {where!r} is not a readable TIFF: {str(err).split(':')[0]}") from None
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f"the {name} map {where!r} must be one 2D image [rows, columns], got shape {data.shape}")
    return data


@dataclass(frozen=True, eq=False)
class CameraMaps:
    """Per-pixel calibration of a camera region, each map [H, W] in the frames' rows and columns.

    Parameters
    ----------
    offset : array [H, W], optional
        Dark level of each pixel, ADU.
    variance : array [H, W], optional
        Read-noise variance of each pixel, ADU^2 (the temporal variance of a dark series).
    gain : array [H, W], optional
        Conversion gain of each pixel, ADU per photo-electron.
    sources : dict, optional
        Where each map was read from (name -> path): :meth:`Camera.to_dict` refers to maps by these paths;
        a map without one is carried in memory and named by its digest.

    A map left out takes the camera's scalar value in every pixel. Maps are float64, read-only.
    """

    offset: np.ndarray | None = None
    variance: np.ndarray | None = None
    gain: np.ndarray | None = None
    sources: dict | None = None

    def __post_init__(self):
        shape = None
        for name in MAP_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            arr = np.array(value, dtype=np.float64)  # a copy: the caller's array may change later
            if arr.ndim != 2 or min(arr.shape) < 1:
                raise ValueError(f"the {name} map must be 2D [rows, columns], got shape {arr.shape}")
            if shape is not None and arr.shape != shape:
                raise ValueError(f"the camera maps differ in shape: {shape[0]} x {shape[1]} and {name} "
                                 f"{arr.shape[0]} x {arr.shape[1]}")
            shape = arr.shape
            if not np.isfinite(arr).all():
                raise ValueError(f"the {name} map holds NaN or infinite values")
            if name == "gain" and not (arr > 0).all():
                raise ValueError(f"the gain map must be > 0 ADU/e- in every pixel, its least value is {arr.min():g}")
            if name == "variance" and not (arr >= 0).all():
                raise ValueError(f"the variance map must be >= 0 ADU^2 in every pixel, its least value is {arr.min():g}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if shape is None:
            raise ValueError("CameraMaps needs at least one of the offset, variance and gain maps")
        sources = {k: str(v) for k, v in (self.sources or {}).items() if v is not None and getattr(self, k) is not None}
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "_tensors", {})  # (name, dtype, device) -> the map as a tensor, made once

    def tensor(self, name: str, dtype: torch.dtype, device) -> torch.Tensor:
        """One map as a tensor of ``dtype`` on ``device`` (cached)."""
        key = (name, dtype, str(device))
        if key not in self._tensors:
            self._tensors[key] = torch.as_tensor(np.array(getattr(self, name)), dtype=dtype, device=device)
        return self._tensors[key]

    @classmethod
    def read(cls, offset=None, variance=None, gain=None, base_dir=None) -> CameraMaps:
        """Maps from TIFF files (paths) or arrays; a relative path is taken from ``base_dir`` (e.g. the folder of
        the ``optics.yaml`` that names it)."""
        given, sources = {}, {}
        for name, value in (("offset", offset), ("variance", variance), ("gain", gain)):
            if value is None:
                continue
            if isinstance(value, (str, os.PathLike)):
                path = Path(value).expanduser()
                if not path.is_absolute() and base_dir is not None:
                    path = Path(base_dir) / path
                given[name], sources[name] = _read_map(path, name), str(path)
            else:
                given[name] = value
        return cls(**given, sources=sources)

    @property
    def shape(self) -> tuple[int, int]:
        return next(getattr(self, n).shape for n in MAP_NAMES if getattr(self, n) is not None)

    def digest(self, name: str) -> str:
        """A short content hash of one map (how a map held in memory is named)."""
        arr = getattr(self, name)
        return "sha1:" + hashlib.sha1(np.ascontiguousarray(arr).tobytes() + repr(arr.shape).encode()).hexdigest()[:16]

    def reference(self, name: str) -> str:
        """The path a map was read from, else its digest."""
        return self.sources.get(name) or self.digest(name)

    def crop(self, r0: int, c0: int, h: int, w: int) -> CameraMaps:
        """The maps of rows ``[r0, r0 + h)`` and columns ``[c0, c0 + w)``: that region must lie inside them."""
        r0, c0, h, w = int(r0), int(c0), int(h), int(w)
        mh, mw = self.shape
        if r0 < 0 or c0 < 0 or h < 1 or w < 1 or r0 + h > mh or c0 + w > mw:
            raise ValueError(f"rows {r0}..{r0 + h - 1}, columns {c0}..{c0 + w - 1} are not inside the camera maps "
                             f"of {mh} x {mw} pixels")
        if (r0, c0, h, w) == (0, 0, mh, mw):
            return self
        cut = {n: None if getattr(self, n) is None else getattr(self, n)[r0:r0 + h, c0:c0 + w] for n in MAP_NAMES}
        return CameraMaps(**cut)

    def __eq__(self, other) -> bool:
        if not isinstance(other, CameraMaps):
            return NotImplemented
        return all((getattr(self, n) is None and getattr(other, n) is None)
                   or (getattr(self, n) is not None and getattr(other, n) is not None
                       and np.array_equal(getattr(self, n), getattr(other, n))) for n in MAP_NAMES)

    def __hash__(self) -> int:
        return hash(tuple(self.digest(n) if getattr(self, n) is not None else None for n in MAP_NAMES))

    def __repr__(self) -> str:
        held = ", ".join(n for n in MAP_NAMES if getattr(self, n) is not None)
        return f"CameraMaps({held}; {self.shape[0]} x {self.shape[1]} pixels)"
