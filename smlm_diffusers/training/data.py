"""On-the-fly training data: simulated frames and their true KDEs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..kde import KDEScaling, render_kde
from ..simulation import PAPER_CAMERA, Camera, FrameSimulator, sample_uniform, simulate
from ..simulation.emitters import Emitters
from ..simulation.camera import FLAT_KEYS
from .hard import HardClusters, merge_emitters, sample_clusters


@dataclass
class SimulationRanges:
    """What the training simulator draws from (docs/conventions.md training ranges by default).

    Ranges are ``[low, high]`` drawn uniformly: density per frame (emitters per square
    micrometre), photons per emitter, background per frame (photons per pixel). The camera is
    one block (``camera: {pixel_size_nm: 108.0, offset: 100.0, gain: 1.0, read_noise: 1.6}``);
    a config written before it, with the flat keys ``pixel_size_nm``, ``camera_offset``,
    ``camera_gain``, ``read_noise``, still loads (:meth:`upgrade_config`), and those names stay
    as read-only properties.
    """

    patch_size: int = 32
    margin_px: float = 3.0
    density: tuple[float, float] = (0.05, 5.0)
    photons: tuple[float, float] = (200.0, 6000.0)
    background: tuple[float, float] = (5.0, 60.0)
    background_variation: float = 0.3
    sigma_px: float | tuple[float, float] = 1.0
    camera: Camera = field(default_factory=lambda: PAPER_CAMERA)
    upsampling: int = 4
    kde_sigma: float = 1.0
    psf: dict | str | None = None  # an optics.yaml psf block, or the path of an optics.yaml: a 3D PSF adds the z channel
    z_nm: tuple[float, float] = (-750.0, 750.0)  # z drawn uniformly, nm (3D PSF only)
    hard: HardClusters = field(default_factory=HardClusters)  # close pairs, faint neighbours, triplets (default off)

    @property
    def nominal_sigma_px(self) -> float:
        """The PSF sigma that separations in sigmas refer to (the middle of a drawn range)."""
        return float(np.mean(self.sigma_px)) if isinstance(self.sigma_px, (tuple, list)) else float(self.sigma_px)

    @property
    def psf_model(self):
        """The :class:`~smlm_diffusers.optics.PSF` of ``psf`` (None: the Gaussian of ``sigma_px``)."""
        from ..optics import Optics
        from ..optics.psf import psf_from_dict

        if self.psf is None:
            return None
        return Optics.from_yaml(self.psf).psf if isinstance(self.psf, str) else psf_from_dict(dict(self.psf))

    @property
    def z_scale_nm(self) -> float | None:
        """The z channel's unit (nm per unit), ``max |z_nm|``; None for a 2D PSF."""
        psf = self.psf_model
        return None if psf is None or psf.ndim != 3 else float(max(abs(v) for v in self.z_nm))

    @classmethod
    def upgrade_config(cls, data: dict, where: str = "data") -> dict:
        """A ``data:`` mapping with the old flat camera keys -> the same with a ``camera:`` block
        (what :func:`~smlm_diffusers.training.config.load_config` reads); both at once is an error."""
        flat = [k for k in FLAT_KEYS if k in data]
        if not flat:
            return data
        if "camera" in data:
            raise ValueError(f"{where}: give the camera either as one camera: block or as the old flat keys "
                             f"{flat}, not both (move them into camera: as "
                             f"{', '.join(FLAT_KEYS[k] for k in flat)})")
        rest = {k: v for k, v in data.items() if k not in FLAT_KEYS}
        return rest | {"camera": {FLAT_KEYS[k]: data[k] for k in flat}}

    # the flat names of configs written before the camera block, read-only
    @property
    def pixel_size_nm(self) -> float:
        return self.camera.pixel_size_nm

    @property
    def camera_offset(self) -> float:
        return self.camera.offset

    @property
    def camera_gain(self) -> float:
        return self.camera.gain

    @property
    def read_noise(self) -> float:
        return self.camera.read_noise


@dataclass
class TrainingBatch:
    frames_adu: torch.Tensor  # [B, H, W]
    kde_unit: torch.Tensor  # [B, C, uH, uW] in the networks' [-1, 1] scale; C = 2 with a 3D PSF (z channel)


