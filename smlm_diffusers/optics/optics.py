"""One value for the microscope: the :class:`Camera` and the :class:`PSF`, saved as YAML or JSON.

``optics.yaml`` (written by ``smlm-diffusers estimate --out`` and ``calibrate-z -o``, read by
``localize --optics``) holds::

    optics:
      camera: {pixel_size_nm: 100.0, offset: 100.0, gain: 5.5, read_noise: 1.6, qe: 1.0}
      psf: {type: astigmatic, sigma0_x_px: ..., ...}

A file may hold other sections beside ``optics:`` (an estimate's numbers, a calibration's
residuals); a file whose top level is the camera and PSF blocks reads too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..simulation.camera import Camera
from .psf import PSF, GaussianPSF, psf_from_dict


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
    def from_dict(cls, values: dict) -> Optics:
        values = values.get("optics", values)
        unknown = sorted(set(values) - {"camera", "psf"})
        if unknown:
            raise ValueError(f"unknown optics keys {unknown}; optics has 'camera' and 'psf'")
        return cls(Camera.from_dict(values.get("camera", {})), psf_from_dict(values.get("psf", {"type": "gaussian"})))

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
        return cls.from_dict(doc)

    def replace(self, camera: Camera | None = None, psf: PSF | None = None) -> Optics:
        return Optics(self.camera if camera is None else camera, self.psf if psf is None else psf)
