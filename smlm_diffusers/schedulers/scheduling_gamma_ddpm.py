"""DDPM scheduler conditioned on the continuous noise level gamma (paper sections 4.1-4.2).

Forward process (eq. 9, 12): ``y_t = sqrt(gamma) y_0 + sqrt(1 - gamma) eps``. The network is
told ``gamma`` itself (WaveGrad / SR3), not an integer step, so training and inference
schedules are independent: training draws ``t ~ U{1..T}`` then ``gamma ~ U(gamma_t, gamma_{t-1})``
(eqs. 12-13, one draw per sample), inference walks any decreasing-noise sequence of gammas of
up to ``max_inference_steps`` steps.

The paper's schedule (T = 100, beta linear 1e-4 .. 1e-2) ends at gamma_T = 0.60, so the
forward process never reaches noise and sampling from N(0, I) does not match training
(prior term L_T about 0.67 bits per dimension, not the 1e-5 the paper quotes). It is kept as
``beta_schedule="paper"`` for comparison; the default is a cosine schedule whose gamma_T is
about 2e-9 (:meth:`GammaDDPMScheduler.prior_kl_bits` reports L_T).

Noise-level embedding: ``UNet2DModel`` truncates a Python float timestep to an int and its
sinusoidal embedding barely changes over [0, 1], so the UNet gets the float tensor
``1000 * (logsnr_max - logsnr(gamma)) / (logsnr_max - logsnr_min)`` (:meth:`noise_level_embedding`),
which spreads the noise levels evenly over [0, 1000].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput


@dataclass
class GammaDDPMSchedulerOutput(BaseOutput):
    """Output of :meth:`GammaDDPMScheduler.step`.

    prev_sample : the less noisy sample ``y_{t-1}``.
    pred_original_sample : the model's estimate of ``y_0`` at this step.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def gammas_for(schedule: str, n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
               max_beta: float = 0.999) -> np.ndarray:
    """Cumulative products ``gamma_1 .. gamma_n`` (decreasing, noise grows) of a named schedule.

    ``linear``: Ho et al.'s betas, linear from ``beta_start`` to ``beta_end`` and rescaled by
    ``1000 / n_steps`` so that any number of steps covers the same range as T = 1000.
    ``cosine``: Nichol & Dhariwal, ``gamma(s) = cos^2(pi/2 (s + 0.008) / 1.008)``.
    ``paper``: betas linear from ``beta_start`` to ``beta_end`` as given (use 1e-4 .. 1e-2, T = 100).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if schedule == "cosine":
        s = np.arange(n_steps + 1) / n_steps
        f = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, max_beta)
    elif schedule == "linear":
        scale = 1000.0 / n_steps
        betas = np.clip(np.linspace(beta_start * scale, beta_end * scale, n_steps), 0, max_beta)
    elif schedule == "paper":
        betas = np.linspace(beta_start, beta_end, n_steps)
    else:
        raise ValueError(f"unknown schedule {schedule!r}: use 'cosine', 'linear' or 'paper'")
    return np.cumprod(1.0 - betas)


class GammaDDPMScheduler(SchedulerMixin, ConfigMixin):
    """Continuous-noise-level DDPM: training noise draws and ancestral / DDIM reverse steps.

    Parameters
    ----------
    num_train_timesteps : int
        T of the training schedule.
    beta_schedule : {"cosine", "linear", "paper"}
        Training schedule (see :func:`gammas_for`).
    beta_start, beta_end : float
        Betas of the linear and paper schedules.
    prediction_type : {"v_prediction", "epsilon"}
        What the UNet predicts: ``eps`` (eq. 13) or ``v = sqrt(gamma) eps - sqrt(1 - gamma) y_0``.
    clip_sample : bool
        Clip the predicted ``y_0`` to ``[-clip_sample_range, clip_sample_range]``. Off by
        default: the pipeline models residuals, which are not bounded by [-1, 1].
    inference_schedule : str
        Default schedule of :meth:`set_timesteps` ("cosine", "linear" or "logsnr": equal
        log-SNR spacing between the training schedule's ends).
    max_inference_steps : int
        The paper's inference budget (100 steps).
    sampler : {"ancestral", "ddim"}
        Default reverse step: eqs. 10-11 with the posterior variance, or deterministic DDIM.
    searched_gammas : list of float, optional
        An inference schedule found by search (``schedule="searched"``), high noise first.
    inference_logsnr_range : (float, float)
        Ends of the "logsnr" inference schedule. Below log-SNR -10 (gamma 4.5e-5) a sample
        is indistinguishable from N(0, I) for data of unit scale, so steps there are wasted.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "cosine",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "v_prediction",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        inference_schedule: str = "logsnr",
        max_inference_steps: int = 100,
        sampler: str = "ancestral",
        searched_gammas: list[float] | None = None,
        inference_logsnr_range: tuple[float, float] = (-10.0, 10.0),
    ):
        if prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be 'v_prediction' or 'epsilon', got {prediction_type!r}")
        if sampler not in ("ancestral", "ddim"):
            raise ValueError(f"sampler must be 'ancestral' or 'ddim', got {sampler!r}")
        g = gammas_for(beta_schedule, num_train_timesteps, beta_start, beta_end)
        # gamma_0 = 1 (no noise) in front, so that U(gamma_t, gamma_{t-1}) is defined for t = 1
        self.train_gammas = torch.from_numpy(np.concatenate([[1.0], g])).float()
        g_min = max(float(g[-1]), 1e-12)
        self.logsnr_max = float(np.log(g[0] / (1 - g[0])))
        self.logsnr_min = float(np.log(g_min / (1 - g_min)))
        self.gammas: torch.Tensor | None = None
        self.timesteps: torch.Tensor | None = None
        self.num_inference_steps: int | None = None
        self.init_noise_sigma = 1.0

    # -- schedule facts ---------------------------------------------------------------------
    @property
    def gamma_T(self) -> float:
        return float(self.train_gammas[-1])

    def prior_kl_bits(self, data_rms: float = 1.0) -> float:
        """L_T = KL(q(y_T | y_0) || N(0, I)) in bits per dimension for data of rms ``data_rms``.

        Per dimension, ``0.5 * (gamma x0^2 + (1 - gamma) - 1 - log(1 - gamma))`` nats.
        """
        g = self.gamma_T
        nats = 0.5 * (g * data_rms**2 - g - math.log1p(-g))
        return nats / math.log(2.0)

    def noise_level_embedding(self, gamma: torch.Tensor) -> torch.Tensor:
        """Float "timestep" for the UNet: log-SNR of ``gamma`` mapped onto [0, 1000]."""
        g = gamma.double().clamp(1e-12, 1 - 1e-12)
        logsnr = torch.log(g) - torch.log1p(-g)
        t = 1000.0 * (self.logsnr_max - logsnr) / (self.logsnr_max - self.logsnr_min)
        return t.float()

    # -- training -------------------------------------------------------------------------
    def sample_gammas(self, batch_size: int, generator: torch.Generator | None = None,
                      device: str | torch.device = "cpu") -> torch.Tensor:
        """Training noise levels: ``t ~ U{1..T}``, ``gamma ~ U(gamma_t, gamma_{t-1})`` (one per sample)."""
        t = torch.randint(1, self.config.num_train_timesteps + 1, (batch_size,), generator=generator)
        lo, hi = self.train_gammas[t], self.train_gammas[t - 1]
        u = torch.rand(batch_size, generator=generator)
        return (lo + u * (hi - lo)).to(device)

    @staticmethod
    def _bcast(gamma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return gamma.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Eq. 12: ``sqrt(gamma) y_0 + sqrt(1 - gamma) eps``."""
        g = self._bcast(gamma, original)
        return g.sqrt() * original + (1 - g).sqrt() * noise

    def get_velocity(self, original: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        g = self._bcast(gamma, original)
        return g.sqrt() * noise - (1 - g).sqrt() * original

    def training_target(self, original: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """What the UNet should output for this ``prediction_type``."""
        if self.config.prediction_type == "epsilon":
            return noise
        return self.get_velocity(original, noise, gamma)

    # -- inference ------------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        schedule: str | None = None,
        gammas: list[float] | None = None,
    ):
        """Choose the inference noise levels.

        Give ``num_inference_steps`` (<= ``max_inference_steps``) and optionally a
        ``schedule`` ("logsnr", "cosine", "linear", "searched"), or an explicit decreasing-noise
        list of ``gammas`` (from high noise to low, e.g. a searched schedule).
        ``self.timesteps`` holds the UNet's float noise-level embeddings in sampling order.
        """
        schedule = schedule or self.config.inference_schedule
        if gammas is None and schedule == "searched":
            gammas = self.config.searched_gammas
            if not gammas:
                raise ValueError("no searched schedule stored in this scheduler's config")
        if gammas is not None:
            g = np.asarray(gammas, dtype=np.float64)
            if g.ndim != 1 or np.any(np.diff(g) <= 0) or g[0] <= 0 or g[-1] >= 1:
                raise ValueError("gammas must increase strictly (high noise first) within (0, 1)")
        else:
            n = int(num_inference_steps or 20)
            if schedule == "logsnr":
                lo, hi = self.config.inference_logsnr_range
                lam = np.linspace(max(lo, self.logsnr_min), min(hi, self.logsnr_max), n)
                g = 1.0 / (1.0 + np.exp(-lam))
            elif schedule in ("cosine", "linear"):
                g = self._continuous_schedule(schedule, n)
            else:
                raise ValueError(f"unknown inference schedule {schedule!r}")
        if len(g) > self.config.max_inference_steps:
            raise ValueError(f"{len(g)} steps exceed max_inference_steps={self.config.max_inference_steps}")
        self.num_inference_steps = len(g)
        self.gammas = torch.from_numpy(g).float()
        self.timesteps = self.noise_level_embedding(self.gammas)
        if device is not None:
            self.timesteps = self.timesteps.to(device)
        return self.timesteps

    def _continuous_schedule(self, schedule: str, n: int) -> np.ndarray:
        """``n`` gammas equally spaced in the time variable s of a continuous cosine or linear
        schedule, restricted to ``inference_logsnr_range`` (low gamma first)."""
        s = np.linspace(0.0, 1.0, 100_001)
        if schedule == "cosine":
            curve = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
        else:  # linear betas over T = 1000: log gamma(s) = -1000 (b0 s + (b1 - b0) s^2 / 2)
            b0, b1 = self.config.beta_start, self.config.beta_end
            curve = np.exp(-1000.0 * (b0 * s + (b1 - b0) * s**2 / 2))
        lo, hi = (1.0 / (1.0 + np.exp(-v)) for v in self.config.inference_logsnr_range)
        inside = s[(curve >= lo) & (curve <= hi)]
        s_steps = np.linspace(inside.max(), inside.min(), n)
        return np.interp(s_steps, s, curve)

    def _split(self, model_output, sample, g):
        """Predicted (y_0, eps) from the model output at noise level ``g``."""
        if self.config.prediction_type == "epsilon":
            eps = model_output
            x0 = (sample - (1 - g).sqrt() * eps) / g.sqrt()
        else:
            x0 = g.sqrt() * sample - (1 - g).sqrt() * model_output
            eps = (1 - g).sqrt() * sample + g.sqrt() * model_output
        if self.config.clip_sample:
            r = self.config.clip_sample_range
            x0 = x0.clamp(-r, r)
            eps = (sample - g.sqrt() * x0) / (1 - g).sqrt()
        return x0, eps

    def step(
        self,
        model_output: torch.Tensor,
        step_index: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        return_dict: bool = True,
    ) -> GammaDDPMSchedulerOutput | tuple:
        """One reverse step from ``gammas[step_index]`` to the next (less noisy) level.

        ``ancestral``: eqs. 10-11 generalized to arbitrary gamma pairs, with
        ``alpha = gamma_t / gamma_prev`` and the posterior variance
        ``(1 - gamma_prev) / (1 - gamma_t) * (1 - alpha)``. ``ddim``: the deterministic
        ``sqrt(gamma_prev) y_0 + sqrt(1 - gamma_prev) eps``. The last step returns the predicted y_0.
        """
        if self.gammas is None:
            raise RuntimeError("call set_timesteps() before step()")
        sampler = sampler or self.config.sampler
        g = self._bcast(self.gammas[step_index], sample)
        x0, eps = self._split(model_output, sample, g)
        if step_index == len(self.gammas) - 1:
            prev = x0
        else:
            gp = self._bcast(self.gammas[step_index + 1], sample)
            if sampler == "ddim":
                prev = gp.sqrt() * x0 + (1 - gp).sqrt() * eps
            else:
                alpha = g / gp
                mean = (gp.sqrt() * (1 - alpha) / (1 - g)) * x0 + (alpha.sqrt() * (1 - gp) / (1 - g)) * sample
                var = (1 - gp) / (1 - g) * (1 - alpha)
                noise = torch.randn(sample.shape, generator=generator, dtype=sample.dtype,
                                    device=generator.device if generator is not None else sample.device)
                prev = mean + var.sqrt() * noise.to(sample.device)
        if not return_dict:
            return (prev, x0)
        return GammaDDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def __len__(self):
        return self.config.num_train_timesteps