def make_training_batch(
    ranges: SimulationRanges, batch_size: int, generator: torch.Generator, device="cpu"
) -> TrainingBatch:
    """Simulate a batch of square patches and render their true KDEs.

    Emitters are also drawn ``margin_px`` outside the patch so that the network learns
    what light entering from outside looks like; their KDE mass outside the patch is cut.
    With ``ranges.hard.fraction > 0`` a share of the patches also holds clusters of 2-3 close
    emitters (:mod:`.hard`), drawn after the uniform ones and imaged the same way.
    With a 3D PSF (``ranges.psf``) each emitter's z is drawn from ``ranges.z_nm`` and a second
    channel holds the KDE weighted by ``z / z_scale_nm`` over the density's peak
    (:func:`z_channel`): at a molecule, its window sum over the density's is its z in those units.
    """
    shape = (ranges.patch_size, ranges.patch_size)
    sim = FrameSimulator(shape, ranges.camera, _tuple(ranges.sigma_px), _tuple(ranges.background),
                         ranges.background_variation, ranges.psf_model, _tuple(ranges.z_nm))
    em = sample_uniform(batch_size, shape, _tuple(ranges.density), ranges.camera.pixel_size_nm,
                        _tuple(ranges.photons), ranges.margin_px, generator, device)
    if ranges.hard.fraction > 0:
        clusters = sample_clusters(batch_size, shape, ranges.hard, ranges.nominal_sigma_px, _tuple(ranges.photons),
                                   generator)
        clusters = Emitters(clusters.x_px.to(device), clusters.y_px.to(device), clusters.photons.to(device),
                            clusters.mask.to(device))
        em = merge_emitters(em, clusters)
    batch = sim.render(em, generator=generator)
    scaling = KDEScaling(ranges.kde_sigma)
    kde = render_kde(em.x_px, em.y_px, em.mask, shape, ranges.upsampling, ranges.kde_sigma)
    unit = scaling.to_unit(kde)
    if ranges.z_scale_nm is not None:
        unit = torch.cat([unit, z_channel(em, shape, ranges, scaling)], dim=1)
    return TrainingBatch(batch.frames_adu, unit)


def z_channel(em, shape, ranges: SimulationRanges, scaling: KDEScaling) -> torch.Tensor:
    """[B, 1, uH, uW]: the KDE of emitters ``em`` weighted by ``z_nm / z_scale_nm``, over the kernel's peak
    (0 where there is no emitter, +-1 at the centre of an isolated one at +-z_scale_nm)."""
    weight = em.mask.to(em.x_px.dtype) * em.z_nm / ranges.z_scale_nm
    return render_kde(em.x_px, em.y_px, weight, shape, ranges.upsampling, ranges.kde_sigma) / scaling.peak


def make_validation_set(
    ranges: SimulationRanges,
    densities=(1.0, 2.0, 4.0),
    n_frames: int = 16,
    shape=(64, 64),
    photons: float = 2000.0,
    background: float = 20.0,
    seed: int = 1234,
) -> list[tuple[float, np.ndarray, pd.DataFrame]]:
    """Fixed-seed validation frames ``(density, frames_adu, gt)`` at the benchmark's optics."""
    sigma = ranges.sigma_px if np.isscalar(ranges.sigma_px) else float(np.mean(ranges.sigma_px))
    out = []
    for k, d in enumerate(densities):
        frames, gt = simulate(n_frames=n_frames, shape=shape, density=d, photons=photons, background=background,
                              sigma_px=sigma, seed=seed + k, camera=ranges.camera, margin_px=ranges.margin_px,
                              psf=ranges.psf_model, z_nm=_tuple(ranges.z_nm))
        out.append((d, frames, gt))
    return out


def check_kde_net_optics(ranges: SimulationRanges, kde_net) -> None:
    """The DDPM's training data must come from the optics DeepSTORM was trained for.

    Compares ``ranges.camera`` with ``kde_net.camera`` (the fields a DeepSTORM config records:
    pixel size, offset, gain, read noise) and ``kde_sigma``, within float tolerance; raises
    ``ValueError`` naming every field that differs.
    """
    diff = {f"camera.{k}": v for k, v in ranges.camera.differences(kde_net.camera, FLAT_KEYS.values()).items()}
    if not math.isclose(ranges.kde_sigma, kde_net.config.kde_sigma, rel_tol=1e-6):
        diff["kde_sigma"] = (ranges.kde_sigma, kde_net.config.kde_sigma)
    if diff:
        listed = ", ".join(f"data.{k} = {a:g} (DeepSTORM: {b:g})" for k, (a, b) in diff.items())
        raise ValueError(f"the training data differ from the DeepSTORM config in {listed}: "
                         "retrain DeepSTORM for these optics or fix the config")


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v
