"""Train the conditional DDPM on (true KDE, DeepSTORM KDE) pairs simulated on the fly.

    accelerate launch train/train_ddpm.py --config train/configs/ddpm.yaml
    accelerate launch train/train_ddpm.py --config ... --resume_from_checkpoint latest

DeepSTORM is loaded from ``kde_net_path`` and frozen. The UNet learns the residual
``r = y - y_hat`` around its estimate (v- or epsilon-prediction, per the scheduler config),
conditioned on ``y_hat`` (and the frame) by channel concatenation and on the continuous noise
level gamma. ``layout: camera`` (v2) runs the UNet at camera resolution on the
pixel-unshuffled KDE, ``layout: kde`` (v1) at the KDE resolution; the UNet input is built by
``smlm_diffusers.models.layout``, the functions the pipeline uses, from pairs of
``smlm_diffusers.training.pairs``. The result is a complete pipeline folder
(``<output_dir>/pipeline``) with EMA weights.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from smlm_diffusers import DeepSTORM, GammaDDPMScheduler, SMLMDiffusionPipeline
from smlm_diffusers.localization import evaluate
from smlm_diffusers.models import layout
from smlm_diffusers.training.pairs import PairPool
from smlm_diffusers.training import (
    CSVLogger,
    SimulationRanges,
    resume_from_checkpoint,
    load_config,
    make_validation_set,
    plot_log,
    seeded_generator,
)
from smlm_diffusers.training.config import config_to_dict
from smlm_diffusers.training.data import check_kde_net_optics
from smlm_diffusers.training.loop import train_loop
from smlm_diffusers.training.noise import TimestepBias, sample_training_gammas
from smlm_diffusers.training.validation import hard_validation_loss, make_hard_validation_set


@dataclass
class DDPMTrainConfig:
    output_dir: str = "runs/ddpm"
    kde_net_path: str = "pretrained/smlm-ddpm-2d/kde_net"
    seed: int = 0
    data: SimulationRanges = field(default_factory=lambda: SimulationRanges(patch_size=24))
    layout: str = "kde"  # "camera": the UNet at camera resolution on the pixel-unshuffled KDE (v2)
    crop_size: int = 64  # UNet training crops, in pixels of its working grid (KDE px for "kde", camera px for "camera")
    crop_edge_px: int = 0  # crops may reach this many camera pixels past the simulated patch (frame edges)
    pool_size: int = 0  # pairs kept and reused (training.pairs.PairPool); 0: a fresh batch every step
    pool_refresh: int = 0  # pairs of the pool renewed every step
    mine_share: float = 0.0  # of each batch drawn where DeepSTORM disagrees most, cropped around it (pairs.py)
    mine_window_px: int = 3  # camera pixels (a square) the disagreement is summed over
    timestep_bias: TimestepBias = field(default_factory=TimestepBias)  # noise levels near inference's (noise.py); off
    augment: bool = False  # random symmetry of the square per crop
    unet: dict = field(default_factory=dict)  # UNet2DModel keyword arguments
    init_from: str | None = None  # fine-tune: start from a saved UNet (a pipeline folder or its unet/ folder)
    condition_on_frame: bool = False  # third UNet channel: bicubic-upsampled frame
    scheduler: dict = field(default_factory=dict)  # GammaDDPMScheduler keyword arguments
    pipeline: dict = field(default_factory=dict)  # SMLMDiffusionPipeline settings
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 200
    max_grad_norm: float = 1.0
    max_steps: int = 3000
    max_minutes: float = 0.0  # time budget of this sitting: stop, checkpoint and export after it (0: none)
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    checkpoints_total_limit: int = 2
    validate_every: int = 500
    val_frames: int = 2
    val_shape: tuple = (32, 32)
    val_densities: tuple = (1.0, 4.0)
    val_photons: float = 2000.0
    val_background: float = 20.0
    val_samples: int = 4
    val_steps: int = 20
    val_hard_crops: int = 0  # held-out hard crops, their denoising loss logged as val_hard_loss (validation.py)
    log_every: int = 25
    mixed_precision: str = "no"
    num_threads: int = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="train/configs/ddpm.yaml")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--kde_net_path", default=None)
    p.add_argument("--max_minutes", "--max-minutes", type=float, default=None,
                   help="time budget of this sitting: stop, checkpoint and export the EMA pipeline after it")
    p.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    return p.parse_args(argv)


def validate(pipe: SMLMDiffusionPipeline, cfg: DDPMTrainConfig, val_set, out_dir: Path, step: int,
             hard_set=None) -> dict:
    """Metrics of the sample mean and calibration on the fixed validation frames, plus an image grid;
    with ``hard_set``, first the denoising loss on the held-out hard crops (``val_hard_loss``)."""
    metrics = hard_validation_loss(pipe.unet, pipe.scheduler, hard_set) if hard_set is not None else {}
    grid = []
    for density, frames, gt in val_set:
        gen = torch.Generator().manual_seed(cfg.seed)
        o = pipe(frames, num_samples=cfg.val_samples, num_inference_steps=cfg.val_steps, generator=gen,
                 min_probability=0.5)
        m = evaluate(gt, o.localizations)
        ds = evaluate(gt, pipe(frames, num_samples=0).localizations)
        metrics |= {f"jaccard_d{density:g}": m["jaccard"], f"rmse_nm_d{density:g}": m["rmse_nm"],
                    f"deepstorm_jaccard_d{density:g}": ds["jaccard"], f"deepstorm_rmse_nm_d{density:g}": ds["rmse_nm"],
                    f"coverage_d{density:g}": m.get("coverage_1sigma", float("nan"))}
        grid.append((density, o.deepstorm_kde[0], o.samples[0, :2], o.kde_mean[0], o.kde_var[0]))
    save_grid(grid, out_dir / f"val_step{step:06d}.png")
    return metrics


def save_grid(rows, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(12, 2.6 * len(rows)), squeeze=False)
    for ax_row, (density, ds, samples, mean, var) in zip(axes, rows):
        for ax, img, title in zip(ax_row, [ds, *samples, mean, var],
                                  ["DeepSTORM", "sample 1", "sample 2", "mean", "variance"]):
            ax.imshow(img, cmap="magma" if title != "variance" else "viridis")
            ax.set_title(f"{title} (d={density:g})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(DDPMTrainConfig, args.config, {"output_dir": args.output_dir, "max_steps": args.max_steps,
                                                     "kde_net_path": args.kde_net_path,
                                                     "max_minutes": args.max_minutes})
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              mixed_precision=cfg.mixed_precision,
                              project_config=ProjectConfiguration(project_dir=str(out)))
    kde_net = DeepSTORM.from_pretrained(cfg.kde_net_path).to(accelerator.device).eval().requires_grad_(False)
    check_kde_net_optics(cfg.data, kde_net)  # the training data must come from DeepSTORM's optics
    in_channels, out_channels = layout.unet_channels(cfg.layout, cfg.data.upsampling, cfg.condition_on_frame)
    if cfg.init_from:
        if cfg.unet:
            raise ValueError("give either unet (a new network) or init_from (fine-tune a saved one), not both")
        source = Path(cfg.init_from)
        unet = UNet2DModel.from_pretrained(source / "unet" if (source / "unet").is_dir() else source)
        if (unet.config.in_channels, unet.config.out_channels) != (in_channels, out_channels):
            raise ValueError(f"{cfg.init_from} has {unet.config.in_channels} input and {unet.config.out_channels} "
                             f"output channels; layout={cfg.layout!r}, condition_on_frame={cfg.condition_on_frame} "
                             f"needs {in_channels} and {out_channels}")
    else:
        unet = UNet2DModel(sample_size=cfg.crop_size, in_channels=in_channels, out_channels=out_channels, **cfg.unet)
    scheduler = GammaDDPMScheduler(**cfg.scheduler)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=cfg.max_steps)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(ema)

    step = resume_from_checkpoint(accelerator, ckpt_dir, args.resume_from_checkpoint)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train_config.yaml", "w") as fh:
            yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
        gt_T = scheduler.gamma_T
        accelerator.print(f"training schedule: gamma_T = {gt_T:.3g}, L_T = {scheduler.prior_kl_bits():.3g} bits/dim")
    logger = CSVLogger(out / "train_log.csv", resume=step > 0) if accelerator.is_main_process else None
    val_set = make_validation_set(cfg.data, cfg.val_densities, cfg.val_frames, shape=cfg.val_shape,
                                  photons=cfg.val_photons, background=cfg.val_background, seed=cfg.seed + 10_000)

    def pipeline(use_ema: bool) -> SMLMDiffusionPipeline:
        net = accelerator.unwrap_model(unet)
        if use_ema:
            net = UNet2DModel.from_config(net.config)
            ema.copy_to(net.parameters())
        pipe = SMLMDiffusionPipeline(kde_net, net.eval(), scheduler, **cfg.pipeline)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # the pool is drawn from (seed, step, rank): a resumed run rebuilds one like it
    pool = PairPool(cfg.data, kde_net, cfg.pool_size, cfg.pool_refresh,
                    seeded_generator(cfg.seed, step, 10**6, accelerator.process_index),
                    mine_share=cfg.mine_share, mine_window_px=cfg.mine_window_px)
    crop_px = cfg.crop_size if cfg.layout == "camera" else cfg.crop_size // cfg.data.upsampling
    hard_set = None
    if cfg.val_hard_crops and accelerator.is_main_process:
        hard_set = make_hard_validation_set(cfg.data, kde_net, cfg.val_hard_crops, crop_px, scheduler,
                                            cfg.timestep_bias.steps, window_px=cfg.mine_window_px)
        if step == 0:  # where the sitting starts (init_from's weights are the EMA's)
            row = {"step": 0} | hard_validation_loss(pipeline(use_ema=True).unet, scheduler, hard_set)
            logger.log(row)
            accelerator.print(f"val_hard_loss at the start: {row['val_hard_loss']:.5f}")

    def loss_fn(step: int, micro: int) -> torch.Tensor:
        # noise and gamma depend only on (seed, step, micro-batch, process): a resumed run draws the same
        gen = seeded_generator(cfg.seed, step, micro, accelerator.process_index)
        y, y_hat, frame_norm = pool.batch(cfg.batch_size, crop_px, cfg.crop_edge_px, cfg.augment)
        net_config = accelerator.unwrap_model(unet).config
        cond = layout.condition_channels(y_hat, frame_norm, net_config)
        r0 = layout.to_working(y - y_hat, net_config)
        noise = torch.randn(r0.shape, generator=gen).to(accelerator.device)
        gamma = sample_training_gammas(scheduler, r0.shape[0], gen, cfg.timestep_bias, accelerator.device)
        r_t = scheduler.add_noise(r0, noise, gamma)
        pred = unet(torch.cat([r_t, cond], dim=1), scheduler.noise_level_embedding(gamma)).sample
        return torch.nn.functional.mse_loss(pred.float(), scheduler.training_target(r0, noise, gamma))

    train_loop(accelerator, cfg, unet, optimizer, lr_scheduler, loss_fn, step, ckpt_dir, ema=ema,
               validate=lambda s: validate(pipeline(use_ema=True), cfg, val_set, out / "samples", s, hard_set),
               logger=logger, desc="DDPM", validate_at_stop=True)

    if accelerator.is_main_process:
        final = out / "pipeline"
        pipeline(use_ema=True).save_pretrained(final)
        for name in ("train_config.yaml", "train_log.csv"):
            shutil.copy(out / name, final / "unet" / name)
        # DeepSTORM's own training record travels with it (save_pretrained writes weights only)
        for name in ("train_config.yaml", "train_log.csv", "train_log.png", "localization_tuning.csv"):
            if (Path(cfg.kde_net_path) / name).is_file():
                shutil.copy(Path(cfg.kde_net_path) / name, final / "kde_net" / name)
        cols = ["loss", "val_hard_loss"] + [f"{m}_d{d:g}" for m in ("jaccard", "rmse_nm", "coverage")
                                             for d in cfg.val_densities]
        plot_log(out / "train_log.csv", final / "unet" / "train_log.png", cols)
        accelerator.print(f"saved {final}")
        if args.push_to_hub:
            from smlm_diffusers.hub import DEFAULT_RESULTS, push_folder, write_model_card

            repo_id = args.hub_model_id or out.name
            results = Path(DEFAULT_RESULTS)  # the card's evaluation section, when the benchmark has run
            card = write_model_card(final, results=results if results.is_file() else None, repo_id=repo_id,
                                    results_hint=DEFAULT_RESULTS)
            accelerator.print(f"wrote {card}")
            push_folder(final, repo_id=repo_id)
    accelerator.end_training()


if __name__ == "__main__":
    main()
