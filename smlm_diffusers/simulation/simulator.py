"""Frame simulator: emitters -> expected photons -> noisy ADU frames (paper eqs. 1-6).

``FrameSimulator`` is the torch-level, batched simulator used for on-the-fly training data;
:func:`simulate` is the public, numpy/pandas entry of the simulation (docs/conventions.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..optics.psf import PSF
from .camera import Camera
from .emitters import Emitters, Range, _uniform, filament_paths, sample_disc, sample_grid, sample_on_filaments, sample_uniform
from ..optics.gaussian import render_psfs


def smooth_background(
    batch: int,
    shape: tuple[int, int],
    level: torch.Tensor,
    variation: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Background photons per pixel [B, H, W]: ``level * (1 + variation * s(x, y))``.

    ``s`` is one random plane wave with a period of one to two field widths (|s| <= 1), a
    stand-in for out-of-focus light and uneven illumination; ``variation = 0`` is constant.
    """
    h, w = shape
    device = level.device
    bg = level.view(batch, 1, 1).expand(batch, h, w)
    if variation <= 0:
        return bg.clone()
    angle = 2 * math.pi * torch.rand(batch, generator=generator, device=device)
    period = max(h, w) * (1 + torch.rand(batch, generator=generator, device=device))
    phase = 2 * math.pi * torch.rand(batch, generator=generator, device=device)
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij"
    )
    k = (2 * math.pi / period).view(batch, 1, 1)
    arg = k * (xx * torch.cos(angle).view(batch, 1, 1) + yy * torch.sin(angle).view(batch, 1, 1))
    return bg * (1 + variation * torch.cos(arg + phase.view(batch, 1, 1)))


@dataclass
class SimulatedBatch:
    """Frames and their ground truth, all torch tensors."""

    frames_adu: torch.Tensor  # [B, H, W] float32
    expected_photons: torch.Tensor  # [B, H, W] signal + background, incident photons
    background: torch.Tensor  # [B, H, W] photons per pixel
    emitters: Emitters


@dataclass
class FrameSimulator:
    """Batched SMLM frame simulator.

    Parameters
    ----------
    shape : (H, W) in camera pixels
    camera : Camera
    sigma_px : float or (low, high)
        Gaussian PSF standard deviation in camera pixels; a range is drawn per frame.
    background : float or (low, high)
        Background photons per pixel; a range is drawn per frame.
    background_variation : float
        Relative amplitude of the smooth background modulation (0 = flat).
    psf : PSF, optional
        A :class:`smlm_diffusers.optics.PSF` used instead of the Gaussian of ``sigma_px``.
        A 3D PSF draws each emitter's ``z_nm`` from ``z_nm`` (uniform range, nm).
    """

    shape: tuple[int, int] = (64, 64)
    camera: Camera = field(default_factory=Camera)
    sigma_px: Range = 1.0
    background: Range = 20.0
    background_variation: float = 0.0
    psf: PSF | None = None
    z_nm: Range = (-600.0, 600.0)

    def render(self, emitters: Emitters, generator: torch.Generator | None = None) -> SimulatedBatch:
        """Noisy ADU frames of the given emitters."""
        b = emitters.batch_size
        device = emitters.x_px.device
        if self.psf is None:
            sigma = _uniform(self.sigma_px, (b,), generator, device)
            sigma = sigma.unsqueeze(1).expand_as(emitters.x_px)
            signal = render_psfs(emitters.x_px, emitters.y_px, emitters.photons, self.shape, sigma)
        else:
            if self.psf.ndim == 3 and emitters.z_nm is None:
                emitters.z_nm = _uniform(self.z_nm, emitters.x_px.shape, generator, device) * emitters.mask
            signal = self.psf.render(emitters.x_px, emitters.y_px, emitters.photons, self.shape, emitters.z_nm)
        level = _uniform(self.background, (b,), generator, device)
        bg = smooth_background(b, self.shape, level, self.background_variation, generator)
        expected = signal + bg
        frames = self.camera.expose(expected, generator=generator)
        return SimulatedBatch(frames_adu=frames, expected_photons=expected, background=bg, emitters=emitters)


def emitters_to_dataframe(
    emitters: Emitters,
    shape: tuple[int, int],
    pixel_size_nm: float,
    background: torch.Tensor | None = None,
    frame_offset: int = 0,
) -> pd.DataFrame:
    """Ground-truth table (frame, x_nm, y_nm, photons[, background]) of emitters inside the field.

    Frames are 0-based; coordinates follow the pixel geometry of docs/conventions.md
    (``x_nm = x_px * pixel_size_nm``, the field's top-left corner at (0, 0)).
    """
    keep = emitters.inside(shape)
    b_idx, e_idx = torch.nonzero(keep, as_tuple=True)
    x = emitters.x_px[b_idx, e_idx]
    y = emitters.y_px[b_idx, e_idx]
    data = {
        "frame": (b_idx + frame_offset).cpu().numpy().astype(np.int64),
        "x_nm": (x * pixel_size_nm).cpu().numpy().astype(np.float64),
        "y_nm": (y * pixel_size_nm).cpu().numpy().astype(np.float64),
        "photons": emitters.photons[b_idx, e_idx].cpu().numpy().astype(np.float64),
    }
    if emitters.z_nm is not None:
        data["z_nm"] = emitters.z_nm[b_idx, e_idx].cpu().numpy().astype(np.float64)
    if background is not None:
        h, w = shape
        i = y.long().clamp(0, h - 1)
        j = x.long().clamp(0, w - 1)
        data["background"] = background[b_idx, i, j].cpu().numpy().astype(np.float64)
    return pd.DataFrame(data)


