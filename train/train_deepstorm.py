"""Train the DeepSTORM KDE estimator on frames simulated on the fly.

    accelerate launch train/train_deepstorm.py --config train/configs/deepstorm.yaml
    accelerate launch train/train_deepstorm.py --config ... --resume_from_checkpoint latest

Every hyperparameter lives in the YAML config (``DeepSTORMTrainConfig`` below); the flags
only say where to write, whether to resume and whether to push to the Hub.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler

from smlm_diffusers.kde import KDEScaling
from smlm_diffusers.localization import evaluate, localize_kde, match
from smlm_diffusers.localization.localize3d import z_at
from smlm_diffusers.localization.peaks import DEFAULT_THRESHOLD
from smlm_diffusers.models import DeepSTORM
from smlm_diffusers.training import (
    CSVLogger,
    SimulationRanges,
    resume_from_checkpoint,
    load_config,
    make_training_batch,
    make_validation_set,
    plot_log,
    seeded_generator,
)
from smlm_diffusers.training.config import config_to_dict
from smlm_diffusers.training.loop import train_loop


@dataclass
class DeepSTORMTrainConfig:
    output_dir: str = "runs/deepstorm"
    seed: int = 0
    data: SimulationRanges = field(default_factory=SimulationRanges)
    model: dict = field(default_factory=dict)  # DeepSTORM.__init__ keyword arguments
    init_from: str | None = None  # fine-tune: start from the weights (and architecture) of a saved DeepSTORM
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 200
    max_grad_norm: float = 1.0
    max_steps: int = 3000
    max_minutes: float = 0.0  # time budget of this sitting: stop, checkpoint and export after it (0: none)
    l1_weight: float = 0.0  # optional sparsity term on the KDE in [0, 1] units
    checkpoint_every: int = 250
    checkpoints_total_limit: int = 2
    validate_every: int = 250
    val_frames: int = 16
    val_densities: tuple = (1.0, 2.0, 4.0)
    val_photons: float = 2000.0
    val_background: float = 20.0
    log_every: int = 25
    mixed_precision: str = "no"
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="train/configs/deepstorm.yaml")
    p.add_argument("--output_dir", default=None, help="overrides output_dir of the config")
    p.add_argument("--max_steps", type=int, default=None, help="overrides max_steps of the config")
    p.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    return p.parse_args(argv)


def validate(model, kde_scaling, val_set, threshold, ranges, device) -> dict:
    """Jaccard / RMSE of the current model on the fixed validation frames."""
    metrics = {}
    model.eval()
    with torch.no_grad():
        for density, frames, gt in val_set:
            unit = model.predict(frames, batch_size=8)
            kde = kde_scaling.from_unit(unit[:, :1])
            pred = localize_kde(kde, pixel_size_nm=ranges.camera.pixel_size_nm, upsampling=ranges.upsampling,
                                threshold=threshold, kernel_sigma=ranges.kde_sigma)
            m = evaluate(gt, pred)
            metrics[f"jaccard_d{density:g}"] = m["jaccard"]
            metrics[f"rmse_nm_d{density:g}"] = m["rmse_nm"]
            if ranges.z_scale_nm is not None:  # the z channel, read at the matched molecules
                pairs = match(gt, pred)
                z = z_at(unit, pred.loc[pairs["pred_index"]], ranges.camera.pixel_size_nm, ranges.upsampling,
                         ranges.z_scale_nm, ranges.kde_sigma)
                dz = z - gt["z_nm"].to_numpy()[pairs["gt_index"].to_numpy()]
                metrics[f"rmse_z_nm_d{density:g}"] = float(np.sqrt(np.mean(dz**2))) if len(dz) else float("nan")
            # the HardTanh-floor collapse shows up as a constant output (docs/conventions.md, traps)
            metrics[f"output_std_d{density:g}"] = float(unit.std())
    model.train()
    return metrics


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(DeepSTORMTrainConfig, args.config,
                      {"output_dir": args.output_dir, "max_steps": args.max_steps})
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out)),
    )
    ranges = cfg.data
    cam = ranges.camera
    psf = ranges.psf_model
    camera = dict(camera_offset=cam.offset, camera_gain=cam.gain, read_noise=cam.read_noise,
                  pixel_size_nm=cam.pixel_size_nm, kde_sigma=ranges.kde_sigma,
                  psf_sigma_px=float(np.mean(ranges.sigma_px) if psf is None else psf.sigma_px))
    if ranges.z_scale_nm is not None:  # a 3D PSF: the KDE and its z channel
        camera |= dict(out_channels=2, z_scale_nm=ranges.z_scale_nm)
    if cfg.init_from:
        if cfg.model:
            raise ValueError("give either model (a new network) or init_from (fine-tune a saved one), not both")
        model = DeepSTORM.from_pretrained(cfg.init_from)
        model.register_to_config(**camera)  # the new optics; the architecture and weights are the saved ones
    else:
        model = DeepSTORM(**camera, **cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=cfg.max_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    kde_scaling = KDEScaling(ranges.kde_sigma)

    step = resume_from_checkpoint(accelerator, ckpt_dir, args.resume_from_checkpoint)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train_config.yaml", "w") as fh:
            yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    logger = CSVLogger(out / "train_log.csv", resume=step > 0) if accelerator.is_main_process else None
    val_set = make_validation_set(ranges, cfg.val_densities, cfg.val_frames, photons=cfg.val_photons,
                                  background=cfg.val_background, seed=cfg.seed + 10_000)
    threshold = DEFAULT_THRESHOLD  # a pipeline setting now: train/tune_localization.py tunes it afterwards

    def loss_fn(step: int, micro: int) -> torch.Tensor:
        # data depends only on (seed, step, micro-batch, process): a resumed run sees the same stream
        gen = seeded_generator(cfg.seed, step, micro, accelerator.process_index)
        batch = make_training_batch(ranges, cfg.batch_size, gen)
        x = accelerator.unwrap_model(model).normalize(batch.frames_adu.to(accelerator.device))
        pred = model(x, clamp=False)
        loss = torch.nn.functional.mse_loss(pred, batch.kde_unit.to(accelerator.device))
        if cfg.l1_weight:
            loss = loss + cfg.l1_weight * ((pred + 1) / 2).abs().mean()
        return loss

    train_loop(accelerator, cfg, model, optimizer, lr_scheduler, loss_fn, step, ckpt_dir,
               validate=lambda s: validate(accelerator.unwrap_model(model), kde_scaling, val_set, threshold, ranges,
                                           accelerator.device), logger=logger, desc="DeepSTORM")

    if accelerator.is_main_process:
        final = out / "kde_net"
        accelerator.unwrap_model(model).save_pretrained(final)
        shutil.copy(out / "train_config.yaml", final / "train_config.yaml")
        shutil.copy(out / "train_log.csv", final / "train_log.csv")
        plot_log(out / "train_log.csv", final / "train_log.png",
                 ["loss"] + [f"jaccard_d{d:g}" for d in cfg.val_densities] + [f"rmse_nm_d{d:g}" for d in cfg.val_densities])
        accelerator.print(f"saved {final}")
        if args.push_to_hub:
            from smlm_diffusers.hub import push_folder

            push_folder(final, repo_id=args.hub_model_id or out.name)
    accelerator.end_training()


if __name__ == "__main__":
    main()
