"""Optics: the camera and the PSF (Gaussian 2D, astigmatic 3D) as one value, used by the physics."""

from .gaussian import integrated_gaussian, integrated_gaussian_np
from .optics import Optics
from .psf import PSF, AstigmaticPSF, GaussianPSF, SeparablePSF, as_psf, psf_from_dict, register_psf

__all__ = ["PSF", "AstigmaticPSF", "GaussianPSF", "Optics", "SeparablePSF", "as_psf", "integrated_gaussian",
           "integrated_gaussian_np", "psf_from_dict", "register_psf"]