def simulate(
    n_frames: int = 100,
    shape: tuple[int, int] = (64, 64),
    density: Range = 1.0,
    photons: Range = 2000.0,
    background: Range = 20.0,
    sigma_px: float = 1.0,
    seed: int = 0,
    structure: str = "uniform",
    camera: Camera | None = None,
    background_variation: float = 0.0,
    n_filaments: int = 6,
    margin_px: float = 0.0,
    spacing_px: float = 16.0,
    jitter_px: float = 3.0,
    batch_size: int = 1024,
    device: str = "cpu",
    psf: PSF | None = None,
    z_nm: Range = (-600.0, 600.0),
    blinking=None,
    drift=None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Simulate an SMLM movie and its ground truth.

    Parameters
    ----------
    n_frames : int
    shape : (H, W)
        Frame size in camera pixels.
    density : float or (low, high)
        Emitters per square micrometre (per frame).
    photons : float or (low, high)
        Total photons per emitter (a range is drawn per emitter).
    background : float or (low, high)
        Background photons per pixel.
    sigma_px : float
        Gaussian PSF standard deviation in camera pixels.
    seed : int
        Seed of the torch generator; same seed, same frames.
    structure : {"uniform", "filaments", "disc", "grid"}
        Where emitters are: uniform over the field, on random smooth filaments (shared by
        all frames, like microtubules), uniform in a centred disc (``density`` then sets
        the count through the disc's area), or isolated on a jittered grid (one emitter per
        ``spacing_px`` cell within +-``jitter_px`` of its centre; ``density`` is ignored).
    camera : Camera, optional
        Defaults to the paper's camera (108 nm pixels, offset 100 ADU, gain 1, 1.6 e- read noise). A camera
        with per-pixel maps (an sCMOS) exposes each pixel with its own offset, gain and read noise; the maps
        must have ``shape``.
    margin_px : float
        Emitters are also drawn this far outside the field: their light enters the frame
        but they are not in the ground truth.
    psf : PSF, optional
        An :class:`smlm_diffusers.optics.PSF` replacing the Gaussian of ``sigma_px``; with a 3D
        PSF each emitter's z is drawn uniformly from ``z_nm`` (nm) and ``gt`` has a ``z_nm`` column.
    blinking : Blinking or True, optional
        A movie of fixed molecules that blink (:mod:`.movies`): ``density`` is then the
        labels per square micrometre (on or off), ``structure`` "uniform" or "filaments", and
        ``photons`` per frame of a blink; True is the default kinetics.
    drift : array [F, 2] (nm) or float, optional
        Stage drift of a blinking movie (a random ramp of this many nm when a number);
        giving it alone also makes a blinking movie.

    Returns
    -------
    frames : float32 array [F, H, W] in ADU
    gt : DataFrame with columns frame (0-based), x_nm, y_nm, photons, background (blinking
        movies add molecule, blink, drift_x_nm, drift_y_nm: :func:`.movies.simulate_movie`)
    """
    if blinking is not None or drift is not None:
        from .movies import Blinking, simulate_movie

        if psf is not None:
            raise ValueError("blinking / drifting movies are simulated with the Gaussian PSF of sigma_px only; "
                             "leave psf unset (3D PSFs: simulate() without blinking)")

        return simulate_movie(n_frames, shape, float(density), photons, background, sigma_px, seed, structure,
                              blinking if isinstance(blinking, Blinking) else None, drift, camera=camera,
                              n_filaments=n_filaments)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    camera = camera or Camera()
    camera.check_shape(shape, "the simulated frames")  # per-pixel maps: one value per frame pixel
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be 'uniform', 'filaments', 'disc' or 'grid', got {structure!r}")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    sim = FrameSimulator(shape, camera, sigma_px, background, background_variation, psf, z_nm)
    paths = filament_paths(shape, n_filaments, generator=gen) if structure == "filaments" else None
    frames, tables = [], []
    for start in range(0, n_frames, batch_size):
        b = min(batch_size, n_frames - start)
        em = _draw(structure, b, shape, density, photons, camera.pixel_size_nm, margin_px, paths, spacing_px,
                   jitter_px, gen, device)
        batch = sim.render(em, generator=gen)
        frames.append(batch.frames_adu.cpu().numpy())
        tables.append(emitters_to_dataframe(em, shape, camera.pixel_size_nm, batch.background, start))
    gt = pd.concat(tables, ignore_index=True)
    return np.concatenate(frames, axis=0).astype(np.float32), gt


STRUCTURES = ("uniform", "filaments", "disc", "grid")


def _draw(structure, b, shape, density, photons, pixel_size_nm, margin_px, paths, spacing_px, jitter_px, gen, device):
    """Emitters of ``b`` frames placed by ``structure`` (:func:`simulate`)."""
    if structure == "uniform":
        return sample_uniform(b, shape, density, pixel_size_nm, photons, margin_px, gen, device)
    if structure == "filaments":
        return sample_on_filaments(b, shape, density, pixel_size_nm, paths, photons, generator=gen, device=device)
    if structure == "disc":
        radius = min(shape) / 2.0
        area_um2 = math.pi * (radius * pixel_size_nm / 1000.0) ** 2
        counts = torch.poisson(_uniform(density, (b,), gen, device) * area_um2, generator=gen).long()
        return sample_disc(b, shape, counts, photons, radius, gen, device)
    return sample_grid(b, shape, spacing_px, jitter_px, photons, gen, device)
