"""Recalibrate the DDPM's per-molecule sigmas on simulated validation movies.

    python train/calibrate_uncertainty.py pretrained/smlm-ddpm-2d [--samples 8 --steps 20]
    python train/calibrate_uncertainty.py runs/ddpm_100nm/pipeline --photons 2000,3000 --backgrounds 20,500

The pipeline's sigma per molecule is the small-sample-corrected spread of its positions across
the K samples. If the samples were draws of the true posterior, 68.3% of the errors would fall
within one sigma; a DDPM trained briefly is over- or under-dispersed, and the spread shrinks
with fewer steps. This script runs the pipeline at ``--samples`` x ``--steps`` on validation
movies (seeds 9500+, never the benchmark's; the optics of the model's DeepSTORM config), matches
the molecules to the ground truth, and finds the factor ``s`` for which
``|error| <= s * sigma`` holds for 68.3% of the matched molecules (per axis): the 68.27%
quantile of ``|error| / sigma``. It writes ``sigma_scale = s`` with the samples and steps it
holds for into the folder's ``model_index.json`` and the per-setting table to
``uncertainty_calibration.csv`` (coverage before and after).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import smlm_diffusers as sd
from smlm_diffusers.localization import match

COVERAGE = 0.6827


def floats(text: str) -> tuple[float, ...]:
    """A comma-separated command-line list of numbers."""
    return tuple(float(v) for v in text.split(",") if v.strip())


def load_uncalibrated(folder: Path):
    """The pipeline with ``sigma_scale = 1`` (the raw sample spread), quiet, and the camera of its
    DeepSTORM config (the optics the validation movies are simulated with)."""
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder, sigma_scale=1.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.kde_net.camera


def z_values(pipe, frames, gt, camera, samples, steps, seed) -> pd.DataFrame:
    """Errors over sigma, per axis, of the molecules matched to the ground truth (sigma_scale 1)."""
    out = pipe(frames, num_samples=samples, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
               camera_offset=camera.offset, camera_gain=camera.gain, read_noise=camera.read_noise,
               pixel_size_nm=camera.pixel_size_nm)
    mol = out.localizations.reset_index(drop=True)
    pairs = match(gt.reset_index(drop=True), mol)
    m = mol.iloc[pairs["pred_index"].to_numpy()]
    z = pd.DataFrame({"zx": pairs["dx"].to_numpy() / m["sigma_x_nm"].to_numpy(),
                      "zy": pairs["dy"].to_numpy() / m["sigma_y_nm"].to_numpy()})
    return z[np.isfinite(z).all(axis=1)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="a pipeline folder (written by train_ddpm.py or save_pretrained)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--densities", type=floats, default=(0.5, 2.0, 4.0), help="emitters per um^2")
    p.add_argument("--photons", type=floats, default=(1000.0, 3000.0), help="photons per emitter")
    p.add_argument("--backgrounds", type=floats, default=(20.0,), help="photons per pixel")
    p.add_argument("--frames", type=int, default=3, help="frames per setting")
    p.add_argument("--shape", type=int, default=32, help="frame side, camera pixels (32: one UNet tile)")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the folder")
    args = p.parse_args(argv)

    folder = Path(args.pipeline)
    pipe, camera = load_uncalibrated(folder)
    cfg = pipe.kde_net.config
    settings = list(itertools.product(args.densities, args.photons, args.backgrounds))
    rows, zs = [], []
    for k, (d, ph, bg) in enumerate(settings):
        frames, gt = sd.simulate(n_frames=args.frames, shape=(args.shape, args.shape), density=d, photons=ph,
                                 background=bg, sigma_px=cfg.psf_sigma_px, seed=9500 + k, camera=camera)
        z = z_values(pipe, frames, gt, camera, args.samples, args.steps, seed=k)
        zs.append(z)
        rows.append({"density": d, "photons": ph, "background": bg, "n_molecules": len(z),
                     "coverage_uncalibrated": float((z.abs() <= 1).to_numpy().mean())})
        print(f"density {d:g}, {ph:g} photons, background {bg:g}: {len(z)} molecules, "
              f"coverage {rows[-1]['coverage_uncalibrated']:.3f}", flush=True)
    allz = np.abs(pd.concat(zs).to_numpy().ravel())
    if len(allz) < 50:
        raise SystemExit(f"only {len(allz)} matched molecules with a sigma: simulate more frames (--frames)")
    scale = float(np.quantile(allz, COVERAGE))
    table = pd.DataFrame(rows)
    table["coverage_calibrated"] = [float((z.abs() <= scale).to_numpy().mean()) for z in zs]
    table["sigma_scale"] = scale
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nsigma_scale = {scale:.3f} (coverage {float(np.mean(allz <= 1)):.3f} -> "
          f"{float(np.mean(allz <= scale)):.3f} over {len(allz) // 2} molecules, "
          f"{args.samples} samples x {args.steps} steps)")
    if not args.dry_run:
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index.update(sigma_scale=scale, calibration_samples=args.samples, calibration_steps=args.steps)
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        table.to_csv(folder / "uncertainty_calibration.csv", index=False)
        print(f"wrote {index_path}")
    return scale


if __name__ == "__main__":
    main()
