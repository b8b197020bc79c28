"""A whole blinking, drifting movie: localize, undrift, link, FRC; against the truth and Picasso.

    python -m benchmarks.movie_postprocess [--model pretrained/smlm-ddpm-2d] [--frames 2000] [--size 96]
        [--density 100] [--drift 150] [--segment-frames 200] [--threads 1] [--out benchmarks/results]

The movie (:func:`smlm_diffusers.simulation.simulate_movie`): molecules on filaments (labelled
density per square micrometre, 3 frames on and 500 off on average, 20% bleaching per blink),
1000-3000 photons per frame of a blink, background 20, a random 150 nm ramp plus a 20 nm wobble
of drift. It is written as a uint16 TIFF and localized in DeepSTORM mode exactly as
``smlm-diffusers localize --mode deepstorm --no-arbitrate`` does (``--arbitrate``: as the default mode, DeepSTORM
+ arbitration, does; :func:`smlm_diffusers.movie.localize_movie`,
the CLI's CRLB photometry, float32); then, on that same table:

- ours: :func:`smlm_diffusers.postprocess.postprocess_localizations` (RCC on the unlinked rows,
  linking within 3 combined sigmas and one dark frame, FRC of the result);
- Picasso: ``picasso.postprocess.undrift`` (RCC, same segment length) and ``link`` (r_max 3x the
  median localization precision, one dark frame, as ours; and its GUI default 10 nm, 3 frames).

Scores: the residual drift (trace minus truth, constant offset removed: RMS per frame and over the
mean of each 200-frame segment), rows per true blink (every blink of the simulation; and per
blink found, i.e. with at least one localization matched to it within 250 nm), the share of
linked rows whose localizations all come from one true blink, the 1-sigma coverage of the
merged sigma on those rows (error to the molecule's place in the sample; the median offset,
a global shift that the drift's origin leaves, removed; ideal 0.683), and the time linking +
drift + FRC add to localizing. Also, after ``--undrift`` alone (unlinked rows, the drift's per-frame
uncertainty in their sigmas): the per-frame coverage against the molecule's place in the sample, the
median stated drift sigma, and the sigma self-check (consecutive frames of a blink, no truth) next
to the ground-truth per-frame coverage of the same sigmas (``truth``, the raw row's). ``--save-locs``
then ``--load-locs`` re-scores one localized movie without running the network. Prints a table and, with ``--out``, writes
``movie_postprocess.csv`` and its sidecar ``movie_postprocess.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .model_localizers import DEFAULT_MODEL
from .sidecar import write_sidecar

PHOTONS, BACKGROUND, MATCH_NM = (1000.0, 3000.0), 20.0, 250.0


def simulate(args):
    from smlm_diffusers.simulation import simulate_movie

    return simulate_movie(n_frames=args.frames, shape=(args.size, args.size), density=args.density, photons=PHOTONS,
                          background=BACKGROUND, seed=args.seed, structure="filaments", drift=args.drift)


def localize(args, frames: np.ndarray) -> tuple[pd.DataFrame, float]:
    """The CLI's DeepSTORM-mode table of ``frames`` and the seconds the run took (model loading excluded)."""
    import tifffile

    from smlm_diffusers.movie import localize_movie

    from .movie import crlb_postprocess, load

    pipe = load(args.model, args.threads)
    if args.arbitrate:  # DeepSTORM mode with the likelihood's arbitration of pairs (deepstorm_arbitrate)
        pipe.register_to_config(deepstorm_arbitrate=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = Path(tmp) / "movie.tif"
        tifffile.imwrite(stack, np.round(frames).clip(0, 65535).astype(np.uint16))
        t0 = time.perf_counter()
        run = localize_movie(pipe, stack, Path(tmp) / "work", batch_size=args.batch_size, mixed_precision="no",
                             postprocess=crlb_postprocess(pipe), progress=False)
        locs = run.localizations()
        seconds = time.perf_counter() - t0
        run.finish()
    return locs.reset_index(drop=True), seconds


def label_blinks(gt: pd.DataFrame, locs: pd.DataFrame) -> pd.DataFrame:
    """``locs`` with the true blink of each row (-1: unmatched) and its square: linking averages both, so a
    linked row is one blink's exactly where ``blink_sq == blink ** 2``."""
    from smlm_diffusers.localization import match

    pairs = match(gt, locs, MATCH_NM)
    blink = np.full(len(locs), -1.0)
    blink[pairs["pred_index"].to_numpy()] = gt["blink"].to_numpy()[pairs["gt_index"].to_numpy()]
    return locs.assign(blink=blink, blink_sq=blink ** 2)


def true_drift(gt: pd.DataFrame, n_frames: int) -> np.ndarray:
    d = gt.groupby("frame")[["drift_x_nm", "drift_y_nm"]].first().reindex(range(n_frames))
    return d.interpolate(limit_direction="both").to_numpy()


def coverage(gt: pd.DataFrame, linked: pd.DataFrame) -> dict:
    """Purity of the linked rows and the 1-sigma coverage of their merged sigma (module docstring)."""
    pure = linked[(linked["blink"] >= 0) & (np.abs(linked["blink_sq"] - linked["blink"] ** 2) < 1e-3)]
    truth = gt.groupby("blink")[["x_nm", "y_nm", "drift_x_nm", "drift_y_nm"]].first()
    t = truth.loc[np.rint(pure["blink"]).astype(np.int64)]
    z = []
    for axis in "xy":
        err = pure[f"{axis}_nm"].to_numpy() - (t[f"{axis}_nm"] - t[f"drift_{axis}_nm"]).to_numpy()
        z.append((err - np.median(err)) / pure[f"sigma_{axis}_nm"].to_numpy())
    z = np.concatenate(z)
    return {"pure_share": len(pure) / max(len(linked), 1), "coverage_1sigma": float(np.mean(np.abs(z) <= 1)),
            "coverage_2sigma": float(np.mean(np.abs(z) <= 2)), "z_std": float(np.std(z))}


def raw_coverage(gt: pd.DataFrame, locs: pd.DataFrame) -> float:
    """1-sigma coverage of the per-frame sigmas (error to the imaged truth)."""
    from smlm_diffusers.localization import match

    pairs = match(gt, locs, MATCH_NM)
    i = pairs["pred_index"].to_numpy()
    z = np.r_[pairs["dx"] / locs["sigma_x_nm"].to_numpy()[i], pairs["dy"] / locs["sigma_y_nm"].to_numpy()[i]]
    return float(np.mean(np.abs(z[np.isfinite(z)]) <= 1))


def undrifted_coverage(gt: pd.DataFrame, locs: pd.DataFrame, corrected: pd.DataFrame) -> float:
    """1-sigma coverage per frame after drift correction (``corrected``: ``locs`` undrifted, unlinked, with the
    drift uncertainty in its sigmas; rows carry ``row_id``): error to the molecule's place in the sample, the
    median offset (the trace's origin) removed."""
    from smlm_diffusers.localization import match

    pairs = match(gt, locs, MATCH_NM)
    by_row = corrected.set_index("row_id")
    i, g = pairs["pred_index"].to_numpy(), pairs["gt_index"].to_numpy()
    c = by_row.loc[locs["row_id"].to_numpy()[i]]
    z = []
    for axis in "xy":
        err = c[f"{axis}_nm"].to_numpy() - (gt[f"{axis}_nm"].to_numpy()[g] - gt[f"drift_{axis}_nm"].to_numpy()[g])
        z.append((err - np.median(err)) / c[f"sigma_{axis}_nm"].to_numpy())
    z = np.concatenate(z)
    return float(np.mean(np.abs(z[np.isfinite(z)]) <= 1))


def evaluate(args, gt: pd.DataFrame, locs: pd.DataFrame, localize_s: float) -> list[dict]:
    """The rows of the table: no correction, ours, Picasso (module docstring)."""
    from smlm_diffusers.postprocess import (apply_drift, drift_residual, picasso_link, picasso_undrift,
                                            postprocess_localizations)

    n, shape, a = args.frames, (args.size, args.size), 108.0
    truth = true_drift(gt, n)
    n_blinks = gt["blink"].nunique()
    locs = locs.assign(row_id=np.arange(len(locs), dtype=np.float64))
    labelled = label_blinks(gt, locs)
    found = int(labelled.loc[labelled["blink"] >= 0, "blink"].nunique())
    base = {"frames": n, "size": args.size, "true_blinks": n_blinks, "blinks_found": found,
            "localize_s": localize_s, "frames_per_s": n / localize_s}
    truth_cover = raw_coverage(gt, locs)
    rows = [base | {"method": "raw (no linking, no drift correction)", "rows": len(locs),
                    "rows_per_true_blink": len(locs) / n_blinks, "rows_per_found_blink": len(locs) / found,
                    "coverage_1sigma": truth_cover}
            | {f"drift_{k}": v for k, v in drift_residual(np.zeros_like(truth), truth, 200).items()}]

    t0 = time.perf_counter()
    und = postprocess_localizations(labelled, n, link=False, frc=False, segment_frames=args.segment_frames)
    und_s = time.perf_counter() - t0
    d = und.drift
    check = und.selfcheck
    rows.append(base | {"method": "ours: --undrift (per frame, drift sigma added)", "rows": len(und.localizations),
                        "coverage_1sigma": undrifted_coverage(gt, locs, und.localizations), "post_s": und_s,
                        "post_share": und_s / localize_s, "fine_windows": d.fine_windows,
                        "drift_sigma_median_nm": float(np.median(np.r_[d.sigma_frame_x_nm, d.sigma_frame_y_nm]))
                        if d.sigma_frame_x_nm is not None else float(np.hypot(d.sigma_x_nm, d.sigma_y_nm) / np.sqrt(2)),
                        "selfcheck_coverage": check.coverage, "selfcheck_robust_std": check.robust_std,
                        "truth_frame_coverage": truth_cover}
                | {f"drift_{k}": v for k, v in drift_residual(np.c_[d.x_nm, d.y_nm], truth, 200).items()})

    t0 = time.perf_counter()
    res = postprocess_localizations(labelled, n, segment_frames=args.segment_frames)
    ours_s = time.perf_counter() - t0
    ours = res.localizations
    rows.append(base | {"method": "ours: RCC + link + FRC (linked rows)", "rows": len(ours), "rows_per_true_blink": len(ours) / n_blinks,
                        "rows_per_found_blink": len(ours) / found, "frc_nm": res.frc.resolution_nm,
                        "post_s": ours_s, "post_share": ours_s / localize_s,
                        **{f"{k}_s": v for k, v in res.seconds.items()}} | coverage(gt, ours)
                | {f"drift_{k}": v for k, v in drift_residual(np.c_[res.drift.x_nm, res.drift.y_nm], truth, 200).items()})

    picasso_link(locs.iloc[:200], n, shape, a)  # numba compiles on the first call: not timed
    t0 = time.perf_counter()
    theirs = picasso_undrift(locs, n, shape, a, segment_frames=args.segment_frames)
    undrift_s = time.perf_counter() - t0
    corrected = apply_drift(locs, theirs)
    r_max = 3.0 * float(np.nanmedian(np.r_[locs["sigma_x_nm"], locs["sigma_y_nm"]]))
    residual = drift_residual(np.c_[theirs.x_nm, theirs.y_nm], truth, 200)
    for r, dark, name in ((r_max, 1, f"Picasso: undrift + link ({r_max:.0f} nm, 1 dark frame)"),
                          (10.0, 3, "Picasso: undrift + link (GUI default 10 nm, 3 dark frames)")):
        t0 = time.perf_counter()
        linked = picasso_link(corrected, n, shape, a, r_max_nm=r, max_dark_time=dark)
        link_s = time.perf_counter() - t0
        rows.append(base | {"method": name, "rows": len(linked), "rows_per_true_blink": len(linked) / n_blinks,
                            "rows_per_found_blink": len(linked) / found, "undrift_s": undrift_s, "link_s": link_s,
                            "post_s": undrift_s + link_s, "post_share": (undrift_s + link_s) / localize_s}
                    | {f"drift_{k}": v for k, v in residual.items()})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'method':<58} {'rows/blink':>10} {'/found':>7} {'cover1':>7} {'drift rms':>9} {'seg rms':>8} "
          f"{'FRC nm':>7} {'+time':>6} {'drift sig':>9} {'selfchk':>7} {'truth':>6}")
    for r in rows:
        def f(key, fmt):
            v = r.get(key)
            return format(v, fmt) if v is not None and np.isfinite(v) else "-"

        print(f"{r['method']:<58} {f('rows_per_true_blink', '.3f'):>10} {f('rows_per_found_blink', '.3f'):>7} "
              f"{f('coverage_1sigma', '.3f'):>7} {f('drift_rms_nm', '.2f'):>9} {f('drift_segment_rms_nm', '.2f'):>8} "
              f"{f('frc_nm', '.1f'):>7} {f('post_share', '.1%'):>6} {f('drift_sigma_median_nm', '.2f'):>9} "
              f"{f('selfcheck_coverage', '.3f'):>7} {f('truth_frame_coverage', '.3f'):>6}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.movie_postprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder (default: the shipped one)")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--size", type=int, default=96, help="frame side, camera pixels (default 96)")
    p.add_argument("--density", type=float, default=100.0, help="labelled molecules per um^2 (default 100)")
    p.add_argument("--drift", type=float, default=150.0, help="length of the drift ramp, nm (default 150)")
    p.add_argument("--segment-frames", type=int, default=200, help="RCC segment, frames (default 200)")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--arbitrate", action="store_true",
                   help="DeepSTORM mode with the pair arbitration of DDPM mode (the folder's deepstorm_arbitrate)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--save-locs", default=None, metavar="PATH",
                   help="also write the raw table and the truth (PATH.locs.csv, PATH.gt.csv) for a closer look")
    p.add_argument("--load-locs", default=None, metavar="PATH",
                   help="skip simulating and localizing: read PATH.locs.csv and PATH.gt.csv (from --save-locs)")
    p.add_argument("--localize-seconds", type=float, default=float("nan"),
                   help="with --load-locs: the localization time to compare with (default: none)")
    p.add_argument("--out", default=None, help="folder for movie_postprocess.csv (+ .json); default print only")
    args = p.parse_args(argv)
    if args.frames < 2 * args.segment_frames:
        p.error("--frames must hold at least two --segment-frames")

    if args.load_locs:
        locs, gt = pd.read_csv(f"{args.load_locs}.locs.csv"), pd.read_csv(f"{args.load_locs}.gt.csv")
        seconds = args.localize_seconds
        rows = evaluate(args, gt, locs, seconds)
        print_table(rows)
        return 0
    t0 = time.perf_counter()
    frames, gt = simulate(args)
    print(f"simulated {args.frames} frames of {args.size} x {args.size}: {gt['molecule'].nunique()} molecules, "
          f"{gt['blink'].nunique()} blinks, {len(gt)} emitter-frames ({time.perf_counter() - t0:.1f} s)", flush=True)
    locs, seconds = localize(args, frames)
    print(f"localized: {len(locs)} rows in {seconds:.1f} s ({args.frames / seconds:.1f} frames/s, "
          f"{args.threads} thread(s))", flush=True)
    if args.save_locs:
        locs.to_csv(f"{args.save_locs}.locs.csv", index=False)
        gt.to_csv(f"{args.save_locs}.gt.csv", index=False)
    rows = evaluate(args, gt, locs, seconds)
    print_table(rows)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / "movie_postprocess.csv", index=False)
        write_sidecar(out / "movie_postprocess.csv", "benchmarks.movie_postprocess", argv, threads=args.threads,
                      batch_size=args.batch_size, density=args.density, drift_nm=args.drift, seed=args.seed,
                      photons=list(PHOTONS), background=BACKGROUND, model=args.model)
        print(f"wrote {out / 'movie_postprocess.csv'} and {out / 'movie_postprocess.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
