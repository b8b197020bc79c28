"""A held-out hard validation for the DDPM: its denoising loss on fixed crops where DeepSTORM is unsure.

The crops are simulated with every patch holding clusters (:mod:`.hard`, ``fraction`` 1), from a
seed no training sitting uses, and cut around each patch's largest disagreement between the
true KDE and DeepSTORM's (:func:`~.pairs.disagreement`), so they hold the cases the DDPM exists
for. The loss is the training objective at a few fixed noise levels (those the default
inference schedule visits) with fixed noise: the same numbers for every model and every step,
so a run is judged by how it moves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..models import layout
from .data import SimulationRanges
from .noise import inference_gammas
from .pairs import crop_pairs, disagreement, offsets_holding, simulate_pairs

HARD_VAL_SEED = 3_141_592  # no training sitting draws from it (their seeds are small integers per step)


@dataclass
class HardValidationSet:
    y: torch.Tensor  # [n, C, fc, fc] true KDE crops, [-1, 1] units
    y_hat: torch.Tensor  # DeepSTORM's
    frame: torch.Tensor  # [n, 1, c, c] normalized frame
    gammas: torch.Tensor  # [L] the fixed noise levels
    noise: torch.Tensor  # [L, n, ...] fixed noise in the UNet's working layout, filled on first use


def make_hard_validation_set(ranges: SimulationRanges, kde_net, n: int, crop_px: int, scheduler, steps: int = 4,
                             seed: int = HARD_VAL_SEED, window_px: int = 3) -> HardValidationSet:
    """``n`` crops of ``crop_px`` camera pixels around the hardest place of patches full of clusters,
    and the ``steps`` noise levels of the default inference schedule."""
    hard = dataclasses.replace(ranges.hard, fraction=1.0)
    gen = torch.Generator().manual_seed(seed)
    y, y_hat, frame = simulate_pairs(dataclasses.replace(ranges, hard=hard), kde_net, n, gen)
    _, peak = disagreement(y, y_hat, ranges.upsampling, window_px)
    offsets = offsets_holding(peak, crop_px, frame.shape[-1], 0, window_px // 2, gen)
    y, y_hat, frame = crop_pairs(y, y_hat, frame, crop_px, ranges.upsampling, 0, gen, False, offsets)
    return HardValidationSet(y, y_hat, frame, inference_gammas(scheduler, steps), torch.empty(0))


@torch.no_grad()
def hard_validation_loss(unet, scheduler, val: HardValidationSet, chunk: int = 64) -> dict[str, float]:
    """``val_hard_loss`` (the mean over crops and levels) and one ``val_hard_loss_logsnr<level>`` per level."""
    device = unet.device
    cond = layout.condition_channels(val.y_hat.to(device), val.frame.to(device), unet.config)
    r0 = layout.to_working((val.y - val.y_hat).to(device), unet.config)
    if val.noise.shape[:2] != (len(val.gammas), r0.shape[0]):
        gen = torch.Generator().manual_seed(HARD_VAL_SEED + 1)
        val.noise = torch.randn((len(val.gammas), *r0.shape), generator=gen)
    was_training = unet.training
    unet.eval()
    out, losses = {}, []
    for g, noise in zip(val.gammas, val.noise):
        total = 0.0
        for s in range(0, r0.shape[0], chunk):
            r, eps = r0[s:s + chunk], noise[s:s + chunk].to(device)
            gamma = torch.full((r.shape[0],), float(g), device=device)
            pred = unet(torch.cat([scheduler.add_noise(r, eps, gamma), cond[s:s + chunk]], dim=1),
                        scheduler.noise_level_embedding(gamma)).sample
            target = scheduler.training_target(r, eps, gamma)
            total += float(torch.nn.functional.mse_loss(pred.float(), target, reduction="sum"))
        loss = total / r0.numel()
        losses.append(loss)
        out[f"val_hard_loss_logsnr{float(torch.logit(g.double())):.1f}"] = loss
    unet.train(was_training)
    return {"val_hard_loss": sum(losses) / len(losses)} | out
