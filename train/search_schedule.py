"""Search a short inference noise schedule (WaveGrad-style grid search) and store it in the scheduler.

    python train/search_schedule.py pretrained/smlm-ddpm-2d --steps 8

Few sampling steps are what makes the DDPM affordable on a CPU, and with few steps where the
noise levels sit matters. Candidates are K noise levels spaced in log-SNR between ``lo`` and
``hi``, ``lambda_i = lo + (hi - lo) u_i^p`` with u evenly spaced in [0, 1] (``p`` < 1 spends
the steps at low noise, > 1 at high noise). Each runs the pipeline on validation movies
(seeds 9700+, never the benchmark's; the optics of the model's DeepSTORM config) and is scored
by ``efficiency - 100 |coverage - 0.683|`` of its molecules (coverage of the uncalibrated,
``sigma_scale = 1`` sigmas), so a schedule must localize well *and* spread its samples as
the errors spread. The best one is written to ``scheduler/scheduler_config.json`` as
``searched_gammas``, used with ``pipe(..., num_inference_steps=K, schedule="searched")``;
the table of candidates goes to ``scheduler/schedule_search.csv``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import smlm_diffusers as sd


def floats(text: str) -> tuple[float, ...]:
    """A comma-separated command-line list of numbers."""
    return tuple(float(v) for v in text.split(",") if v.strip())


def load_uncalibrated(folder: Path):
    """The pipeline of ``folder``, quiet, and the camera of its DeepSTORM config (the optics the validation
    movies are simulated with)."""
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.kde_net.camera


def candidate_gammas(steps: int, lo: float, hi: float, power: float) -> list[float]:
    """K noise levels gamma = sigmoid(lambda), high noise (low lambda) first."""
    u = np.linspace(0.0, 1.0, steps)
    lam = lo + (hi - lo) * u**power
    return [float(v) for v in 1.0 / (1.0 + np.exp(-lam))]


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def score(efficiency: float, coverage: float) -> float:
    return efficiency - 100.0 * abs(coverage - 0.6827) if math.isfinite(coverage) else -math.inf


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="a pipeline folder")
    p.add_argument("--steps", type=int, default=8, help="K, the schedule's number of steps (default 8)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--lo", type=floats, default=(-10.0,), help="log-SNR of the first step(s), comma separated")
    p.add_argument("--hi", type=floats, default=(4.0, 7.0, 10.0), help="log-SNR of the last step(s)")
    p.add_argument("--power", type=floats, default=(0.5, 1.0, 2.0), help="spacing exponent(s) p")
    p.add_argument("--densities", type=floats, default=(2.0, 4.0))
    p.add_argument("--photons", type=float, default=2000.0)
    p.add_argument("--background", type=float, default=20.0)
    p.add_argument("--frames", type=int, default=1, help="frames per density")
    p.add_argument("--shape", type=int, default=32)
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the scheduler config")
    args = p.parse_args(argv)

    folder = Path(args.pipeline)
    pipe, camera = load_uncalibrated(folder)
    cfg = pipe.kde_net.config
    movies = [sd.simulate(n_frames=args.frames, shape=(args.shape, args.shape), density=d, photons=args.photons,
                          background=args.background, sigma_px=cfg.psf_sigma_px, seed=9700 + k, camera=camera)
              for k, d in enumerate(args.densities)]
    rows = []
    for lo, hi, power in itertools.product(args.lo, args.hi, args.power):
        gammas = candidate_gammas(args.steps, lo, hi, power)
        pipe.scheduler.register_to_config(searched_gammas=gammas)
        t0 = time.perf_counter()
        metrics = []
        for k, (frames, gt) in enumerate(movies):
            out = pipe(frames, num_samples=args.samples, num_inference_steps=args.steps, schedule="searched",
                       generator=torch.Generator().manual_seed(k), camera=camera)
            metrics.append(sd.evaluate(gt, out.localizations))
        row = {"lo": lo, "hi": hi, "power": power,
               **{m: _mean([x.get(m, math.nan) for x in metrics])
                  for m in ("jaccard", "rmse_nm", "efficiency", "coverage_1sigma")},
               "seconds": time.perf_counter() - t0, "gammas": json.dumps([round(g, 8) for g in gammas])}
        row["score"] = score(row["efficiency"], row["coverage_1sigma"])
        rows.append(row)
        print(f"lo {lo:g} hi {hi:g} p {power:g}: J={row['jaccard']:.3f} RMSE={row['rmse_nm']:.1f} nm "
              f"coverage={row['coverage_1sigma']:.3f} score={row['score']:.1f}", flush=True)
    table = pd.DataFrame(rows).sort_values("score", ascending=False)
    print(table.drop(columns="gammas").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    best = table.iloc[0]
    print(f"\nbest: lo={best.lo:g} hi={best.hi:g} power={best.power:g} (score {best.score:.1f})")
    if not args.dry_run:
        path = folder / "scheduler" / "scheduler_config.json"
        config = json.loads(path.read_text())
        config["searched_gammas"] = json.loads(best.gammas)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        table.to_csv(folder / "scheduler" / "schedule_search.csv", index=False)
        print(f"wrote {path}")
    return table


if __name__ == "__main__":
    main()
