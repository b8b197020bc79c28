"""Camera model: photons <-> photo-electrons <-> ADU (paper eqs. 3-6).

A pixel records ``ADU = gain * (Poisson(qe * photons) + Normal(0, read_noise^2)) + offset``.
Everything upstream of the camera works in photons; ADU only appears at this boundary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch


@dataclass(frozen=True)
class Camera:
    """A camera with a Poisson-normal noise model (an sCMOS or CCD; an EMCCD through :meth:`emccd`).

    Parameters
    ----------
    pixel_size_nm : float
        Side of a (square) camera pixel projected into the sample, in nm.
    offset : float
        Baseline added by the camera, in ADU.
    gain : float
        Conversion gain, in ADU per photo-electron.
    read_noise : float
        Read noise, in photo-electrons rms.
    qe : float
        Quantum efficiency (fraction of photons that become photo-electrons).
    """

    # the paper's camera (docs/conventions.md, default optics): the one place these numbers are written
    pixel_size_nm: float = 108.0
    offset: float = 100.0
    gain: float = 1.0
    read_noise: float = 1.6
    qe: float = 1.0

    def __post_init__(self):
        if self.pixel_size_nm <= 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        if self.gain <= 0:
            raise ValueError(f"gain must be > 0 ADU/e-, got {self.gain}")
        if self.read_noise < 0:
            raise ValueError(f"read_noise must be >= 0 e- rms, got {self.read_noise}")
        if not 0 < self.qe <= 1:
            raise ValueError(f"qe must be in (0, 1], got {self.qe}")

    @classmethod
    def emccd(cls, pixel_size_nm: float = 108.0, offset: float = 100.0, gain: float = 1.0, read_noise: float = 0.0,
              qe: float = 1.0, excess_noise: float = 2.0) -> Camera:
        """The Poisson-normal camera equivalent to an EMCCD whose gain register adds ``excess_noise``
        (the excess noise factor squared, F^2: 2 at high EM gain) to the shot-noise variance.

        ``gain`` is the whole conversion, ADU per photo-electron with the EM gain included, and
        ``read_noise`` is in photo-electrons (rms, referred to the input). The EM register's output
        is modelled as a scaled Poisson variable (the high-gain approximation of Mortensen et al.,
        Nat. Methods 2010, and Chao, Ward and Ober, 2013): counts of ``qe / F^2`` times the photons,
        each worth ``F^2 * gain`` ADU. The returned camera has the EMCCD's mean and variance in
        every pixel, so the simulator, the likelihoods and the Fisher information of this package
        see an EMCCD (its bounds are F^2 times a noiseless-gain camera's) and the photons they
        report are still incident photons.
        """
        f2 = float(excess_noise)
        if not 1.0 <= f2 <= 4.0:
            raise ValueError(f"excess_noise is the excess noise factor squared, F^2 in [1, 4] (2 for an EMCCD "
                             f"at high EM gain), got {excess_noise}")
        return cls(pixel_size_nm=pixel_size_nm, offset=offset, gain=gain * f2, read_noise=read_noise / f2,
                   qe=qe / f2)

    def to_dict(self) -> dict:
        """The camera as a plain dict of floats (a config's camera block); :meth:`from_dict` inverts it."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Camera:
        """A camera from a dict such as :meth:`to_dict` writes; missing keys take the defaults.

        Unknown keys raise ``ValueError`` (a typo such as ``"readnoise"`` must not pass silently).
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown camera keys {unknown}; a camera has {names}")
        return cls(**{k: float(v) for k, v in values.items()})

    def differences(self, other: Camera, names=None, rel_tol: float = 1e-6,
                    abs_tol: float = 1e-9) -> dict[str, tuple[float, float]]:
        """Fields (all, or those in ``names``) where the cameras differ beyond the float
        tolerance (:func:`math.isclose`): name -> (this camera's value, the other's)."""
        names = [f.name for f in fields(self)] if names is None else list(names)
        return {n: (getattr(self, n), getattr(other, n)) for n in names
                if not math.isclose(getattr(self, n), getattr(other, n), rel_tol=rel_tol, abs_tol=abs_tol)}

    def isclose(self, other: Camera, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
        """Whether every field agrees with ``other``'s within the float tolerance."""
        return not self.differences(other, rel_tol=rel_tol, abs_tol=abs_tol)

    def adu_to_photons(self, adu):
        """Convert ADU to detected photo-electrons, ``(ADU - offset) / gain``.

        With ``qe < 1`` the result counts detected photons (photo-electrons); divide by
        ``qe`` yourself for incident photons. Works on numpy arrays and torch tensors.
        """
        return (adu - self.offset) / self.gain

    def photons_to_adu(self, electrons):
        """Inverse of :meth:`adu_to_photons` (no noise)."""
        return electrons * self.gain + self.offset

    def expose(self, expected_photons: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a noisy ADU image from the expected incident photons per pixel.

        Poisson shot noise on ``qe * photons`` plus Gaussian read noise (eq. 3), then gain
        and offset. Returns float32 ADU of the same shape.
        """
        electrons = torch.poisson(self.qe * expected_photons.clamp_min(0), generator=generator)
        if self.read_noise > 0:
            noise = torch.randn(
                expected_photons.shape, generator=generator, dtype=expected_photons.dtype, device=expected_photons.device
            )
            electrons = electrons + self.read_noise * noise
        return self.photons_to_adu(electrons).to(torch.float32)

    def pixel_variance(self, expected_photons):
        """Variance of :meth:`adu_to_photons` of a pixel: ``qe * photons + read_noise^2``."""
        return self.qe * expected_photons + self.read_noise**2


FLAT_KEYS = {"pixel_size_nm": "pixel_size_nm", "camera_offset": "offset", "camera_gain": "gain",
             "read_noise": "read_noise"}
"""Flat config key -> :class:`Camera` field: the names of DeepSTORM's config and of the ``data:``
section of training configs written before it took a ``camera:`` block."""

PAPER_CAMERA = Camera()
"""The paper's camera: 108 nm pixels, offset 100 ADU, gain 1 ADU/e-, read noise 1.6 e- rms.
Defaults elsewhere in the package are taken from here."""


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
