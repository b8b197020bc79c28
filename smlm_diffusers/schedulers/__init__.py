"""Noise schedulers (diffusers SchedulerMixin) for the conditional DDPM."""

from .scheduling_gamma_ddpm import GammaDDPMScheduler, GammaDDPMSchedulerOutput, gammas_for

__all__ = ["GammaDDPMScheduler", "GammaDDPMSchedulerOutput", "gammas_for"]
