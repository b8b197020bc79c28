"""Benchmark scenarios: what is simulated, with which seeds.

A :class:`Scenario` is plain data. Every scenario has two seeds: ``seed`` draws the frames
that are scored, ``tuning_seed`` draws a separate movie on which a localizer may select its
parameters (e.g. Picasso's detection threshold). The two are always different, so nothing
is ever tuned on the scored frames.

Two sets:

- ``isolated``: one photon level per scenario (200 ... 5000 photons, background 20 photons
  per pixel, PSF sigma 1 px, 108 nm pixels). Emitters sit on a 16 px grid of 64 x 64
  frames (16 per frame), each jittered uniformly by up to +-3 px from its cell centre, so
  any two are >= 10 px (>= 10 PSF sigmas) apart and no PSF reaches another's fitting box:
  they are truly isolated, and RMSE/sqrt(CRLB) is meaningful. The CRLB is evaluated per
  matched emitter at its true (x, y, photons, background).
- ``density``: uniform emitters (``smlm_diffusers.simulate``) at 0.1 ... 4 per square
  micrometre on 64 x 64 frames, 2000 photons, background 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

import smlm_diffusers as sd

PHOTON_LEVELS = (200, 500, 1000, 2000, 5000)
DENSITIES = (0.1, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Scenario:
    """One benchmark condition.

    Parameters
    ----------
    name : str
        Unique, short (used in tables and CSV), e.g. ``"isolated_p1000"``.
    group : str
        ``"isolated"`` or ``"density"`` (one printed table and one plot per group).
    simulate_kwargs : dict
        Keyword arguments of the simulator. For ``layout="uniform"`` they go to
        :func:`smlm_diffusers.simulate` (``shape``, ``density``, ``photons``,
        ``background``, ``sigma_px``, ...). For ``layout="grid"``: ``shape``, ``photons``,
        ``background``, ``sigma_px``, ``spacing_px`` and ``jitter_px``.
    n_frames : int
        Frames scored.
    seed : int
        Seed of the scored movie.
    tuning_seed : int
        Seed of the tuning movie (must differ from ``seed``).
    tuning_frames : int, optional
        Frames of the tuning movie (default ``n_frames``).
    layout : str
        ``"uniform"`` (:func:`smlm_diffusers.simulate`) or ``"grid"`` (isolated emitters).
    isolated : bool
        Emitters are isolated: the RMSE/sqrt(CRLB) ratio is computed.
    """

    name: str
    group: str
    simulate_kwargs: dict = field(default_factory=dict)
    n_frames: int = 50
    seed: int = 0
    tuning_seed: int = 1
    tuning_frames: int | None = None
    layout: str = "uniform"
    isolated: bool = False

    def __post_init__(self):
        if self.seed == self.tuning_seed:
            raise ValueError(f"scenario {self.name!r}: tuning_seed must differ from seed ({self.seed})")
        if self.layout not in ("uniform", "grid"):
            raise ValueError(f"layout must be 'uniform' or 'grid', got {self.layout!r}")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")

    @property
    def sigma_px(self) -> float:
        return float(self.simulate_kwargs.get("sigma_px", 1.0))

    @property
    def photons(self) -> float:
        p = self.simulate_kwargs.get("photons", 2000.0)
        return float(np.mean(p)) if isinstance(p, (tuple, list)) else float(p)

    @property
    def background(self) -> float:
        b = self.simulate_kwargs.get("background", 20.0)
        return float(np.mean(b)) if isinstance(b, (tuple, list)) else float(b)

    @property
    def density(self) -> float:
        """Emitters per square micrometre (NaN for the grid layout; see ``emitters_per_frame``)."""
        if self.layout == "grid":
            return math.nan
        d = self.simulate_kwargs.get("density", 1.0)
        return float(np.mean(d)) if isinstance(d, (tuple, list)) else float(d)

    def with_frames(self, n_frames: int, tuning_frames: int | None = None) -> "Scenario":
        """A copy with other frame counts (e.g. for a quick run)."""
        return replace(self, n_frames=int(n_frames), tuning_frames=tuning_frames)


def isolated_scenarios(
    quick: bool = False,
    photon_levels=PHOTON_LEVELS,
    background: float = 20.0,
    sigma_px: float = 1.0,
    n_frames: int | None = None,
) -> list[Scenario]:
    """Isolated emitters over a photon sweep (16 emitters per 64 x 64 frame).

    Default 40 frames (640 emitters) per level, tuning on 16 frames (256 emitters) of
    another seed; ``quick`` uses 4 frames (64 emitters) and 4 tuning frames.
    """
    n = n_frames or (4 if quick else 40)
    n_tune = 4 if quick else 16
    out = []
    for i, p in enumerate(photon_levels):
        out.append(
            Scenario(
                name=f"isolated_p{int(p)}",
                group="isolated",
                simulate_kwargs=dict(
                    shape=(64, 64), photons=float(p), background=float(background), sigma_px=float(sigma_px),
                    spacing_px=16.0, jitter_px=3.0,
                ),
                n_frames=n,
                seed=1000 + i,
                tuning_seed=2000 + i,
                tuning_frames=n_tune,
                layout="grid",
                isolated=True,
            )
        )
    return out


def density_scenarios(
    quick: bool = False,
    densities=DENSITIES,
    photons: float = 2000.0,
    background: float = 20.0,
    sigma_px: float = 1.0,
    n_frames: int | None = None,
) -> list[Scenario]:
    """Uniform emitters over a density sweep on 64 x 64 frames (108 nm pixels: 47.8 um^2).

    Default 100 scored and 20 tuning frames per density (at 0.1 per um^2 about 480 scored
    emitters, at 4 about 19000); ``quick`` uses 5 and 5.
    """
    n = n_frames or (5 if quick else 100)
    n_tune = 5 if quick else 20
    out = []
    for i, d in enumerate(densities):
        out.append(
            Scenario(
                name=f"density_{d:g}",
                group="density",
                simulate_kwargs=dict(
                    shape=(64, 64), density=float(d), photons=float(photons), background=float(background),
                    sigma_px=float(sigma_px),
                ),
                n_frames=n,
                seed=3000 + i,
                tuning_seed=4000 + i,
                tuning_frames=n_tune,
                layout="uniform",
            )
        )
    return out


def default_scenarios(quick: bool = False) -> list[Scenario]:
    """The isolated photon sweep followed by the density sweep."""
    return isolated_scenarios(quick) + density_scenarios(quick)


def simulate_scenario(
    scenario: Scenario,
    seed: int | None = None,
    n_frames: int | None = None,
    camera: sd.Camera | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Frames (ADU, float32 [F, H, W]) and ground truth of a scenario.

    ``seed`` defaults to ``scenario.seed`` and ``n_frames`` to ``scenario.n_frames``; pass
    ``scenario.tuning_seed`` / ``scenario.tuning_frames`` for the tuning movie. Same
    arguments, same result. The ground truth has ``frame, x_nm, y_nm, photons, background``.
    """
    seed = scenario.seed if seed is None else int(seed)
    n_frames = scenario.n_frames if n_frames is None else int(n_frames)
    camera = camera or sd.Camera()
    kw = dict(scenario.simulate_kwargs)
    if scenario.layout == "uniform":
        return sd.simulate(n_frames=n_frames, seed=seed, camera=camera, **kw)
    return simulate_grid(n_frames=n_frames, seed=seed, camera=camera, **kw)


def simulate_grid(n_frames: int, seed: int = 0, camera: sd.Camera | None = None, **kwargs):
    """Isolated emitters on a jittered grid: ``smlm_diffusers.simulate(structure="grid")``."""
    return sd.simulate(n_frames=n_frames, seed=seed, camera=camera, structure="grid", **kwargs)
