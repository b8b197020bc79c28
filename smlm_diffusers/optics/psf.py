"""PSF models: expected pixel fractions of a batch of emitters and their derivatives.

A :class:`PSF` maps emitter positions ``x_px, y_px`` (camera pixels, edge convention of
docs/conventions.md: x is the column, the image's outer top-left corner is (0, 0)) and, for a 3D PSF,
the axial position ``z_nm`` (nm from the focal plane of the calibration, positive away from
the objective as in the EPFL 2016 challenge) to the fraction of the emitter's photons that
each pixel receives, and its derivatives: every simulation, bound and fit of the package evaluates
the PSF through this object. Both models here are separable (elliptical) Gaussians, so one
implementation serves them (:class:`SeparablePSF`: a model only says its widths and centre offset
at each z, and the 2D fit uses its 1D profiles); any other PSF subclasses :class:`PSF` and gives
:meth:`PSF.fractions` with derivatives.

- :class:`GaussianPSF`: the isotropic, z-independent Gaussian of the paper (eq. 2).
- :class:`AstigmaticPSF`: the defocus model of Huang et al., Science 319:810 (2008),
  ``sigma(z) = sigma0 sqrt(1 + u^2 + A u^3 + B u^4)``, ``u = (z - c) / d``, per axis, plus a
  lateral offset of the spot centre with z ("wobble", a cubic in z per axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from .gaussian import integrated_gaussian

DERIVATIVES = ("x", "y", "z")


class PSF:
    """Base class: the expected fraction of each emitter's photons per pixel, and its derivatives.

    A new PSF (a measured spline, a double helix, anything) subclasses this and gives
    :meth:`fractions` (with ``derivatives``: d/dx, d/dy and, for a 3D PSF, d/dz) and :attr:`sigma_px`, a
    representative width that sizes fit windows and cluster links; every simulation, bound and fit of the
    package then evaluates it. Register its ``kind`` with :func:`register_psf` so that ``optics.yaml``
    reads it. Separable PSFs (:class:`SeparablePSF`: an elliptical Gaussian per z) also give the 1D
    profiles (:meth:`profiles`), the fast path of the 2D frame fit.
    """

    ndim = 2
    kind = "base"
    separable = False

    def fractions(self, x_px, y_px, shape: tuple[int, int], z_nm=None, derivatives: bool = False):
        """Expected fraction of each emitter's photons per pixel.

        Parameters
        ----------
        x_px, y_px : tensors [...]
            Emitter columns and rows in pixels (edge convention), in the frame of ``shape``.
        shape : (H, W)
        z_nm : tensor [...], optional
            Axial positions (nm); ignored (taken as 0) by a 2D PSF.
        derivatives : bool
            Also return ``{"x": dF/dx (1/px), "y": dF/dy (1/px), "z": dF/dz (1/nm)}``.

        Returns
        -------
        tensor [..., H, W] (and the dict of derivatives, each [..., H, W]).
        """
        raise NotImplementedError

    def render(self, x_px, y_px, photons, shape: tuple[int, int], z_nm=None) -> torch.Tensor:
        """Expected signal photons [B, H, W] of emitters [B, E] (padding emitters: 0 photons)."""
        out = torch.zeros(x_px.shape[:-1] + tuple(shape), dtype=x_px.dtype, device=x_px.device)
        step = max(1, 2**22 // max(1, x_px[..., :1].numel() * shape[0] * shape[1]))  # bounded memory
        for s in range(0, x_px.shape[-1], step):
            sl = (..., slice(s, s + step))
            frac = self.fractions(x_px[sl], y_px[sl], shape, None if z_nm is None else z_nm[sl])
            out += torch.einsum("...e,...ehw->...hw", photons[sl], frac)
        return out

    @property
    def sigma_px(self) -> float:
        """A representative width (pixels): sizes fit windows (``ceil(3 sigma)``) and cluster links (``3 sigma``)."""
        raise NotImplementedError

    def pixel_variance(self) -> float:
        """Variance per axis (px^2, the mean of x and y) of the light of an in-focus emitter over pixels: the
        second moment a single emitter's light has (a pair's light has more)."""
        half = int(math.ceil(6.0 * self.sigma_px))
        side = 2 * half + 1
        c = torch.tensor([half + 0.5], dtype=torch.float64)
        frac = self.fractions(c, c, (side, side))[0]
        centres = torch.arange(side, dtype=torch.float64) + 0.5
        mass = frac.sum()
        mx, my = (frac.sum(0) * centres).sum() / mass, (frac.sum(1) * centres).sum() / mass
        vx = (frac.sum(0) * (centres - mx) ** 2).sum() / mass
        vy = (frac.sum(1) * (centres - my) ** 2).sum() / mass
        return float(0.5 * (vx + vy))

    def to_dict(self) -> dict:
        out = {"type": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [float(c) for c in v] if isinstance(v, (tuple, list)) else float(v)
        return out


class SeparablePSF(PSF):
    """An elliptical Gaussian at each z: pixel fractions are the product of a column and a row profile.

    Subclasses give :meth:`axes`: per-axis widths (pixels) and centre offsets (pixels) at ``z_nm`` with their
    z-derivatives.
    """

    separable = True

    def axes(self, z_nm: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sx, sy, ox, oy`` (pixels) and ``dsx, dsy, dox, doy`` (pixels per nm) at ``z_nm``."""
        raise NotImplementedError

    def profiles(self, x_px, y_px, shape: tuple[int, int], z_nm=None, derivatives: bool = False):
        """The column and row profiles ``ex`` [..., W], ``ey`` [..., H] whose outer product is :meth:`fractions`;
        with ``derivatives`` ``(ex, dex/dx), (ey, dey/dy)`` (1/px)."""
        h, w = shape
        z = torch.zeros_like(x_px) if z_nm is None else torch.as_tensor(z_nm, dtype=x_px.dtype, device=x_px.device)
        a = self.axes(z)
        if not derivatives:
            return integrated_gaussian(x_px + a["ox"], w, a["sx"]), integrated_gaussian(y_px + a["oy"], h, a["sy"])
        ex, dex, _ = integrated_gaussian(x_px + a["ox"], w, a["sx"], True)
        ey, dey, _ = integrated_gaussian(y_px + a["oy"], h, a["sy"], True)
        return (ex, dex), (ey, dey)

    def fractions(self, x_px, y_px, shape: tuple[int, int], z_nm=None, derivatives: bool = False):
        h, w = shape
        if not derivatives:
            ex, ey = self.profiles(x_px, y_px, shape, z_nm)
            return ey.unsqueeze(-1) * ex.unsqueeze(-2)
        z = torch.zeros_like(x_px) if z_nm is None else torch.as_tensor(z_nm, dtype=x_px.dtype, device=x_px.device)
        a = self.axes(z)
        ex, dex, sex = integrated_gaussian(x_px + a["ox"], w, a["sx"], True)
        ey, dey, sey = integrated_gaussian(y_px + a["oy"], h, a["sy"], True)
        frac = ey.unsqueeze(-1) * ex.unsqueeze(-2)
        dz_x = dex * a["dox"].unsqueeze(-1) + sex * a["dsx"].unsqueeze(-1)
        dz_y = dey * a["doy"].unsqueeze(-1) + sey * a["dsy"].unsqueeze(-1)
        grads = {"x": ey.unsqueeze(-1) * dex.unsqueeze(-2), "y": dey.unsqueeze(-1) * ex.unsqueeze(-2),
                 "z": dz_y.unsqueeze(-1) * ex.unsqueeze(-2) + ey.unsqueeze(-1) * dz_x.unsqueeze(-2)}
        return frac, grads

    def render(self, x_px, y_px, photons, shape: tuple[int, int], z_nm=None) -> torch.Tensor:
        ex, ey = self.profiles(x_px, y_px, shape, z_nm)
        return torch.einsum("beh,bew->bhw", ey * photons.unsqueeze(-1), ex)

    def widths(self, z_nm):
        """(sigma_x, sigma_y) in pixels at ``z_nm`` (float tensors)."""
        a = self.axes(torch.as_tensor(z_nm, dtype=torch.float64))
        return a["sx"], a["sy"]

    @property
    def sigma_px(self) -> float:
        """A representative width (pixels): the in-focus mean of sigma_x and sigma_y."""
        sx, sy = self.widths(0.0)
        return float(0.5 * (sx + sy))

    def pixel_variance(self) -> float:
        sx, sy = (float(v) for v in self.widths(0.0))
        return 0.5 * (sx * sx + sy * sy) + 1.0 / 12.0  # a Gaussian's variance plus a pixel's (uniform)


