"""Training noise levels: uniform over the training schedule, optionally biased toward those inference visits.

A few-step sampler evaluates the UNet at a handful of noise levels only (the default: 4 steps
of the "logsnr" schedule, log-SNR -10, -3.3, 3.3 and 10), and the sub-pixel structure that tells
one emitter from a close pair is decided at those levels. :class:`TimestepBias` (the
``timestep_bias:`` block of a DDPM config) draws a share of each batch's noise levels near
them: a level chosen at random, its log-SNR jittered by a normal of ``logsnr_width``. The rest
are drawn as :meth:`GammaDDPMScheduler.sample_gammas` draws them, and with ``share`` 0 (the
default) nothing changes, not even the random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schedulers import GammaDDPMScheduler


@dataclass
class TimestepBias:
    """share : of each batch drawn near the inference levels (0: off). steps : the default inference
    step count whose levels are targeted (the scheduler's own ``inference_schedule``).
    logsnr_width : standard deviation of the log-SNR jitter around a level."""

    share: float = 0.0
    steps: int = 4
    logsnr_width: float = 0.5

    def __post_init__(self):
        if not 0 <= self.share <= 1 or self.steps < 1 or self.logsnr_width < 0:
            raise ValueError(f"timestep_bias needs 0 <= share <= 1, steps >= 1, logsnr_width >= 0; got {self}")


def inference_gammas(scheduler: GammaDDPMScheduler, steps: int) -> torch.Tensor:
    """The noise levels (gammas, high noise first) that ``steps`` steps of the default inference schedule visit."""
    probe = GammaDDPMScheduler.from_config(scheduler.config)
    probe.set_timesteps(steps)
    return probe.gammas.clone()


def sample_training_gammas(scheduler: GammaDDPMScheduler, n: int, generator: torch.Generator,
                           bias: TimestepBias | None = None, device="cpu") -> torch.Tensor:
    """``n`` training noise levels: the scheduler's uniform draw, a ``bias.share`` of them replaced
    by levels near the inference ones, kept within the training schedule's range."""
    gamma = scheduler.sample_gammas(n, generator=generator, device="cpu")
    if bias is None or not bias.share:
        return gamma.to(device)
    levels = torch.logit(inference_gammas(scheduler, bias.steps).double())
    near = torch.rand(n, generator=generator) < bias.share
    k = torch.randint(0, len(levels), (n,), generator=generator)
    lam = levels[k] + bias.logsnr_width * torch.randn(n, generator=generator, dtype=torch.float64)
    lam = lam.clamp(scheduler.logsnr_min, scheduler.logsnr_max)
    gamma = torch.where(near, torch.sigmoid(lam).float(), gamma)
    return gamma.to(device)
