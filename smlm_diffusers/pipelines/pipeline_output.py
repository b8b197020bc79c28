from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from diffusers.utils import BaseOutput


@dataclass
class SMLMPipelineOutput(BaseOutput):
    """Output of :class:`SMLMDiffusionPipeline`.

    All images are on the upsampled KDE grid ([F, uH, uW], u = 4), in KDE density units
    (one unit of mass per emitter; :func:`smlm_diffusers.render_kde`).

    localizations : DataFrame
        frame (0-based), x_nm, y_nm, sigma_x_nm, sigma_y_nm, probability, n_samples,
        kde_mass (KDE mass around the molecule, in emitters; not photons), and with samples
        photons (per emitter) and background (photons per pixel) fitted on the frame at the
        molecule's position (:mod:`~smlm_diffusers.localization.photometry`). In DeepSTORM mode
        (``num_samples=0``) DeepSTORM's molecules, fitted on the frame where ``refine`` is on (sigma: the fit's
        bound) and weighed against their pair proposals with the arbitration; without ``refine``, sigmas
        NaN, probability 1, no photometry.
    kde_mean : array [F, uH, uW]
        Mean of the DDPM samples (the DeepSTORM KDE when ``num_samples=0``).
    kde_var : array [F, uH, uW] or None
        Per-pixel variance of the samples (ddof = 1).
    samples : array [F, K, uH, uW] or None
        The K posterior KDE samples of each frame, each less its denoiser's per-sub-pixel-phase background
        offset and clipped at zero (a density is non-negative; :func:`~smlm_diffusers.pipelines.sampling.remove_phase_bias`).
    deepstorm_kde : array [F, uH, uW]
        The DeepSTORM estimate the samples were conditioned on.
    rejected : dict or None
        Rows left out of ``localizations`` because their numbers were impossible, by reason
        (:func:`~smlm_diffusers.screening.screen_localizations`: failed fits, sigmas, photons,
        positions outside the field); None when the call did not screen (``screen=False``).
    mode : str or None
        The mode that made the table (:attr:`~smlm_diffusers.pipelines.modes.CallMode.name`:
        ``"DeepSTORM + arbitration"``, ``"DeepSTORM"``, ``"DDPM"``; ``"DeepSTORM (3D)"``).
    """

    localizations: pd.DataFrame
    kde_mean: np.ndarray
    kde_var: np.ndarray | None
    samples: np.ndarray | None
    deepstorm_kde: np.ndarray
    rejected: dict | None = None
    mode: str | None = None
