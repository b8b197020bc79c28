"""Benchmark on public SMLM data with ground truth (never copied into the repo).

    python -m benchmarks.public [--data ../shared/data] [--model pretrained/smlm-ddpm-2d-100nm]
                                [--ddpm-frames 4] [--methods picasso,DeepSTORM,DDPM]

Datasets (read where they lie; each folder's SOURCE.md documents its origin and geometry):

- ``bundled_tubes_hd``: EPFL 2013 "Bundled Tubes High Density" as shipped with Deep-STORM,
  361 frames of 64 x 64 pixels of 100 nm, about 5.5 emitters per square micrometre. Picasso's
  threshold is tuned on the Deep-STORM authors' matched training simulation
  (``deepstorm_thunderstorm_sim_demo1``, 20 frames), never on the test frames.
- ``nairr_{ld,md,hd}``: NAIRR-SMLM 2D Gaussian, the 500-frame validation movies (32 x 32
  pixels of 100 nm; about 1, 3-4 and 5-6 emitters per square micrometre); Picasso is tuned on
  the first 100 frames of the matching training movie.

The networks are not tuned on any of these: they run as shipped, with each dataset's camera.
The DDPM runs on the first ``--ddpm-frames`` frames of each set (all of them with a number at
least the set's length); the other methods are scored on all frames *and* on that
subset (rows with ``subset = ddpm``), so the DDPM is compared on equal frames.

Metrics as in docs/conventions.md: per-frame Hungarian matching within 250 nm, Jaccard, RMSE,
efficiency; for the DDPM the calibration of its per-molecule sigmas (``coverage_1sigma``: the
fraction of |error| / sigma <= 1 per axis, ideally 0.683). Writes ``public.csv`` to ``--out``
(default ``benchmarks/results``) and prints the table; ``python -m benchmarks.report`` puts it
into the README.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

import smlm_diffusers as sd
from smlm_diffusers.defaults import DEFAULT_SAMPLES

from .localizers import check_localizations, get_localizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_MODEL = "pretrained/smlm-ddpm-2d-100nm"
METRICS = ("n_gt", "n_pred", "jaccard", "rmse_nm", "efficiency", "coverage_1sigma", "z_std")
COLUMNS = ["dataset", "method", "subset", "n_frames", *METRICS, "frames_per_s"]


@dataclass(frozen=True)
class Movie:
    """A TIFF movie and its ground truth (a CSV with 1-based frames, x = column, y = row, nm)."""

    tiff: str
    csv: str
    frame_col: str
    x_col: str
    y_col: str
    camera: sd.Camera
    max_frames: int | None = None

    def load(self, data: Path) -> tuple[np.ndarray, pd.DataFrame]:
        """Frames [F, H, W] float32 ADU and ground truth (frame 0-based, x_nm, y_nm).

        All-zero frames (a known defect: NAIRR LD train frame 878) are dropped with their ground
        truth, and the remaining frames renumbered.
        """
        frames = tifffile.imread(data / self.tiff)
        if frames.ndim != 3:
            raise ValueError(f"{self.tiff}: expected a [frames, rows, columns] stack, got shape {frames.shape}")
        if self.max_frames is not None:
            frames = frames[: self.max_frames]
        raw = pd.read_csv(data / self.csv)
        gt = pd.DataFrame({"frame": raw[self.frame_col].astype(np.int64) - 1,
                           "x_nm": raw[self.x_col].astype(np.float64), "y_nm": raw[self.y_col].astype(np.float64)})
        keep = np.flatnonzero(frames.reshape(len(frames), -1).any(axis=1))
        renumber = np.full(max(len(frames), int(gt["frame"].max()) + 1), -1)
        renumber[keep] = np.arange(len(keep))
        gt = gt[gt["frame"] < len(frames)]
        gt = gt.assign(frame=renumber[gt["frame"].to_numpy()])
        return frames[keep].astype(np.float32), gt[gt["frame"] >= 0].reset_index(drop=True)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    test: Movie
    tuning: Movie
    sigma_px: float  # PSF sigma in camera pixels (Picasso's fit start; the networks ignore it)


# Bundled Tubes: 100 nm pixels; offset 50 photons and ~2 ADU per photon (SOURCE.md of the matched
# training simulation: background + offset = 140 ADU = 2 x (50 + 20)); read noise undocumented.
_BT_CAMERA = sd.Camera(pixel_size_nm=100.0, offset=100.0, gain=2.0, read_noise=1.6)
# NAIRR: ADU = photons, offset 500, Gaussian camera noise of variance 300 (measured here: background
# pixels have mean 1000 ADU and variance 801 = 500 Poisson + 300).
_NAIRR_CAMERA = sd.Camera(pixel_size_nm=100.0, offset=500.0, gain=1.0, read_noise=17.3)


def _nairr(level: str) -> Dataset:
    folder = f"nairr_smlm_2dgauss/{level}"
    columns = ("Frame", "x (nm)", "y (nm)")
    return Dataset(
        name=f"nairr_{level.lower()}",
        description=f"NAIRR-SMLM 2D Gaussian {level}, validation movie (500 frames, 32x32)",
        test=Movie(f"{folder}/2DGauss_{level}_Validate_Frame.tif", f"{folder}/2DGauss_{level}_Validate_xy.csv",
                   *columns, _NAIRR_CAMERA),
        tuning=Movie(f"{folder}/2DGauss_{level}_Train_Frame.tif", f"{folder}/2DGauss_{level}_Train_xy.csv",
                     *columns, _NAIRR_CAMERA, max_frames=100),
        sigma_px=1.09,
    )


DATASETS: dict[str, Dataset] = {
    "bundled_tubes_hd": Dataset(
        name="bundled_tubes_hd",
        description="EPFL 2013 Bundled Tubes HD (361 frames, 64x64, ~5.5 per um^2)",
        test=Movie("deepstorm_bundled_tubes_hd/testStack_SimulatedMicrotubules.tif",
                   "deepstorm_bundled_tubes_hd/positions_bundled_tubes_hd.csv", "frame", "x_nm", "y_nm", _BT_CAMERA),
        tuning=Movie("deepstorm_thunderstorm_sim_demo1/ArtificialDataset_demo1.tif",
                     "deepstorm_thunderstorm_sim_demo1/positions_demo1.csv", "frame", "x [nm]", "y [nm]", _BT_CAMERA),
        sigma_px=1.12,
    ),
    **{f"nairr_{lv.lower()}": _nairr(lv) for lv in ("LD", "MD", "HD")},
}


def _metrics(gt: pd.DataFrame, pred: pd.DataFrame) -> dict:
    m = sd.evaluate(gt, pred)
    return {k: m.get(k, math.nan) for k in METRICS}


def run_public(data: Path, datasets=tuple(DATASETS), methods=("picasso", "DeepSTORM", "DDPM"),
               model: str = DEFAULT_MODEL, ddpm_frames: int = 4, ddpm_samples: int = DEFAULT_SAMPLES,
               ddpm_steps: int | None = None, verbose: bool = True) -> pd.DataFrame:
    """Score ``methods`` on the public ``datasets`` under ``data``; one row per dataset x method x subset."""
    options = {"DeepSTORM": {"model": model},
               "DDPM": {"model": model, "num_samples": ddpm_samples, "num_inference_steps": ddpm_steps}}
    localizers = {m: get_localizer(m, **options.get(m, {})) for m in methods}
    rows = []
    for name in datasets:
        ds = DATASETS[name]
        frames, gt = ds.test.load(data)
        cam = ds.test.camera
        n_sub = min(ddpm_frames, len(frames))
        gt_sub = gt[gt["frame"] < n_sub]
        if verbose:
            print(f"{name}: {len(frames)} frames {frames.shape[1:]}, {len(gt)} emitters "
                  f"({len(gt) / len(frames):.1f} per frame)", flush=True)
        for method, loc in localizers.items():
            tuned = {}
            if callable(getattr(loc, "tune", None)):
                tframes, tgt = ds.tuning.load(data)
                tuned = dict(loc.tune(tframes, tgt, ds.tuning.camera, ds.sigma_px) or {})
            run_frames = frames[:n_sub] if method == "DDPM" else frames
            loc(run_frames[:1], cam, ds.sigma_px, **tuned)  # warm-up (lazy set-up), untimed
            t0 = time.perf_counter()
            pred = check_localizations(loc(run_frames, cam, ds.sigma_px, **tuned), method)
            fps = len(run_frames) / (time.perf_counter() - t0)
            # the DDPM's subset of frames, unless it is all of them (then every method has one row, "all")
            subsets = [("ddpm", gt_sub, pred[pred["frame"] < n_sub], n_sub)] if n_sub < len(frames) else []
            if method != "DDPM" or not subsets:
                subsets.insert(0, ("all", gt, pred, len(frames)))
            for subset, g, p, n in subsets:
                row = {"dataset": name, "method": method, "subset": subset, "n_frames": n, **_metrics(g, p),
                       "frames_per_s": fps}
                rows.append(row)
                if verbose:
                    print(f"  {method:>10s} {subset:>4s} ({n:3d} frames): J={row['jaccard']:.3f} "
                          f"RMSE={row['rmse_nm']:.1f} nm eff={row['efficiency']:.1f} "
                          f"cov={row['coverage_1sigma']:.3f} {fps:.3g} frames/s {tuned or ''}", flush=True)
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the public data (default ../shared/data)")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma separated, of {', '.join(DATASETS)}")
    p.add_argument("--methods", default="picasso,DeepSTORM,DDPM")
    p.add_argument("--model", default=DEFAULT_MODEL, help="pipeline folder or Hub id for DeepSTORM and the DDPM")
    p.add_argument("--ddpm-frames", type=int, default=4, help="frames of each set the DDPM runs on (default 4)")
    p.add_argument("--ddpm-samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument("--ddpm-steps", type=int, default=None, help="default: the folder's default_inference_steps")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"no public data at {data}: pass --data (see benchmarks/README.md)")
    from . import model_localizers  # noqa: F401  (registers DeepSTORM and DDPM)

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown datasets {unknown}; known: {sorted(DATASETS)}")
    results = run_public(data, names, [m.strip() for m in args.methods.split(",") if m.strip()], args.model,
                         args.ddpm_frames, args.ddpm_samples, args.ddpm_steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "public.csv", index=False)
    print(f"\n{public_table(results)}\n\nwrote {out / 'public.csv'}")
    return 0


def public_table(results: pd.DataFrame) -> str:
    """Markdown table of ``public.csv``."""
    from smlm_diffusers.hub import markdown_table

    cols = [("dataset", "dataset", "s"), ("method", "method", "s"), ("n_frames", "frames", "g"),
            ("jaccard", "Jaccard", ".3f"), ("rmse_nm", "RMSE (nm)", ".1f"), ("efficiency", "efficiency", ".1f"),
            ("coverage_1sigma", "coverage of 1 sigma", ".3f"), ("frames_per_s", "frames/s", ".3g")]
    return markdown_table(results.to_dict("records"), cols)


if __name__ == "__main__":
    raise SystemExit(main())
