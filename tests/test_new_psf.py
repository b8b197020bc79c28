"""A new PSF touches one class and its registration: simulation, bound and frame fit pick it up.

The PSF below is defined here and nowhere in the package: a double Gaussian (a core and a wide halo of
another width, as a real objective's PSF has), which is not separable (not one column profile times one row
profile), so every fit and bound must take the general path of :meth:`PSF.fractions`. Registering it is the
only other step (``register_psf``: ``optics.yaml`` reads it back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb, crlb_configuration
from smlm_diffusers.localization.refine import refine_frames
from smlm_diffusers.optics import PSF, GaussianPSF, Optics, integrated_gaussian, psf_from_dict, register_psf

torch.set_num_threads(1)


@register_psf
@dataclass(frozen=True)
class DoubleGaussianPSF(PSF):
    """``(1 - halo) G(sigma_core) + halo G(sigma_halo)``, each an isotropic pixel-integrated Gaussian."""

    sigma_core_px: float = 1.0
    sigma_halo_px: float = 2.2
    halo: float = 0.3
    kind = "double_gaussian"

    @property
    def sigma_px(self) -> float:  # the rms width
        return math.sqrt((1.0 - self.halo) * self.sigma_core_px**2 + self.halo * self.sigma_halo_px**2)

    def fractions(self, x_px, y_px, shape, z_nm=None, derivatives=False):
        h, w = shape
        out = [0.0, 0.0, 0.0]
        for weight, s in ((1.0 - self.halo, self.sigma_core_px), (self.halo, self.sigma_halo_px)):
            ex, dex, _ = integrated_gaussian(x_px, w, s, True)
            ey, dey, _ = integrated_gaussian(y_px, h, s, True)
            out[0] = out[0] + weight * ey.unsqueeze(-1) * ex.unsqueeze(-2)
            out[1] = out[1] + weight * ey.unsqueeze(-1) * dex.unsqueeze(-2)
            out[2] = out[2] + weight * dey.unsqueeze(-1) * ex.unsqueeze(-2)
        if not derivatives:
            return out[0]
        return out[0], {"x": out[1], "y": out[2], "z": torch.zeros_like(out[0])}


@dataclass(frozen=True)
class GeneralGaussian(PSF):
    """The Gaussian through the general path (not flagged separable): the fast path's reference."""

    sigma: float = 1.0

    @property
    def sigma_px(self) -> float:
        return self.sigma

    def fractions(self, x_px, y_px, shape, z_nm=None, derivatives=False):
        return GaussianPSF(self.sigma).fractions(x_px, y_px, shape, z_nm, derivatives)


PSF_UNDER_TEST = DoubleGaussianPSF()


def test_the_psf_is_normalised_and_its_derivatives_are_right():
    x = torch.tensor([10.3, 9.71], dtype=torch.float64)
    y = torch.tensor([10.6, 10.05], dtype=torch.float64)
    frac, d = PSF_UNDER_TEST.fractions(x, y, (21, 21), derivatives=True)
    assert torch.allclose(frac.sum((-2, -1)), torch.ones(2, dtype=torch.float64), atol=1e-6)
    eps = 1e-6
    f = lambda u, v: PSF_UNDER_TEST.fractions(u, v, (21, 21))  # noqa: E731
    num_x, num_y = (f(x + eps, y) - f(x - eps, y)) / (2 * eps), (f(x, y + eps) - f(x, y - eps)) / (2 * eps)
    assert torch.allclose(num_x, d["x"], atol=1e-8) and torch.allclose(num_y, d["y"], atol=1e-8)
    assert not PSF_UNDER_TEST.separable


def test_registration_makes_optics_yaml_read_it():
    optics = Optics(sd.Camera(), PSF_UNDER_TEST)
    back = Optics.from_dict(optics.to_dict())
    assert back.psf == PSF_UNDER_TEST
    assert psf_from_dict({"type": "double_gaussian", "halo": 0.2}).halo == 0.2


def test_bounds_of_the_new_psf():
    """fisher's isolated bound and the multi-emitter bound of one far emitter agree; the halo costs precision."""
    cx, cy = crlb(2000.0, 10.0, PSF_UNDER_TEST, roi_size=25, x_px=12.3, y_px=12.6)
    mx, my = crlb_configuration([20.3], [20.6], [2000.0], 10.0, (41, 41), PSF_UNDER_TEST,
                                sd.Camera(read_noise=sd.Camera().read_noise))
    assert mx[0] == pytest.approx(cx, rel=0.01) and my[0] == pytest.approx(cy, rel=0.01)
    gx, _ = crlb(2000.0, 10.0, 1.0, roi_size=25, x_px=12.3, y_px=12.6)
    assert cx > 1.2 * gx


