"""Held-out denoising loss of DDPM UNets: which of several weights is better trained.

    python train/eval_ddpm_loss.py pretrained/smlm-ddpm-2d runs/ddpm_v2c/pipeline \
        --config train/configs/ddpm_v2.yaml --pairs 2048

The training objective (the v- or epsilon-prediction MSE of ``train/train_ddpm.py``) on
simulated pairs that no training sitting draws (their own seed), with the same noise and noise
levels for every model, so the differences between models are paired and their standard error
is small: a sampling benchmark on a few frames cannot tell two sittings of the same model
apart, this can. The data, crops and layout come from ``--config`` (a DDPM training config);
every folder must hold the same DeepSTORM, the one the pairs are made with. Prints the loss per
model, overall and per log-SNR band, and its paired difference from the first model (with
the standard error); ``--csv`` writes the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import UNet2DModel

from smlm_diffusers import DeepSTORM, GammaDDPMScheduler
from smlm_diffusers.models import layout
from smlm_diffusers.training import load_config
from smlm_diffusers.training.pairs import crop_pairs, simulate_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_ddpm import DDPMTrainConfig  # noqa: E402

HELD_OUT_SEED = 2_718_281  # no training sitting uses it (their seeds are small integers per step)
BANDS = (-np.inf, -5.0, -1.0, 3.0, 7.0, np.inf)  # log-SNR bands of the report


def held_out_batch(cfg: DDPMTrainConfig, kde_net: DeepSTORM, scheduler: GammaDDPMScheduler, n: int, seed: int):
    """``n`` crops (as training draws them, without augmentation), noise and noise levels."""
    gen = torch.Generator().manual_seed(seed)
    parts = [simulate_pairs(cfg.data, kde_net, min(256, n - s), gen) for s in range(0, n, 256)]
    y, y_hat, frame = (torch.cat(p) for p in zip(*parts))
    crop_px = cfg.crop_size if cfg.layout == "camera" else cfg.crop_size // cfg.data.upsampling
    y, y_hat, frame = crop_pairs(y, y_hat, frame, crop_px, cfg.data.upsampling, cfg.crop_edge_px, gen)
    gamma = scheduler.sample_gammas(n, generator=gen)
    return y, y_hat, frame, gamma, gen


@torch.no_grad()
def per_item_loss(unet: UNet2DModel, scheduler: GammaDDPMScheduler, y, y_hat, frame, gamma, noise,
                  batch_size: int = 64) -> np.ndarray:
    """The training loss of every item (mean over its pixels)."""
    losses = []
    for s in range(0, len(y), batch_size):
        sl = slice(s, s + batch_size)
        cond = layout.condition_channels(y_hat[sl], frame[sl], unet.config)
        r0 = layout.to_working(y[sl] - y_hat[sl], unet.config)
        r_t = scheduler.add_noise(r0, noise[sl], gamma[sl])
        pred = unet(torch.cat([r_t, cond], dim=1), scheduler.noise_level_embedding(gamma[sl])).sample
        target = scheduler.training_target(r0, noise[sl], gamma[sl])
        losses.append(((pred.float() - target) ** 2).flatten(1).mean(1).numpy())
    return np.concatenate(losses)


def evaluate_models(folders: list[str], cfg: DDPMTrainConfig, n_pairs: int, seed: int = HELD_OUT_SEED
                    ) -> pd.DataFrame:
    """One row per model: mean loss, its standard error, the paired difference from the first
    model with its standard error, and the mean loss per log-SNR band."""
    kde_net = DeepSTORM.from_pretrained(Path(folders[0]) / "kde_net").eval()
    scheduler = GammaDDPMScheduler(**cfg.scheduler)
    y, y_hat, frame, gamma, gen = held_out_batch(cfg, kde_net, scheduler, n_pairs, seed)
    logsnr = (torch.log(gamma) - torch.log1p(-gamma)).numpy()
    band = np.digitize(logsnr, BANDS[1:-1])
    rows, first = [], None
    for folder in folders:
        other = DeepSTORM.from_pretrained(Path(folder) / "kde_net")
        if any(not torch.equal(a, b) for a, b in zip(kde_net.state_dict().values(), other.state_dict().values())):
            raise SystemExit(f"{folder} holds another DeepSTORM than {folders[0]}: its pairs would differ")
        unet = UNet2DModel.from_pretrained(Path(folder) / "unet").eval()
        noise_shape = (n_pairs, unet.config.out_channels, *layout.to_working(y[:1], unet.config).shape[-2:])
        noise = torch.randn(noise_shape, generator=torch.Generator().manual_seed(seed + 1))
        loss = per_item_loss(unet, scheduler, y, y_hat, frame, gamma, noise)
        first = loss if first is None else first
        diff = loss - first
        row = {"model": str(folder), "loss": loss.mean(), "loss_se": loss.std(ddof=1) / np.sqrt(len(loss)),
               "diff_from_first": diff.mean(), "diff_se": diff.std(ddof=1) / np.sqrt(len(diff))}
        for b in range(len(BANDS) - 1):
            row[f"loss_logsnr_{BANDS[b]:g}_{BANDS[b + 1]:g}"] = loss[band == b].mean() if (band == b).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="pipeline folders (or training runs' pipeline/ folders)")
    p.add_argument("--config", default="train/configs/ddpm_v2.yaml", help="the DDPM training config of the data")
    p.add_argument("--pairs", type=int, default=2048, help="held-out crops (default 2048)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    p.add_argument("--csv", type=Path, help="write the table here")
    args = p.parse_args(argv)
    cfg = load_config(DDPMTrainConfig, args.config, {})
    table = evaluate_models(args.folders, cfg, args.pairs, args.seed)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
