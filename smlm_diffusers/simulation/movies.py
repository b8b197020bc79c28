"""Realistic movies: fixed molecules that blink (on/off kinetics, bleaching) on a drifting stage.

A movie holds ``n`` labelled molecules at fixed positions in the sample (uniform or on
filaments). Each one is a two-state emitter seen frame by frame: off -> on with mean dark
time ``off_frames``, on -> off with mean bright time ``on_frames`` (geometric durations, so
a blink lasts several frames), and at the end of each blink it bleaches for good with
probability ``bleach``. The stage drifts by a smooth trace (a ramp plus a slow wobble, or
one given per frame) that moves every molecule in the frame.

The ground truth has one row per molecule per frame it is on, with ``molecule`` and
``blink`` ids (a blink is one uninterrupted bright period) and the drift of that frame:
``x_nm``, ``y_nm`` are where the camera sees the molecule (drift included, so per-frame
metrics match raw localizations) and ``x_nm - drift_x_nm`` is its place in the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .camera import Camera
from .emitters import Emitters, Range, filament_paths, sample_on_filaments
from .simulator import FrameSimulator


@dataclass(frozen=True)
class Blinking:
    """Two-state blinking with bleaching, durations in frames.

    Parameters
    ----------
    on_frames : float
        Mean bright time of a blink, frames (geometric, >= 1 frame).
    off_frames : float
        Mean dark time between blinks, frames; also the mean wait before the first blink.
    bleach : float
        Probability that a molecule bleaches (never returns) at the end of each blink.
    """

    on_frames: float = 3.0
    off_frames: float = 500.0
    bleach: float = 0.2

    def __post_init__(self):
        if self.on_frames < 1 or self.off_frames < 1:
            raise ValueError(f"on_frames and off_frames must be >= 1, got {self.on_frames}, {self.off_frames}")
        if not 0 <= self.bleach <= 1:
            raise ValueError(f"bleach must be in [0, 1], got {self.bleach}")

    def states(self, n_molecules: int, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Blink id per molecule and frame [F, N] (int64, -1 = dark), blinks numbered in order of start."""
        p_on, p_off = 1.0 / self.off_frames, 1.0 / self.on_frames
        on = np.zeros(n_molecules, bool)
        alive = np.ones(n_molecules, bool)
        current = np.full(n_molecules, -1, np.int64)
        out = np.full((n_frames, n_molecules), -1, np.int64)
        next_id = 0
        for f in range(n_frames):
            if f == 0:  # the stationary share of molecules is on at the start
                starting = rng.random(n_molecules) < self.on_frames / (self.on_frames + self.off_frames)
            else:
                u = rng.random((3, n_molecules))
                ending = on & (u[0] < p_off)
                alive &= ~(ending & (u[1] < self.bleach))
                on &= ~ending
                current[ending] = -1
                starting = ~on & alive & ~ending & (u[2] < p_on)  # dark for at least one frame
            k = int(starting.sum())
            current[starting] = next_id + np.arange(k)
            next_id += k
            on |= starting
            out[f] = current
        return out