def test_general_path_equals_the_separable_fast_path():
    """The frame fit through PSF.fractions (the path of any new PSF) gives the Gaussian fast path's result."""
    frames, gt = sd.simulate(2, (32, 32), density=6.0, photons=2000.0, background=15.0, seed=5)
    fast = refine_frames(frames, gt[["frame", "x_nm", "y_nm"]], sd.Camera(), GaussianPSF(1.0), dtype=torch.float64)
    general = refine_frames(frames, gt[["frame", "x_nm", "y_nm"]], sd.Camera(), GeneralGaussian(1.0),
                            dtype=torch.float64)
    floats = refine_frames(frames, gt[["frame", "x_nm", "y_nm"]], sd.Camera(), 1.0, dtype=torch.float64)
    assert len(fast) == len(general) == len(floats)
    for c in ("x_nm", "y_nm", "photons", "crlb_x_nm"):
        assert np.array_equal(fast[c].to_numpy(), floats[c].to_numpy())
        np.testing.assert_allclose(general[c].to_numpy(), fast[c].to_numpy(), rtol=1e-6, atol=1e-6)


def test_frame_fit_of_the_new_psf_reaches_its_crlb():
    """Monte Carlo: isolated emitters simulated with the new PSF, fitted by refine_frames with it; the error
    variance matches the fit's own CRLB (and the fisher module's at the same window) within about 10%."""
    camera = sd.Camera()
    frames, gt = sd.simulate(40, (48, 48), structure="grid", spacing_px=12.0, jitter_px=2.0, photons=2000.0,
                             background=10.0, seed=11, psf=PSF_UNDER_TEST, camera=camera)
    rng = np.random.default_rng(0)
    seeds = gt[["frame", "x_nm", "y_nm"]].copy()
    seeds[["x_nm", "y_nm"]] += rng.normal(0.0, 15.0, (len(seeds), 2))
    fit = refine_frames(frames, seeds, camera, PSF_UNDER_TEST, split=False, dtype=torch.float64)
    assert len(fit) == len(gt) and fit["refine_ok"].mean() > 0.97
    ok = fit["refine_ok"].to_numpy()
    err2 = ((fit["x_nm"] - gt["x_nm"].to_numpy()) ** 2 + (fit["y_nm"] - gt["y_nm"].to_numpy()) ** 2).to_numpy()[ok]
    bound2 = (fit["crlb_x_nm"] ** 2 + fit["crlb_y_nm"] ** 2).to_numpy()[ok]
    ratio = err2.mean() / bound2.mean()
    assert 0.85 < ratio < 1.15, ratio
    # the fit's bound is fisher's bound of its window (9 x 9 here: 4 px beyond the emitter's pixel)
    a = camera.pixel_size_nm
    x, y = gt["x_nm"].to_numpy() / a, gt["y_nm"].to_numpy() / a
    bx, by = crlb(gt["photons"].to_numpy(), 10.0, PSF_UNDER_TEST, camera=camera, roi_size=9,
                  x_px=4 + np.mod(x, 1.0), y_px=4 + np.mod(y, 1.0))
    assert bound2.mean() == pytest.approx((bx + by)[ok].mean(), rel=0.05)


def test_arbitration_through_the_general_path():
    """Configurations, their evidence and the split seeds evaluate the PSF object: the Gaussian through the
    general path weighs as the fast path does, and the new PSF runs the arbitration on its own frames."""
    from smlm_diffusers.localization.configurations import arbitrate

    empty = pd.DataFrame({"frame": np.zeros(0, int), "sample": np.zeros(0, int), "x_nm": np.zeros(0),
                          "y_nm": np.zeros(0)})
    frames, gt = sd.simulate(2, (32, 32), density=8.0, photons=2000.0, background=15.0, seed=7)
    seeds = gt[["frame", "x_nm", "y_nm"]]
    fits = {}
    for name, psf in (("float", 1.0), ("fast", GaussianPSF(1.0)), ("general", GeneralGaussian(1.0))):
        base = refine_frames(frames, seeds, sd.Camera(), psf, write_sigma=True, dtype=torch.float64)
        fits[name] = arbitrate(frames, base, empty, 0, sd.Camera(), psf)
    # to the fits' convergence tolerance (5e-3 px: a rounding difference can stop an iteration earlier)
    for c, atol in (("x_nm", 1.0), ("y_nm", 1.0), ("probability", 1e-3), ("sigma_x_nm", 0.05)):
        assert np.array_equal(fits["float"][c].to_numpy(), fits["fast"][c].to_numpy())
        np.testing.assert_allclose(fits["general"][c].to_numpy(), fits["fast"][c].to_numpy(), rtol=1e-3, atol=atol)
    frames, gt = sd.simulate(2, (32, 32), density=6.0, photons=2000.0, background=10.0, seed=8, psf=PSF_UNDER_TEST)
    base = refine_frames(frames, gt[["frame", "x_nm", "y_nm"]], sd.Camera(), PSF_UNDER_TEST, write_sigma=True,
                         dtype=torch.float64)
    out = arbitrate(frames, base, empty, 0, sd.Camera(), PSF_UNDER_TEST)
    assert len(out) >= 0.9 * len(gt) and np.isfinite(out[["x_nm", "y_nm", "sigma_x_nm"]].to_numpy()).all()
    assert out["probability"].between(0.0, 1.0).all()
