"""Camera model: photons <-> photo-electrons <-> ADU (paper eqs. 3-6).

A pixel k records ``ADU_k = g_k * (Poisson(qe * photons_k) + Normal(0, sigma_k^2 / g_k^2)) + o_k``: offset
``o_k`` (ADU), gain ``g_k`` (ADU per photo-electron) and read-noise variance ``sigma_k^2`` (ADU^2), the
paper's eq. 4. A CCD or EMCCD has one offset, gain and read noise for every pixel (the scalar fields); an
sCMOS camera has its own per pixel (:class:`CameraMaps`, measured from dark and flat series).
Everything upstream of the camera works in photons; ADU only appears at this boundary.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, fields

import numpy as np
import torch

from .camera_maps import MAP_KEYS, MAP_NAMES, CameraMaps  # noqa: F401 (MAP_KEYS: the camera block's map keys)

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
    maps : CameraMaps, optional
        Per-pixel offset (ADU), read-noise variance (ADU^2) and gain (ADU/e-) of an sCMOS camera, [H, W] in
        the frames' rows and columns (:meth:`with_maps`). Where a map is given, its scalar field holds its
        summary (the median offset or gain; read noise ``sqrt(median variance) / gain``: the uniform camera of
        :meth:`uniform`), and every per-pixel computation (:meth:`adu_to_photons`, :meth:`read_variance`,
        :meth:`expose`) uses the map. Frames must then have the maps' shape (:meth:`check_shape`); a tile or a
        spot window gets its part with :meth:`crop`.
    """

    # the paper's camera (docs/conventions.md, default optics): the one place these numbers are written
    pixel_size_nm: float = 108.0
    offset: float = 100.0
    gain: float = 1.0
    read_noise: float = 1.6
    qe: float = 1.0
    maps: InitVar[CameraMaps | None] = None

    def __post_init__(self, maps):
        # an init-only value, not a field: asdict() and configs that list the fields see only the scalars
        object.__setattr__(self, "maps", maps)
        if maps is not None:
            if not isinstance(maps, CameraMaps):
                raise TypeError(f"maps must be a CameraMaps, got {type(maps).__name__}")
            if maps.offset is not None:
                object.__setattr__(self, "offset", float(np.median(maps.offset)))
            if maps.gain is not None:
                object.__setattr__(self, "gain", float(np.median(maps.gain)))
            if maps.variance is not None:
                object.__setattr__(self, "read_noise", math.sqrt(float(np.median(maps.variance))) / self.gain)
        if self.pixel_size_nm <= 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        if self.gain <= 0:
            raise ValueError(f"gain must be > 0 ADU/e-, got {self.gain}")
        if self.read_noise < 0:
            raise ValueError(f"read_noise must be >= 0 e- rms, got {self.read_noise}")
        if not 0 < self.qe <= 1:
            raise ValueError(f"qe must be in (0, 1], got {self.qe}")

    def __repr__(self) -> str:
        scalars = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Camera({scalars}{'' if self.maps is None else f', maps={self.maps!r}'})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))
                and self.maps == other.maps)

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

    # -- per-pixel calibration --------------------------------------------------------------------------------
    @property
    def has_maps(self) -> bool:
        return self.maps is not None

    def with_maps(self, offset=None, variance=None, gain=None, base_dir=None) -> Camera:
        """This camera with per-pixel maps (arrays [H, W] or TIFF paths; :class:`CameraMaps`): offset in ADU,
        read-noise variance in ADU^2, gain in ADU per photo-electron. Maps not given keep this camera's maps of
        that kind, if any, else its scalar."""
        new = CameraMaps.read(offset, variance, gain, base_dir)
        if self.maps is not None:
            keep = {n: getattr(self.maps, n) for n in MAP_NAMES if getattr(new, n) is None}
            if any(v is not None for v in keep.values()):
                sources = {n: s for n, s in self.maps.sources.items() if n in keep} | new.sources
                new = CameraMaps(**{n: getattr(new, n) if getattr(new, n) is not None else keep[n]
                                    for n in MAP_NAMES}, sources=sources)
        return Camera(self.pixel_size_nm, self.offset, self.gain, self.read_noise, self.qe, maps=new)

    def uniform(self) -> Camera:
        """The camera without its maps: one offset, gain and read noise for all pixels (their summaries)."""
        return Camera(self.pixel_size_nm, self.offset, self.gain, self.read_noise, self.qe)

    def check_shape(self, shape, what: str = "the frames") -> None:
        """ValueError naming both shapes when per-pixel maps do not have the frames' rows and columns
        (``shape``: [..., H, W])."""
        if self.maps is None:
            return
        h, w = (int(s) for s in tuple(shape)[-2:])
        mh, mw = self.maps.shape
        if (h, w) != (mh, mw):
            hint = " (transposed? the maps must be in the frames' row, column order)" if (w, h) == (mh, mw) else ""
            raise ValueError(f"the camera maps are {mh} x {mw} pixels (rows x columns) but {what} are {h} x {w}"
                             f"{hint}: give maps of the frames' region, or crop them with Camera.crop")

    def crop(self, r0: int, c0: int, h: int, w: int) -> Camera:
        """The camera of rows ``[r0, r0 + h)`` and columns ``[c0, c0 + w)`` of its frames (a tile, a window):
        its maps cut to that region (a camera without maps is returned as it is)."""
        if self.maps is None:
            return self
        return Camera(self.pixel_size_nm, self.offset, self.gain, self.read_noise, self.qe,
                      maps=self.maps.crop(r0, c0, h, w))

    def _per_pixel(self, name: str, like=None):
        """A map (float64 numpy, or a tensor of ``like``'s dtype and device) or None."""
        arr = None if self.maps is None else getattr(self.maps, name)
        if arr is None or not isinstance(like, torch.Tensor):
            return arr
        return self.maps.tensor(name, like.dtype if like.is_floating_point() else torch.float32, like.device)

    def offset_map(self, like=None):
        """Offset per pixel (ADU): the map, else the scalar. ``like`` (a tensor) sets a map's type and device."""
        o = self._per_pixel("offset", like)
        return self.offset if o is None else o

    def gain_map(self, like=None):
        """Gain per pixel (ADU/e-): the map, else the scalar."""
        g = self._per_pixel("gain", like)
        return self.gain if g is None else g

    def read_variance(self, like=None):
        """Read-noise variance per pixel in photo-electrons^2, ``sigma_k^2 / g_k^2`` (the Poisson-normal shift of
        eq. 6): a map [H, W] where the camera has a variance map (numpy, or a tensor like ``like``), else the
        float ``read_noise**2``."""
        v = self._per_pixel("variance", like)
        if v is None:
            return self.read_noise**2
        g = self._per_pixel("gain", like)
        return v / (self.gain**2 if g is None else g * g)

    def _checked(self, data):
        if self.maps is not None:
            self.check_shape(np.shape(data) if not isinstance(data, torch.Tensor) else data.shape)
        return data

    # -- conversions and noise -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The camera as a plain dict of floats (a config's camera block); :meth:`from_dict` inverts it.

        Maps are not inlined: ``offset_map``, ``variance_map`` and ``gain_map`` name the file each was read
        from, or (a map held in memory) its digest, which :meth:`from_dict` cannot read back."""
        out = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        if self.maps is not None:
            out |= {f"{n}_map": self.maps.reference(n) for n in MAP_NAMES if getattr(self.maps, n) is not None}
        return out

    @classmethod
    def from_dict(cls, values: dict, base_dir=None) -> Camera:
        """A camera from a dict such as :meth:`to_dict` writes; missing keys take the defaults.

        ``offset_map``, ``variance_map``, ``gain_map``: a TIFF path (relative to ``base_dir``) or an array held
        in memory. Unknown keys raise ``ValueError`` (a typo such as ``"readnoise"`` must not pass silently).
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names) - set(MAP_KEYS))
        if unknown:
            raise ValueError(f"unknown camera keys {unknown}; a camera has {names + list(MAP_KEYS)}")
        camera = cls(**{k: float(v) for k, v in values.items() if k in names})
        given = {MAP_KEYS[k]: v for k, v in values.items() if k in MAP_KEYS and v is not None}
        for name, value in given.items():
            if isinstance(value, str) and value.startswith("sha1:"):
                raise ValueError(f"'{name}_map: {value}' names a map that was held in memory; save it as a TIFF "
                                 "and give its path")
        return camera.with_maps(**given, base_dir=base_dir) if given else camera

    def differences(self, other: Camera, names=None, rel_tol: float = 1e-6,
                    abs_tol: float = 1e-9) -> dict[str, tuple[float, float]]:
        """Fields (all, or those in ``names``) where the cameras differ beyond the float
        tolerance (:func:`math.isclose`): name -> (this camera's value, the other's). With all fields, maps
        that differ are ``"maps"``: (this camera's map references, the other's)."""
        all_names = names is None
        names = [f.name for f in fields(self)] if names is None else list(names)
        out = {n: (getattr(self, n), getattr(other, n)) for n in names
               if not math.isclose(getattr(self, n), getattr(other, n), rel_tol=rel_tol, abs_tol=abs_tol)}
        if all_names and self.maps != other.maps:
            refs = lambda c: None if c.maps is None else {n: c.maps.reference(n) for n in MAP_NAMES  # noqa: E731
                                                          if getattr(c.maps, n) is not None}
            out["maps"] = (refs(self), refs(other))
        return out

    def isclose(self, other: Camera, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
        """Whether every field agrees with ``other``'s within the float tolerance (and the maps are equal)."""
        return not self.differences(other, rel_tol=rel_tol, abs_tol=abs_tol)

    def adu_to_photons(self, adu):
        """Convert ADU to detected photo-electrons, ``(ADU - offset) / gain`` (per pixel with maps).

        With ``qe < 1`` the result counts detected photons (photo-electrons); divide by
        ``qe`` yourself for incident photons. Works on numpy arrays and torch tensors.
        """
        if self.maps is None:
            return (adu - self.offset) / self.gain
        self._checked(adu)
        return (adu - self.offset_map(adu)) / self.gain_map(adu)

    def shifted_electrons(self, adu):
        """The Poisson-normal data of eq. 6, ``d'_k = (ADU_k - o_k) / g_k + sigma_k^2 / g_k^2`` (photo-electrons,
        not clamped): Poisson with mean ``mu_k + sigma_k^2 / g_k^2`` to a good approximation."""
        return self.adu_to_photons(adu) + self.read_variance(adu)

    def photons_to_adu(self, electrons):
        """Inverse of :meth:`adu_to_photons` (no noise)."""
        if self.maps is None:
            return electrons * self.gain + self.offset
        self._checked(electrons)
        return electrons * self.gain_map(electrons) + self.offset_map(electrons)

    def expose(self, expected_photons: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw a noisy ADU image from the expected incident photons per pixel.

        Poisson shot noise on ``qe * photons`` plus Gaussian read noise (eq. 3; each pixel's own with maps),
        then gain and offset (eq. 4). Returns float32 ADU of the same shape.
        """
        electrons = torch.poisson(self.qe * expected_photons.clamp_min(0), generator=generator)
        per_pixel = self.maps is not None and self.maps.variance is not None
        if per_pixel or self.read_noise > 0:
            noise = torch.randn(
                expected_photons.shape, generator=generator, dtype=expected_photons.dtype, device=expected_photons.device
            )
            sd = self._checked(self.read_variance(expected_photons)).sqrt() if per_pixel else self.read_noise
            electrons = electrons + sd * noise
        return self.photons_to_adu(electrons).to(torch.float32)

    def pixel_variance(self, expected_photons):
        """Variance of :meth:`adu_to_photons` of a pixel: ``qe * photons + read_noise^2`` (per pixel with maps)."""
        return self.qe * expected_photons + self.read_variance(expected_photons)


FLAT_KEYS = {"pixel_size_nm": "pixel_size_nm", "camera_offset": "offset", "camera_gain": "gain",
             "read_noise": "read_noise"}
"""Flat config key -> :class:`Camera` field: the names of DeepSTORM's config and of the ``data:``
section of training configs written before it took a ``camera:`` block."""

PAPER_CAMERA = Camera()
"""The paper's camera: 108 nm pixels, offset 100 ADU, gain 1 ADU/e-, read noise 1.6 e- rms.
Defaults elsewhere in the package are taken from here."""


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
