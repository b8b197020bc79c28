"""DDPM mode of :class:`~smlm_diffusers.pipelines.pipeline_smlm.SMLMDiffusionPipeline`: the reverse diffusion over
the UNet's tiles, where it samples, and the weighing of what the samples propose.

A mixin of the pipeline (its methods use the pipeline's components and config): the cascade of
:meth:`DDPMSampling._ddpm_molecules` first weighs DeepSTORM's molecules against their split-pair proposals
by the frame's likelihood, samples only where that leaves the configuration undecided
(:func:`~smlm_diffusers.pipelines.sampling.ambiguity_mask`), and weighs the samples' detections there
(:func:`~smlm_diffusers.localization.configurations.arbitrate`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from ..localization.configurations import ambiguous, arbitrate, undecided
from ..models import layout
from ..simulation.camera import Camera
from . import sampling
from .sampling import NO_DETECTIONS


class DDPMSampling:
    """The DDPM half of the pipeline (mixed into :class:`SMLMDiffusionPipeline`)."""

    def _ddpm_molecules(self, y_hat, frames, frames_np, base, optics, localize, num_samples, num_inference_steps,
                        generator, batch_size, sampler, schedule, threshold, floor, sample_everywhere, bf16):
        """DDPM mode of :meth:`__call__`: (molecules, KDE mean, variance, samples) from DeepSTORM's ``y_hat``
        and its refined molecules ``base`` (the cascade: a first weighing, samples where it is undecided), under
        the call's resolved ``optics`` (:meth:`resolve_optics`)."""
        device, scaling = self._execution_device, self.kde_scaling
        camera, psf_sigma_px = optics.camera, float(optics.psf.sigma_px)
        cond = self.conditioning(y_hat, frames.to(device), camera)
        # tiles whose estimate stays below a quarter of the detection threshold are not sampled
        empty_level = float(scaling.to_unit(torch.tensor(0.25 * threshold))) \
            if self.config.skip_empty_tiles else -math.inf
        # the likelihood first weighs DeepSTORM's molecules against their pair proposals; the samples go
        # only where that leaves the configuration undecided
        gate = ambiguous(base)
        first = arbitrate(frames_np, base, NO_DETECTIONS, 0, camera, psf_sigma_px,
                          link_radius_nm=self.config.link_radius_nm, split_mask=gate, probability_floor=0.0)
        wanted = None if sample_everywhere else self.ambiguity_mask(first[undecided(first)], frames.shape,
                                                                    camera)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            residuals, covered = self.sample_residuals(cond, num_samples, num_inference_steps, generator,
                                                       batch_size, sampler, schedule, empty_level, wanted)
        # the molecules come from the draws as drawn: the bias removed below is ~1e-3 against a peak threshold
        # of 0.03, and their positions are fitted on the frame anyway
        detections = self.sample_detections(scaling.from_unit(y_hat + residuals), covered, localize)
        # what the images show: each draw less its denoiser's per-phase background offset, clipped at zero
        # (a density is non-negative), so that the mean and the variance describe the same densities
        factor = layout.factor_of(self.unet.config) if layout.layout_of(self.unet.config) == "camera" else 1
        residuals = sampling.remove_phase_bias(residuals, covered, factor)
        samples = scaling.from_unit(y_hat + residuals).clamp_(min=0.0)  # [F, K, uH, uW]
        kde_mean = samples.mean(dim=1)
        kde_var = samples.var(dim=1) if num_samples > 1 else torch.zeros_like(kde_mean)
        if len(detections):
            locs = arbitrate(frames_np, base, detections, num_samples, camera, psf_sigma_px,
                             link_radius_nm=self.config.link_radius_nm, split_mask=gate, probability_floor=floor)
        else:  # nothing sampled (nothing undecided): the first weighing is the answer
            locs = first[first["probability"] >= floor].reset_index(drop=True)
        return locs, kde_mean, kde_var, samples

    def sample_residuals(self, cond, num_samples, num_inference_steps, generator, batch_size, sampler=None,
                         schedule=None, empty_level: float = -1.0, wanted: torch.Tensor | None = None):
        """Run the reverse diffusion on every (frame, sample, tile) and stitch the tiles.

        ``cond`` is the conditioning in the UNet's working layout (:meth:`conditioning`).
        Tiles whose KDE estimate is empty (nowhere above ``empty_level`` in [-1, 1] units, margin
        included) are not sampled: their residual is zero. With ``wanted`` ([F, h, w] bool on the working
        grid), only the tiles of ``ambiguity_tile`` pixels that hold a wanted pixel are sampled, where that
        is less work than the frame's own tiles. Returns residual samples [F, K, uH, uW] on the KDE grid, in
        the networks' scale, and [F, uH, uW] bool: where a sample was drawn.
        """
        cfg = self.unet.config
        n_frames, _, h, w = cond.shape
        pad_value = layout.condition_pad_values(cfg)
        n_kde = len(pad_value) - int(layout.uses_frame(cfg))
        plan = self.tile_plan(h, w)
        # outside the field the KDE is empty: pad the conditioning with the background level
        padded = plan.pad(cond, pad_value)
        items = plan.jobs(padded[:, :n_kde], num_samples, empty_level)
        if wanted is not None:
            small = self.tile_plan(h, w, self.config.ambiguity_tile)
            picked = small.jobs_where(wanted, num_samples)
            if len(picked) * small.work < len(items) * plan.work:
                plan, items, padded = small, picked, small.pad(cond, pad_value)
        self.scheduler.set_timesteps(num_inference_steps, device=cond.device, schedule=schedule)
        with self.progress_bar(total=math.ceil(len(items) / batch_size) * len(self.scheduler.timesteps)) as bar:
            out = plan.run(padded, items, (n_frames, num_samples, cfg.out_channels), batch_size,
                           lambda tiles: self.denoise(tiles, generator, sampler, bar))
        kde = layout.to_kde(out[..., :h, :w].flatten(0, 1), cfg)  # [F * K, 1, uH, uW]
        u = kde.shape[-1] // w
        covered = plan.covered(items, n_frames).repeat_interleave(u, 1).repeat_interleave(u, 2)
        return kde.reshape(n_frames, num_samples, *kde.shape[-2:]), covered

    def ambiguity_mask(self, molecules: pd.DataFrame, frames_shape, camera: Camera, margin_px: int = 2
                       ) -> torch.Tensor:
        """[F, h, w] bool on the UNet's working grid: ``margin_px`` camera pixels around each of ``molecules``
        (:func:`~smlm_diffusers.pipelines.sampling.ambiguity_mask`)."""
        u = 1 if layout.layout_of(self.unet.config) == "camera" else int(self.kde_net.config.upsampling)
        return sampling.ambiguity_mask(molecules, frames_shape, camera.pixel_size_nm, u, margin_px)

    def sample_detections(self, samples: torch.Tensor, covered: torch.Tensor, localize, margin: int = 8
                          ) -> pd.DataFrame:
        """Localizations of every sample where it was drawn (:func:`~smlm_diffusers.pipelines.sampling.sample_detections`)."""
        return sampling.sample_detections(samples, covered, localize, margin)

    def denoise(self, cond: torch.Tensor, generator=None, sampler=None, bar=None) -> torch.Tensor:
        """Reverse diffusion for one batch of conditioning tiles [B, C, t, t] -> residual
        [B, out_channels, t, t] in the UNet's working layout."""
        shape = (cond.shape[0], self.unet.config.out_channels, *cond.shape[-2:])
        gen_device = generator.device if generator is not None else cond.device
        r = torch.randn(shape, generator=generator, device=gen_device).to(cond.device, self.unet.dtype)
        cond = cond.to(self.unet.dtype)
        for i, tstep in enumerate(self.scheduler.timesteps):
            # channels-last input: oneDNN's convolutions run about 10% faster on CPU (benchmarks/ddpm_sweep.py)
            model_in = torch.cat([r, cond], dim=1).contiguous(memory_format=torch.channels_last)
            pred = self.unet(model_in, tstep.expand(shape[0]).to(cond.device)).sample.float()
            r = self.scheduler.step(pred, i, r, generator=generator, sampler=sampler).prev_sample
            if bar is not None:
                bar.update()
        return r.float()
