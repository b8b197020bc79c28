"""PSF models: expected pixel fractions of a batch of emitters and their derivatives.

A :class:`PSF` maps emitter positions ``x_px, y_px`` (camera pixels, edge convention of
docs/conventions.md: x is the column, the image's outer top-left corner is (0, 0)) and, for a 3D PSF,
the axial position ``z_nm`` (nm from the focal plane of the calibration, positive away from
the objective as in the EPFL 2016 challenge) to the fraction of the emitter's photons that
each pixel receives. Both models here are separable (elliptical) Gaussians, so one
implementation serves them: a model only says its widths and centre offset at each z.

- :class:`GaussianPSF`: the isotropic, z-independent Gaussian of the paper (eq. 2).
- :class:`AstigmaticPSF`: the defocus model of Huang et al., Science 319:810 (2008),
  ``sigma(z) = sigma0 sqrt(1 + u^2 + A u^3 + B u^4)``, ``u = (z - c) / d``, per axis, plus a
  lateral offset of the spot centre with z ("wobble", a cubic in z per axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .gaussian import integrated_gaussian

DERIVATIVES = ("x", "y", "z")


class PSF:
    """Base class: pixel fractions ``[..., H, W]`` and their derivatives for emitters ``[...]``.

    Subclasses give :meth:`axes`: per-axis widths (pixels) and centre offsets (pixels) at ``z_nm``
    with their z-derivatives; ``ndim`` is 3 when the PSF depends on z.
    """

    ndim = 2
    kind = "base"

    def axes(self, z_nm: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sx, sy, ox, oy`` (pixels) and ``dsx, dsy, dox, doy`` (pixels per nm) at ``z_nm``."""
        raise NotImplementedError

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
        h, w = shape
        z = torch.zeros_like(x_px) if z_nm is None else torch.as_tensor(z_nm, dtype=x_px.dtype, device=x_px.device)
        a = self.axes(z)
        if not derivatives:
            ex = integrated_gaussian(x_px + a["ox"], w, a["sx"])
            ey = integrated_gaussian(y_px + a["oy"], h, a["sy"])
            return ey.unsqueeze(-1) * ex.unsqueeze(-2)
        ex, dex, sex = integrated_gaussian(x_px + a["ox"], w, a["sx"], True)
        ey, dey, sey = integrated_gaussian(y_px + a["oy"], h, a["sy"], True)
        frac = ey.unsqueeze(-1) * ex.unsqueeze(-2)
        dz_x = dex * a["dox"].unsqueeze(-1) + sex * a["dsx"].unsqueeze(-1)
        dz_y = dey * a["doy"].unsqueeze(-1) + sey * a["dsy"].unsqueeze(-1)
        grads = {"x": ey.unsqueeze(-1) * dex.unsqueeze(-2), "y": dey.unsqueeze(-1) * ex.unsqueeze(-2),
                 "z": dz_y.unsqueeze(-1) * ex.unsqueeze(-2) + ey.unsqueeze(-1) * dz_x.unsqueeze(-2)}
        return frac, grads

    def render(self, x_px, y_px, photons, shape: tuple[int, int], z_nm=None) -> torch.Tensor:
        """Expected signal photons [B, H, W] of emitters [B, E] (padding emitters: 0 photons)."""
        h, w = shape
        z = torch.zeros_like(x_px) if z_nm is None else z_nm
        a = self.axes(z)
        ex = integrated_gaussian(x_px + a["ox"], w, a["sx"])
        ey = integrated_gaussian(y_px + a["oy"], h, a["sy"])
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

    def to_dict(self) -> dict:
        out = {"type": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = [float(c) for c in v] if isinstance(v, (tuple, list)) else float(v)
        return out


@dataclass(frozen=True)
class GaussianPSF(PSF):
    """Isotropic pixel-integrated Gaussian of standard deviation ``sigma_px`` (camera pixels)."""

    sigma_px: float = 1.0
    kind = "gaussian"

    def __post_init__(self):
        if not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be > 0, got {self.sigma_px}")

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
class AstigmaticPSF(PSF):
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


_KINDS = {"gaussian": GaussianPSF, "astigmatic": AstigmaticPSF}


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


__all__ = ["PSF", "GaussianPSF", "AstigmaticPSF", "psf_from_dict", "DERIVATIVES"]
