"""Accuracy against time of the DDPM: steps x samples x schedule, per 64x64 frame.

    python -m benchmarks.ddpm_sweep --out benchmarks/results
    python -m benchmarks.ddpm_sweep --model pretrained/smlm-ddpm-2d,pretrained/smlm-ddpm-2d-v1 \
        --steps 8,20 --samples 8 --csv models.csv    # several models on the same frames (v2 against v1)

For every (steps, samples, schedule) it samples the same simulated 64x64 frames (density 2
per square micrometre, 2000 photons, background 20; seeds 5000+, not the main benchmark's)
and reports Jaccard, RMSE and efficiency of the molecules, their 1-sigma coverage and std of
z with the folder's calibrated sigma and with the raw sample spread (``coverage_raw``,
``z_std_raw``: sigma = the small-sample corrected spread of the positions across the samples),
and seconds per frame (wall time of the pipeline call / frames). DeepSTORM alone (with the
folder's frame refinement, if on) is the first row. Writes ``ddpm_sweep.csv`` (``--csv``); with several models (comma separated) each
gets its rows, marked in a ``model`` column, all on the same frames.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

import smlm_diffusers as sd

from .model_localizers import DEFAULT_MODEL
from .sidecar import write_sidecar


def sweep(model: str, steps=(5, 10, 20, 50, 100), samples=(4, 8), schedules=("logsnr",), n_frames: int = 2,
          density: float = 2.0, seed: int = 5000, mixed_precision: str = "auto"
          ) -> pd.DataFrame:
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.kde_net.config
    camera = pipe.kde_net.camera
    frames, gt = sd.simulate(n_frames=n_frames, density=density, photons=2000.0, background=20.0,
                             sigma_px=cfg.psf_sigma_px, seed=seed, camera=camera)
    rows = []
    t0 = time.perf_counter()
    base = pipe(frames, num_samples=0, arbitrate=False)  # plain DeepSTORM mode, the row's name
    rows.append({"method": "DeepSTORM", "schedule": "", "steps": 0, "samples": 0,
                 "s_per_frame": (time.perf_counter() - t0) / n_frames, **_metrics(gt, base.localizations)})
    for schedule, n_steps, k in itertools.product(schedules, steps, samples):
        t0 = time.perf_counter()
        out = pipe(frames, num_samples=k, num_inference_steps=n_steps, schedule=schedule,
                   generator=torch.Generator().manual_seed(seed), mixed_precision=mixed_precision)
        row = {"method": "DDPM", "schedule": schedule, "steps": n_steps, "samples": k,
               "s_per_frame": (time.perf_counter() - t0) / n_frames, **_metrics(gt, out.localizations)}
        print(" ".join(f"{c}={v:.4g}" if isinstance(v, float) else f"{c}={v}" for c, v in row.items()), flush=True)
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics(gt, locs) -> dict:
    m = sd.evaluate(gt, locs)
    row = {k: m.get(k, float("nan")) for k in ("jaccard", "rmse_nm", "efficiency", "coverage_1sigma", "z_std")}
    if {"spread_x_nm", "spread_y_nm"} <= set(locs.columns):  # DDPM rows: the raw sample spread as sigma
        raw = sd.evaluate(gt, locs.assign(sigma_x_nm=locs["spread_x_nm"], sigma_y_nm=locs["spread_y_nm"]))
        row |= {"coverage_raw": raw.get("coverage_1sigma", float("nan")), "z_std_raw": raw.get("z_std", float("nan"))}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="pipeline folder(s) or Hub id(s), comma separated")
    p.add_argument("--steps", default="5,10,20,50,100")
    p.add_argument("--samples", default="4,8")
    p.add_argument("--schedules", default="logsnr")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--density", type=float, default=2.0)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "no"],
                   help="auto: bf16 where the hardware runs it natively, else float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--csv", default="ddpm_sweep.csv", help="file name of the table in --out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ints = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    tables = []
    for model in models:
        t = sweep(model, ints(args.steps), ints(args.samples), tuple(args.schedules.split(",")), args.frames,
                  args.density, mixed_precision=args.mixed_precision)
        tables.append(t.assign(model=Path(model).name) if len(models) > 1 else t)
    table = pd.concat(tables, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / args.csv, index=False)
    write_sidecar(out / args.csv, "benchmarks.ddpm_sweep", argv, frames=args.frames, density=args.density,
                  threads=torch.get_num_threads())
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / args.csv}")


if __name__ == "__main__":
    main()
