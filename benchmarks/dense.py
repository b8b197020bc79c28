"""Found molecules against their multi-emitter bound, calibration and detection probability, both modes.

    python -m benchmarks.dense [--frames 10] [--densities 0.5,1,2,4] [--samples 8] [--steps N] [--quick]
                               [--modes DeepSTORM,DeepSTORM+arb,DDPM] [--signals 2000/20,1000/50] [--no-isolated]
                               [--model pretrained/smlm-ddpm-2d] [--out benchmarks/results]

For each signal level (2000 photons / background 20 and 1000 / 50) and density, ``--frames`` simulated
64x64 frames (seeds 7100 + ..., independent of every training and tuning seed) are localized in DeepSTORM
mode (``num_samples=0``), in DeepSTORM mode with its own arbitration (``deepstorm_arbitrate``: the
refinement's molecules tried as pairs, weighed as in DDPM mode) and in DDPM mode (the folder's default steps); isolated emitters (a jittered 16 px
grid) at 500 / 1000 / 5000 photons are scored the same way. Per molecule matched to the truth (250 nm,
Hungarian per frame, molecules with probability >= 0.5):

- ``rms_bound`` / ``median_bound``: RMS of error / sqrt(CRLB) per axis, and median |error / sqrt(CRLB)| over
  0.6745 (both 1 at the bound), the CRLB being that of the *true configuration* of its frame: x, y and
  photons of every emitter and the background estimated jointly
  (:func:`smlm_diffusers.fisher.crlb_configuration`, docs/conventions.md "Dense precision");
- ``cov1`` / ``cov2``, ``std_z``, ``z_gt3``: calibration of the reported sigma, z = error / sigma per axis;
- ``cov1_near`` / ``z_gt3_near`` and ``cov1_far`` / ``z_gt3_far``: the same over true emitters with another
  within ``NEAR_NM`` (300 nm) in their frame and over the rest (the crowding tail), ``share_near`` their share
  of the matches;
- ``ece``: expected calibration error of ``probability`` over 10 equal bins, every reported molecule
  (down to the table's floor) matched to the truth on its own;
- ``s_per_frame``: wall time of the pipeline call per frame.

Writes ``dense.csv`` (and its command beside it) in ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_configuration
from smlm_diffusers.localization import match

from .model_localizers import DEFAULT_MODEL
from .sidecar import write_sidecar

SIGNALS = ((2000.0, 20.0), (1000.0, 50.0))
ISOLATED = (500.0, 1000.0, 5000.0)
# (name, samples: 0 or 1 x --samples, DeepSTORM mode's own arbitration)
MODES = (("DeepSTORM", 0, False), ("DeepSTORM+arb", 0, True), ("DDPM", 1, False))
NEAR_NM = 300.0  # a true emitter with another this close is "crowded"


def nearest_neighbour(gt: pd.DataFrame) -> np.ndarray:
    """Distance (nm) from each row of ``gt`` to the nearest other emitter of its frame (inf if alone)."""
    out = np.full(len(gt), np.inf)
    frame, xy = gt["frame"].to_numpy(), gt[["x_nm", "y_nm"]].to_numpy(np.float64)
    for f in np.unique(frame):
        rows = np.flatnonzero(frame == f)
        if len(rows) > 1:
            d = np.hypot(*(xy[rows, None, :] - xy[None, rows, :]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            out[rows] = d.min(1)
    return out


def configuration_bounds(gt: pd.DataFrame, shape, sigma_px: float, camera: sd.Camera) -> pd.DataFrame:
    """``gt`` with ``crlb_x_nm2`` / ``crlb_y_nm2``: each emitter's bound in its frame's true configuration."""
    a = float(camera.pixel_size_nm)
    out = []
    for _, g in gt.groupby("frame", sort=True):
        cx, cy = crlb_configuration(g["x_nm"] / a, g["y_nm"] / a, g["photons"], float(g["background"].iloc[0]),
                                    shape, sigma_px, camera)
        out.append(g.assign(crlb_x_nm2=cx, crlb_y_nm2=cy))
    return pd.concat(out) if out else gt.assign(crlb_x_nm2=[], crlb_y_nm2=[])


def _calibration(z: np.ndarray, suffix: str = "") -> dict:
    """Coverage of 1 sigma and the share |z| > 3 of per-axis z scores (nan where there are none)."""
    if len(z) == 0:
        return {f"cov1{suffix}": np.nan, f"z_gt3{suffix}": np.nan}
    return {f"cov1{suffix}": float(np.mean(np.abs(z) <= 1)), f"z_gt3{suffix}": float(np.mean(np.abs(z) > 3))}


def expected_calibration_error(gt: pd.DataFrame, pred: pd.DataFrame, tolerance_nm: float = 250.0,
                               bins: int = 10) -> float:
    """ECE of ``pred.probability``: every row matched to the truth (Hungarian per frame); per equal-width
    bin of the probability, |fraction matched - mean probability|, weighted by the bin's share of rows."""
    if len(pred) == 0 or "probability" not in pred:
        return float("nan")
    pred = pred.reset_index(drop=True)
    hit = np.zeros(len(pred), bool)
    hit[match(gt, pred, tolerance_nm)["pred_index"].to_numpy()] = True
    p = pred["probability"].to_numpy(np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            err += sel.mean() * abs(hit[sel].mean() - p[sel].mean())
    return float(err)


def score(gt: pd.DataFrame, pred: pd.DataFrame, min_probability: float = 0.5) -> dict:
    """Jaccard, the bound ratios, calibration and ECE of one table (module docstring)."""
    m = sd.evaluate(gt, pred, min_probability=min_probability)
    kept = pred[pred["probability"] >= min_probability].reset_index(drop=True) if "probability" in pred else pred
    pairs = match(gt, kept, 250.0)
    g = gt.iloc[pairs["gt_index"].to_numpy()]
    q = kept.iloc[pairs["pred_index"].to_numpy()]
    dx, dy = pairs["dx"].to_numpy(), pairs["dy"].to_numpy()
    zb = np.r_[dx / np.sqrt(g["crlb_x_nm2"].to_numpy()), dy / np.sqrt(g["crlb_y_nm2"].to_numpy())]
    z = np.r_[dx / q["sigma_x_nm"].to_numpy(), dy / q["sigma_y_nm"].to_numpy()]
    near = np.tile(nearest_neighbour(gt)[pairs["gt_index"].to_numpy()] < NEAR_NM, 2)
    return dict(jaccard=m["jaccard"], recall=m["recall"], precision=m["precision"], matched=len(pairs),
                rms_bound=float(np.sqrt(np.mean(zb**2))), median_bound=float(np.median(np.abs(zb)) / 0.6745),
                cov1=float(np.mean(np.abs(z) <= 1)), cov2=float(np.mean(np.abs(z) <= 2)), std_z=float(np.std(z)),
                z_gt3=float(np.mean(np.abs(z) > 3)), **_calibration(z[near], "_near"), **_calibration(z[~near], "_far"),
                share_near=float(near.mean()) if len(near) else np.nan, ece=expected_calibration_error(gt, pred))


def scenarios(densities, n_frames: int, signals=SIGNALS, isolated: bool = True):
    """(name, simulate kwargs, seed) of every scored movie (the seeds follow a signal's place in ``SIGNALS``)."""
    out = []
    for i, p in enumerate(ISOLATED if isolated else ()):
        out.append((f"isolated {p:g}", dict(n_frames=n_frames, photons=p, background=20.0, structure="grid",
                                            spacing_px=16.0, jitter_px=3.0), 7000 + i))
    for j, (p, b) in enumerate(SIGNALS):
        if (p, b) not in signals:
            continue
        for i, d in enumerate(densities):
            out.append((f"{p:g}/{b:g} density {d:g}", dict(n_frames=n_frames, photons=p, background=b, density=d),
                        7100 + 10 * j + i))
    return out


def run(model: str, densities, n_frames: int, num_samples: int, steps: int | None, modes=None,
        signals=SIGNALS, isolated: bool = True) -> pd.DataFrame:
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    camera, sigma = pipe.camera, float(pipe.kde_net.config.psf_sigma_px)
    rows = []
    for name, kw, seed in scenarios(densities, n_frames, signals, isolated):
        frames, gt = sd.simulate(shape=(64, 64), sigma_px=sigma, seed=seed, camera=camera, **kw)
        gt = configuration_bounds(gt, frames.shape[-2:], sigma, camera)
        for mode, k, arbitrate in MODES:
            if modes is not None and mode not in modes:
                continue
            pipe.register_to_config(deepstorm_arbitrate=arbitrate)
            t0 = time.perf_counter()
            out = pipe(frames, num_samples=num_samples * k, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(0))
            dt = (time.perf_counter() - t0) / len(frames)
            rows.append(dict(scenario=name, mode=mode, **score(gt, out.localizations), s_per_frame=dt))
            print(pd.DataFrame([rows[-1]]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"),
                  flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--densities", default="0.5,1,2,4")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="2 frames, densities 1 and 4")
    ap.add_argument("--modes", default=None, help="comma-separated subset of " + ",".join(m[0] for m in MODES))
    ap.add_argument("--signals", default=None, help="comma-separated photons/background, e.g. 2000/20")
    ap.add_argument("--no-isolated", dest="isolated", action="store_false", help="skip the isolated scenarios")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    densities = (1.0, 4.0) if args.quick else tuple(float(d) for d in args.densities.split(","))
    frames = 2 if args.quick else args.frames
    modes = None if args.modes is None else set(args.modes.split(","))
    signals = SIGNALS if args.signals is None else tuple(tuple(float(v) for v in s.split("/"))
                                                          for s in args.signals.split(","))
    table = run(args.model, densities, frames, args.samples, args.steps, modes, signals, args.isolated)
    print(table.to_string(index=False, float_format="%.3f"))
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "dense.csv", index=False)
        write_sidecar(args.out / "dense.csv", "benchmarks.dense", argv, threads=torch.get_num_threads())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
