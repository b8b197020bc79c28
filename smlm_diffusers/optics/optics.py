"""One value for the microscope: the :class:`Camera` and the :class:`PSF`, saved as YAML or JSON.

``optics.yaml`` (written by ``smlm-diffusers estimate --out`` and ``calibrate-z -o``, read by
``localize --optics``) holds::

    optics:
      camera: {pixel_size_nm: 100.0, offset: 100.0, gain: 5.5, read_noise: 1.6, qe: 1.0}
      psf: {type: astigmatic, sigma0_x_px: ..., ...}

An sCMOS camera's block may name per-pixel maps, float TIFFs [H, W] in the frames' rows and columns
(paths relative to the YAML file): ``offset_map`` (ADU), ``variance_map`` (read-noise variance, ADU^2)
and ``gain_map`` (ADU per photo-electron); :class:`~smlm_diffusers.simulation.camera.Camera`.

A file may hold other sections beside ``optics:`` (an estimate's numbers, a calibration's
residuals); a file whose top level is the camera and PSF blocks reads too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..simulation.camera import Camera
from .psf import PSF, GaussianPSF, psf_from_dict


def _check_value(key: str, value) -> None:
    """ValueError naming ``key`` when ``value`` (a number or a list of numbers) is missing or not finite."""
    if value is None:
        hint = (" (measure the PSF with 'smlm-diffusers estimate' on sparse frames, or 'calibrate-z' for 3D)"
                if ".psf." in f".{key}" else "")
        raise ValueError(f"'{key}' has no value (null): give it a number, or delete the line for the "
                         f"default{hint}")
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if item is None:
            raise ValueError(f"'{key}' holds an empty entry (null)")
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not math.isfinite(item):
            raise ValueError(f"'{key}' must be a finite number, got {item}")


@dataclass(frozen=True)
class Optics:
    """The camera and the PSF of a microscope (docs/conventions.md: the paper's camera, sigma 1 px, by default)."""

    camera: Camera = field(default_factory=Camera)
    psf: PSF = field(default_factory=GaussianPSF)

    @property
    def ndim(self) -> int:
        return self.psf.ndim

    def to_dict(self) -> dict:
        return {"camera": self.camera.to_dict(), "psf": self.psf.to_dict()}

    @classmethod
    def from_dict(cls, values: dict, base_dir=None) -> Optics:
        """From :meth:`to_dict`'s output (or a document with an ``optics:`` section). Missing keys take the
        defaults; a key without a value (YAML ``null``, e.g. ``sigma_px:`` of an estimate that found too few
        spots) or a number that is not finite raises ``ValueError`` naming the key. The camera's per-pixel maps
        (``offset_map``, ``variance_map``, ``gain_map``: TIFF paths) are read relative to ``base_dir``."""
        where = "optics" if "optics" in values else ""
        values = values.get("optics", values)
        if not isinstance(values, dict):
            raise ValueError(f"'{where or 'the file'}' has no value: expected 'camera:' and 'psf:' blocks")
        unknown = sorted(set(values) - {"camera", "psf"})
        if unknown:
            raise ValueError(f"unknown optics keys {unknown}; optics has 'camera' and 'psf'")
        blocks = {}
        for name, default in (("camera", {}), ("psf", {"type": "gaussian"})):
            key = f"{where}.{name}" if where else name
            block = values.get(name, default)
            if not isinstance(block, dict):
                raise ValueError(f"'{key}' has no value" if block is None else
                                 f"'{key}' must be a mapping of keys to values, got {block!r}")
            for k, v in block.items():
                _check_value(f"{key}.{k}", v)
            blocks[name] = block
        return cls(Camera.from_dict(blocks["camera"], base_dir=base_dir), psf_from_dict(blocks["psf"]))

    @classmethod
    def from_flat(cls, pixel_size_nm=None, camera_offset=None, camera_gain=None, read_noise=None,
                  psf_sigma_px=None, **_ignored) -> Optics:
        """From the flat keys of a DeepSTORM config (``pixel_size_nm``, ``camera_offset``, ...)."""
        d = Camera()
        cam = Camera(pixel_size_nm=d.pixel_size_nm if pixel_size_nm is None else float(pixel_size_nm),
                     offset=d.offset if camera_offset is None else float(camera_offset),
                     gain=d.gain if camera_gain is None else float(camera_gain),
                     read_noise=d.read_noise if read_noise is None else float(read_noise))
        return cls(cam, GaussianPSF(1.0 if psf_sigma_px is None else float(psf_sigma_px)))

    def to_yaml(self, path, extra: dict | None = None, comment: str = "") -> None:
        import yaml

        doc = {"optics": self.to_dict()} | (extra or {})
        head = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
        Path(path).write_text(head + yaml.safe_dump(doc, sort_keys=False))

    @classmethod
    def from_yaml(cls, path) -> Optics:
        import yaml

        doc = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a mapping with an 'optics:' section")
        return cls.from_dict(doc, base_dir=Path(path).parent)

    def replace(self, camera: Camera | None = None, psf: PSF | None = None) -> Optics:
        return Optics(self.camera if camera is None else camera, self.psf if psf is None else psf)