def drift_trace(n_frames: int, total_nm: float = 100.0, wobble_nm: float = 20.0,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """A smooth stage drift [F, 2] (x, y in nm), zero at frame 0.

    A ramp of length ``total_nm`` over the movie in a random direction, plus a slow wobble
    (one to two periods over the movie, amplitude ``wobble_nm``, random phase per axis).
    """
    rng = rng or np.random.default_rng(0)
    t = np.arange(n_frames) / max(n_frames - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = total_nm * t[:, None] * np.array([math.cos(angle), math.sin(angle)])
    periods = rng.uniform(1, 2, size=2)
    phase = rng.uniform(0, 2 * math.pi, size=2)
    wobble = wobble_nm * (np.sin(2 * math.pi * periods * t[:, None] + phase) - np.sin(phase))
    return (ramp + wobble).astype(np.float64)


def molecule_positions(n_molecules: int, shape: tuple[int, int], pixel_size_nm: float, structure: str,
                       n_filaments: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fixed positions (x_nm, y_nm) of the labels: uniform over the field or along filaments."""
    h, w = shape
    if structure == "uniform":
        xy = torch.rand((n_molecules, 2), generator=generator, dtype=torch.float64).numpy()
        return xy[:, 0] * w * pixel_size_nm, xy[:, 1] * h * pixel_size_nm
    if structure == "filaments":
        paths = filament_paths(shape, n_filaments, generator=generator)
        xs, ys = [], []
        while sum(len(x) for x in xs) < n_molecules:  # Poisson counts: draw until there are enough
            area_um2 = h * w * (pixel_size_nm / 1000.0) ** 2
            em = sample_on_filaments(1, shape, n_molecules / area_um2, pixel_size_nm, paths, generator=generator)
            xs.append(em.x_px[em.mask].double().numpy())
            ys.append(em.y_px[em.mask].double().numpy())
        x, y = np.concatenate(xs)[:n_molecules], np.concatenate(ys)[:n_molecules]
        return x * pixel_size_nm, y * pixel_size_nm
    raise ValueError(f"a blinking movie's structure must be 'uniform' or 'filaments', got {structure!r}")


def simulate_movie(
    n_frames: int = 1000,
    shape: tuple[int, int] = (64, 64),
    density: float = 10.0,
    photons: Range = 2000.0,
    background: Range = 20.0,
    sigma_px: float = 1.0,
    seed: int = 0,
    structure: str = "filaments",
    blinking: Blinking | None = None,
    drift: np.ndarray | float | None = 100.0,
    drift_wobble_nm: float = 20.0,
    camera: Camera | None = None,
    n_filaments: int = 6,
    batch_size: int = 256,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Simulate a blinking, drifting movie and its ground truth (per frame, per blink).

    Parameters
    ----------
    n_frames : int
    shape : (H, W), camera pixels
    density : float
        Labelled molecules per square micrometre of the field (all of them, on or off: the
        emitters on in one frame are about ``density * on_frames / (on_frames + off_frames)``).
    photons : float or (low, high)
        Photons per frame of a blink (a range is drawn once per blink).
    background, sigma_px, camera
        As :func:`~smlm_diffusers.simulation.simulate`.
    seed : int
        Seeds both the kinetics (numpy) and the positions and noise (torch): same seed, same movie.
    structure : {"filaments", "uniform"}
    blinking : Blinking, optional
        Kinetics (default ``Blinking()``: 3 frames on, 500 off, 20% bleaching per blink).
    drift : array [F, 2] (nm), float or None
        The stage drift per frame (x, y), or the length in nm of a random ramp over the movie
        (:func:`drift_trace`, with ``drift_wobble_nm``); None or 0: no drift.

    Returns
    -------
    frames : float32 [F, H, W], ADU
    gt : DataFrame
        frame (0-based), x_nm, y_nm (as imaged: drift included), photons, background,
        molecule, blink, drift_x_nm, drift_y_nm; only emitters inside the field.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    shape = (int(shape[0]), int(shape[1]))
    camera = camera or Camera()
    a = camera.pixel_size_nm
    blinking = blinking or Blinking()
    rng = np.random.default_rng(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    n_mol = int(round(density * shape[0] * shape[1] * (a / 1000.0) ** 2))
    mx, my = molecule_positions(n_mol, shape, a, structure, n_filaments, gen)
    if drift is None or np.isscalar(drift):
        trace = drift_trace(n_frames, float(drift or 0.0), drift_wobble_nm if drift else 0.0, rng)
    else:
        trace = np.asarray(drift, np.float64)
        if trace.shape != (n_frames, 2):
            raise ValueError(f"drift must have shape ({n_frames}, 2), got {trace.shape}")
    blink = blinking.states(n_mol, n_frames, rng)
    n_blinks = int(blink.max()) + 1 if blink.size else 0
    if isinstance(photons, (tuple, list)):
        blink_photons = rng.uniform(float(photons[0]), float(photons[1]), n_blinks)
    else:
        blink_photons = np.full(n_blinks, float(photons))
    sim = FrameSimulator(shape, camera, sigma_px, background, 0.0)
    frames, tables = [], []
    for start in range(0, n_frames, batch_size):
        stop = min(start + batch_size, n_frames)
        ids = blink[start:stop]
        on = ids >= 0
        e_max = max(int(on.sum(1).max()), 1)
        order = np.argsort(~on, axis=1, kind="stable")[:, :e_max]  # the molecules on, first
        mol = order
        mask = np.take_along_axis(on, order, 1)
        bid = np.where(mask, np.take_along_axis(ids, order, 1), 0)
        x_nm = mx[mol] + trace[start:stop, :1]
        y_nm = my[mol] + trace[start:stop, 1:]
        ph = np.where(mask, blink_photons[bid] if n_blinks else 0.0, 0.0)
        em = Emitters(x_px=torch.from_numpy(np.where(mask, x_nm / a, 0.0)).float(),
                      y_px=torch.from_numpy(np.where(mask, y_nm / a, 0.0)).float(),
                      photons=torch.from_numpy(ph).float(), mask=torch.from_numpy(mask))
        batch = sim.render(em, generator=gen)
        frames.append(batch.frames_adu.numpy())
        keep = em.inside(shape).numpy()
        f_idx, e_idx = np.nonzero(keep)
        i = np.clip((y_nm[f_idx, e_idx] / a).astype(np.int64), 0, shape[0] - 1)
        j = np.clip((x_nm[f_idx, e_idx] / a).astype(np.int64), 0, shape[1] - 1)
        tables.append(pd.DataFrame({
            "frame": (f_idx + start).astype(np.int64), "x_nm": x_nm[f_idx, e_idx], "y_nm": y_nm[f_idx, e_idx],
            "photons": ph[f_idx, e_idx], "background": batch.background.numpy()[f_idx, i, j].astype(np.float64),
            "molecule": mol[f_idx, e_idx].astype(np.int64), "blink": bid[f_idx, e_idx].astype(np.int64),
            "drift_x_nm": trace[f_idx + start, 0], "drift_y_nm": trace[f_idx + start, 1]}))
    return np.concatenate(frames).astype(np.float32), pd.concat(tables, ignore_index=True)