@dataclass(frozen=True)
class GaussianPSF(SeparablePSF):
    """Isotropic pixel-integrated Gaussian of standard deviation ``sigma_px`` (camera pixels)."""

    sigma_px: float = 1.0
    kind = "gaussian"

    def __post_init__(self):
        if not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be > 0, got {self.sigma_px}")

    def profiles(self, x_px, y_px, shape: tuple[int, int], z_nm=None, derivatives: bool = False):
        h, w = shape  # one width for every emitter: a float sigma, the fast path
        if not derivatives:
            return integrated_gaussian(x_px, w, self.sigma_px), integrated_gaussian(y_px, h, self.sigma_px)
        ex, dex, _ = integrated_gaussian(x_px, w, self.sigma_px, True)
        ey, dey, _ = integrated_gaussian(y_px, h, self.sigma_px, True)
        return (ex, dex), (ey, dey)

    def pixel_variance(self) -> float:
        return self.sigma_px**2 + 1.0 / 12.0

    def axes(self, z_nm):
        s = torch.full_like(z_nm, float(self.sigma_px))
        zero = torch.zeros_like(z_nm)
        return dict(sx=s, sy=s, ox=zero, oy=zero, dsx=zero, dsy=zero, dox=zero, doy=zero)


def _huang(z, s0, c, d, a, b):
    """Huang et al. 2008 width and its z-derivative: s0 sqrt(1 + u^2 + a u^3 + b u^4), u = (z - c)/d."""
    u = (z - c) / d
    q = (1.0 + u * u + a * u**3 + b * u**4).clamp_min(1e-4)
    s = s0 * torch.sqrt(q)
    dq = (2.0 * u + 3.0 * a * u * u + 4.0 * b * u**3) / d
    return s, s0 * 0.5 * dq / torch.sqrt(q)


def _poly(z, coeffs):
    """sum_k c_k (z / 1000)^k (z in nm, so the coefficients are pixels per um^k) and its d/dz."""
    t = z / 1000.0
    val, der = torch.zeros_like(z), torch.zeros_like(z)
    for k, c in enumerate(coeffs):
        val = val + float(c) * t**k
        if k:
            der = der + float(c) * k * t ** (k - 1) / 1000.0
    return val, der


@dataclass(frozen=True)
class AstigmaticPSF(SeparablePSF):
    """Astigmatic 3D PSF: an elliptical Gaussian whose widths follow Huang et al. (2008).

    Parameters
    ----------
    sigma0_x_px, sigma0_y_px : float
        Widths at each axis's own focus, camera pixels.
    focus_x_nm, focus_y_nm : float
        z of each axis's focus (c_x, c_y), nm; with astigmatism they lie on either side of 0.
    depth_x_nm, depth_y_nm : float
        Depth of focus d, nm: the width grows by sqrt(2) at ``z = c +- d``.
    a_x, b_x, a_y, b_y : float
        Third- and fourth-order terms A, B of the defocus curves.
    wobble_x_px, wobble_y_px : tuple of float
        Offset of the spot centre from the emitter (pixels) as a polynomial in z / 1 um,
        constant term first: the PSF of an emitter at x is centred at ``x + wobble_x(z)``.
    z_range_nm : (low, high)
        The calibrated range of z; fits are kept inside it.
    """

    sigma0_x_px: float = 1.2
    sigma0_y_px: float = 1.2
    focus_x_nm: float = -250.0
    focus_y_nm: float = 250.0
    depth_x_nm: float = 400.0
    depth_y_nm: float = 400.0
    a_x: float = 0.0
    b_x: float = 0.0
    a_y: float = 0.0
    b_y: float = 0.0
    wobble_x_px: tuple = field(default=(0.0,))
    wobble_y_px: tuple = field(default=(0.0,))
    z_range_nm: tuple = field(default=(-750.0, 750.0))
    kind = "astigmatic"
    ndim = 3

    def __post_init__(self):
        for name in ("sigma0_x_px", "sigma0_y_px", "depth_x_nm", "depth_y_nm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("wobble_x_px", "wobble_y_px", "z_range_nm"):
            object.__setattr__(self, name, tuple(float(c) for c in getattr(self, name)))

    def axes(self, z_nm):
        sx, dsx = _huang(z_nm, self.sigma0_x_px, self.focus_x_nm, self.depth_x_nm, self.a_x, self.b_x)
        sy, dsy = _huang(z_nm, self.sigma0_y_px, self.focus_y_nm, self.depth_y_nm, self.a_y, self.b_y)
        ox, dox = _poly(z_nm, self.wobble_x_px)
        oy, doy = _poly(z_nm, self.wobble_y_px)
        return dict(sx=sx, sy=sy, ox=ox, oy=oy, dsx=dsx, dsy=dsy, dox=dox, doy=doy)


_KINDS: dict[str, type] = {}


def register_psf(cls):
    """Register a PSF class (a dataclass with a ``kind``) for :func:`psf_from_dict` and ``optics.yaml``; a
    class decorator."""
    _KINDS[cls.kind] = cls
    return cls


register_psf(GaussianPSF)
register_psf(AstigmaticPSF)


def as_psf(psf) -> PSF:
    """``psf`` itself, or the :class:`GaussianPSF` of a float sigma (pixels): the callers that pass ``sigma_px``."""
    if isinstance(psf, PSF):
        return psf
    return GaussianPSF(float(psf))


def psf_from_dict(values: dict) -> PSF:
    """A PSF from :meth:`PSF.to_dict`'s output (``type`` picks the model; unknown keys raise)."""
    values = dict(values)
    kind = values.pop("type", "gaussian")
    if kind not in _KINDS:
        raise ValueError(f"unknown PSF type {kind!r}; known: {sorted(_KINDS)}")
    cls = _KINDS[kind]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {kind} PSF keys {unknown}; it has {sorted(names)}")
    return cls(**{k: (tuple(v) if isinstance(v, (list, tuple)) else float(v)) for k, v in values.items()})


__all__ = ["PSF", "SeparablePSF", "GaussianPSF", "AstigmaticPSF", "as_psf", "psf_from_dict", "register_psf",
           "DERIVATIVES"]
