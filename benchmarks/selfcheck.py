"""The sigma self-check (no ground truth) on real frames, on public movies with truth, and on a movie with a fast drift.

    python -m benchmarks.selfcheck [--data ../shared/data] [--parts real,public,wobble] [--max-frames 500]
        [--wobble-frames 1000] [--wobble-nm 20] [--wobble-period 200] [--threads 1] [--out benchmarks/results]

Every table is localized in DeepSTORM mode exactly as ``smlm-diffusers localize --mode deepstorm --no-arbitrate``
does (:func:`smlm_diffusers.movie.localize_movie` with the CLI's CRLB photometry, float32, each
movie's own camera), then checked by :func:`smlm_diffusers.postprocess.sigma_selfcheck`: two
localizations of one blink in consecutive frames give ``z = (x_t - x_t+1) / sqrt(s_t^2 + s_t+1^2)``
per axis; coverage is the share of ``|z| <= 1`` (ideal 0.683), and the robust std of z (ideal 1).

- ``real``: the 11 real sCMOS frames of ``storm_analysis_scmos_sample`` (256 x 256 pixels of 160 nm,
  Hamamatsu sCMOS), as a uniform camera at the median of its maps (offset 100.4 ADU, gain 2.11
  ADU/e-, read noise sqrt(median variance) / gain = 1.13 e-), PSF sigma 1.2 px (``estimate``'s,
  SOURCE.md), model ``pretrained/smlm-ddpm-2d``. No truth: only the self-check.
- ``public``: NAIRR-SMLM 2D Gaussian LD and HD validation movies, Bundled Tubes HD (cameras and
  loaders of :mod:`benchmarks.public`, model ``pretrained/smlm-ddpm-2d-100nm``, first
  ``--max-frames`` frames). Beside the self-check, the ground-truth coverage of the same per-frame
  sigmas (per-frame Hungarian matching within 250 nm, ``z = (x - x_true) / sigma``), over all
  matched rows and over the rows the self-check used (those in a consecutive-frame pair), and the
  share of the self-check's pairs whose two rows match one true emitter (NAIRR's ``Emitter`` id;
  Bundled Tubes' truth never shows an emitter twice, so every pair there is two molecules).
- ``wobble``: a simulated movie (:func:`smlm_diffusers.simulation.simulate_movie`, as
  :mod:`benchmarks.movie_postprocess`: 96 x 96 pixels of 108 nm, filaments, 100 labels per um^2,
  1000-3000 photons, background 20) with a faster drift than that benchmark's: a 150 nm ramp plus
  a ``--wobble-nm`` sine of ``--wobble-period`` frames per axis (random phase). Scored after
  ``--undrift`` (unlinked rows, drift sigma added) and after ``--link --undrift``: per-frame and
  linked coverage against the molecule's place in the sample (:mod:`benchmarks.movie_postprocess`'s
  scores), the residual drift, and the self-check beside the truth.

Prints a table and, with ``--out``, writes ``selfcheck.csv`` and its sidecar ``selfcheck.json``
(the command, the settings and each check's per-bin numbers).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .sidecar import write_sidecar

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
REAL_MODEL = str(ROOT / "pretrained" / "smlm-ddpm-2d")
PUBLIC_MODEL = str(ROOT / "pretrained" / "smlm-ddpm-2d-100nm")
REAL_FOLDER = "storm_analysis_scmos_sample"
REAL_PSF_PX = 1.2  # SOURCE.md: the project's `estimate` on these frames, about 1.2 px (194 nm)
PUBLIC_SETS = ("nairr_ld", "nairr_hd", "bundled_tubes_hd")
MATCH_NM = 250.0
PHOTONS, BACKGROUND = (1000.0, 3000.0), 20.0
# sigma_selfcheck's own linking defaults (5 sigmas, one dark frame, 200 nm): the pairs are the same ones
SELF_LINK = dict(n_sigma=5.0, max_gap=1, max_radius_nm=200.0, sigma_nm=None)


def load_pipe(model: str, threads: int, psf_sigma_px: float | None = None):
    import torch

    import smlm_diffusers as sd

    torch.set_num_threads(threads)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    pipe.register_to_config(deepstorm_arbitrate=False)  # plain DeepSTORM mode (localize --no-arbitrate), as measured
    if psf_sigma_px is not None:  # as the CLI's --psf-sigma: the pipeline and the photometry read it here
        pipe.kde_net.register_to_config(psf_sigma_px=float(psf_sigma_px))
    return pipe


def localize(pipe, frames: np.ndarray, camera, batch_size: int = 32) -> tuple[pd.DataFrame, float]:
    """The CLI's DeepSTORM-mode table of ``frames`` (raw ADU) under ``camera``, and the seconds it took."""
    from smlm_diffusers.localization.crlb_uncertainty import add_crlb_uncertainty
    from smlm_diffusers.movie import localize_movie

    psf = float(pipe.kde_net.config.psf_sigma_px)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        run = localize_movie(pipe, np.ascontiguousarray(frames, np.float32), Path(tmp) / "work", batch_size=batch_size,
                             camera=camera, mixed_precision="no", progress=False,
                             postprocess=lambda locs, windows: add_crlb_uncertainty(locs, windows, camera, psf))
        locs = run.localizations()
        seconds = time.perf_counter() - t0
        run.finish()
    return locs.reset_index(drop=True), seconds


def blink_ids(locs: pd.DataFrame) -> np.ndarray:
    """The blinks :func:`sigma_selfcheck` forms by default (same linker, same gate), to look at its pairs."""
    from smlm_diffusers.postprocess import Linker

    linker = Linker(SELF_LINK["n_sigma"], SELF_LINK["max_gap"], SELF_LINK["max_radius_nm"], SELF_LINK["sigma_nm"])
    linker.add(locs.reset_index(drop=True))
    return np.asarray(linker.blink_ids, np.int64)


def consecutive_pairs(locs: pd.DataFrame, blink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (a, b) of the consecutive-frame pairs of one blink: the self-check's pairs."""
    frame = locs["frame"].to_numpy(np.int64)
    order = np.lexsort((frame, blink))
    a, b = order[:-1], order[1:]
    keep = (blink[a] == blink[b]) & (frame[b] - frame[a] == 1)
    return a[keep], b[keep]


def check_row(check, locs: pd.DataFrame) -> dict:
    """The self-check's columns, and its worst well-filled neighbour bin."""
    nn = [b for b in check.by_neighbour_nm if b["pairs"] >= 20]
    worst = min(nn, key=lambda b: b["coverage"], default=None)
    ph = [b for b in check.by_photons if b["pairs"] >= 20]
    return {"rows": len(locs), "pairs": check.pairs, "selfcheck_coverage": check.coverage,
            "selfcheck_robust_std": check.robust_std,
            "selfcheck_worst_nn_bin": None if worst is None else
            (f"{worst['low']:.0f}-{worst['high']:.0f} nm" if math.isfinite(worst["high"]) else f">={worst['low']:.0f} nm"),
            "selfcheck_worst_nn_coverage": None if worst is None else worst["coverage"],
            "selfcheck_dimmest_coverage": ph[0]["coverage"] if ph else None,
            "selfcheck_brightest_coverage": ph[-1]["coverage"] if ph else None,
            "median_sigma_nm": float(np.nanmedian(np.r_[locs["sigma_x_nm"], locs["sigma_y_nm"]])) if len(locs) else None}


def bins_of(check) -> dict:
    s = check.summary()
    return {"by_photons": s["by_photons"], "by_neighbour_nm": s["by_neighbour_nm"], "reason": s["reason"]}


# ----------------------------------------------------------------------------------------------- real


def real_camera(folder: Path):
    """A uniform camera at the median of the per-pixel maps (per-pixel maps are not supported yet)."""
    import tifffile

    import smlm_diffusers as sd

    offset = float(np.median(tifffile.imread(folder / "camera_offset_adu.tif")))
    gain = float(np.median(tifffile.imread(folder / "camera_gain_adu_per_e.tif")))
    var = float(np.median(tifffile.imread(folder / "camera_variance_adu2.tif")))
    return sd.Camera(pixel_size_nm=160.0, offset=offset, gain=gain, read_noise=math.sqrt(var) / gain)


def real_selfcheck(data: Path, model: str = REAL_MODEL, psf_sigma_px: float = REAL_PSF_PX, max_frames: int | None = None,
                   threads: int = 1, batch_size: int = 32, pipe=None):
    """Localize the real sCMOS frames and self-check them: (table, check, seconds, camera)."""
    import tifffile

    from smlm_diffusers.postprocess import sigma_selfcheck

    folder = data / REAL_FOLDER
    frames = tifffile.imread(folder / "sample_frames.tif")[:max_frames].astype(np.float32)
    camera = real_camera(folder)
    pipe = pipe or load_pipe(model, threads, psf_sigma_px)
    locs, seconds = localize(pipe, frames, camera, batch_size)
    return locs, sigma_selfcheck(locs), seconds, camera, len(frames)


def hot_pixel_split(data: Path, locs: pd.DataFrame, check, limit_adu2: float = 100.0) -> dict:
    """The self-check's coverage on pairs with a row within one pixel of a hot pixel (read-noise variance above
    ``limit_adu2`` in the camera's map, which the uniform camera does not know) and on the others."""
    import tifffile
    from scipy.ndimage import maximum_filter

    var = maximum_filter(tifffile.imread(data / REAL_FOLDER / "camera_variance_adu2.tif"), size=3)
    h, w = var.shape
    r = np.clip((locs["y_nm"].to_numpy() / 160.0).astype(int), 0, h - 1)
    c = np.clip((locs["x_nm"].to_numpy() / 160.0).astype(int), 0, w - 1)
    hot = var[r, c] > limit_adu2
    a, b = consecutive_pairs(locs, blink_ids(locs))
    near = hot[a] | hot[b]
    cov = lambda sel: float(np.mean(np.abs(check.z[sel]) <= 1)) if sel.any() else None  # noqa: E731
    return {"pairs_near_hot_pixel": int(near.sum()), "selfcheck_coverage_near_hot_pixel": cov(near),
            "selfcheck_coverage_away_from_hot_pixels": cov(~near)}


def run_real(args, details: dict) -> list[dict]:
    """The real frames with the measured PSF (``--real-psf``) and, to show what the check sees, with the
    model's own PSF sigma (1.0 px, what the CLI uses without ``--psf-sigma``: narrower than these frames')."""
    rows, data = [], Path(args.data)
    model_psf = float(load_pipe(args.real_model, args.threads).kde_net.config.psf_sigma_px)
    for psf, what in ((args.real_psf, "measured"), (model_psf, "the model's")):
        locs, check, seconds, cam, n = real_selfcheck(data, args.real_model, psf, None, args.threads, args.batch_size)
        key = f"real_psf_{psf:g}"
        details[key] = bins_of(check) | {"camera": {"offset_adu": cam.offset, "gain_adu_per_e": cam.gain,
                                                    "read_noise_e": cam.read_noise, "pixel_size_nm": 160.0},
                                         "psf_sigma_px": psf, "model": Path(args.real_model).name}
        hot = hot_pixel_split(data, locs, check)
        print(f"real sCMOS, PSF {psf:g} px: {n} frames, {len(locs)} rows in {seconds:.1f} s; {check.line()}; "
              f"near hot pixels {hot['selfcheck_coverage_near_hot_pixel'] or math.nan:.3f} "
              f"({hot['pairs_near_hot_pixel']} pairs), elsewhere {hot['selfcheck_coverage_away_from_hot_pixels'] or math.nan:.3f}",
              flush=True)
        rows.append({"movie": "real sCMOS (storm-analysis)", "stage": f"per frame, PSF {psf:g} px ({what})",
                     "frames": n, "model": Path(args.real_model).name, "localize_s": seconds, "psf_sigma_px": psf}
                    | check_row(check, locs) | hot)
    return rows


# ----------------------------------------------------------------------------------------------- public


def public_movie(data: Path, name: str, max_frames: int | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Frames and truth of a public movie; the truth carries ``emitter`` (NAIRR's id; Bundled Tubes: the row)."""
    from .public import DATASETS

    mv = DATASETS[name].test
    frames, gt = mv.load(data)
    raw = pd.read_csv(data / mv.csv)
    if len(raw) != len(gt):  # no frame was dropped from the validation movies; guard the row alignment anyway
        raise RuntimeError(f"{name}: the truth lost rows on loading ({len(raw)} -> {len(gt)})")
    gt = gt.assign(emitter=raw["Emitter"].to_numpy() if "Emitter" in raw else np.arange(len(raw)))
    if max_frames is not None:
        frames, gt = frames[:max_frames], gt[gt["frame"] < max_frames].reset_index(drop=True)
    return frames, gt


def truth_scores(gt: pd.DataFrame, locs: pd.DataFrame, a: np.ndarray, b: np.ndarray, z_pairs: np.ndarray) -> dict:
    """Ground-truth coverage of the per-frame sigmas (all matched rows, and the rows in pairs), the share of the
    self-check's pairs (rows ``a``, ``b``; their z ``z_pairs`` [pairs, 2]) whose rows match one true emitter, the
    self-check on those pairs alone, and the correlation of the true errors (over sigma) of a pair's two frames:
    0 when errors are frame-independent, what the self-check assumes."""
    from smlm_diffusers.localization import match

    pairs = match(gt, locs, MATCH_NM)
    i, g = pairs["pred_index"].to_numpy(), pairs["gt_index"].to_numpy()
    z = np.c_[pairs["dx"].to_numpy() / locs["sigma_x_nm"].to_numpy()[i],
              pairs["dy"].to_numpy() / locs["sigma_y_nm"].to_numpy()[i]]
    ok = np.isfinite(z).all(axis=1)
    emitter = np.full(len(locs), -1, np.int64)
    emitter[i] = gt["emitter"].to_numpy()[g]
    paired = np.zeros(len(locs), bool)
    paired[a] = paired[b] = True
    in_pair = paired[i] & ok
    same = (emitter[a] >= 0) & (emitter[a] == emitter[b])
    zt = np.full((len(locs), 2), np.nan)
    zt[i] = z
    za, zb = zt[a[same]], zt[b[same]]
    both = np.isfinite(za).all(axis=1) & np.isfinite(zb).all(axis=1)
    rho = float(np.corrcoef(za[both].ravel(), zb[both].ravel())[0, 1]) if both.sum() > 10 else None
    return {"selfcheck_coverage_one_emitter": float(np.mean(np.abs(z_pairs[same]) <= 1)) if same.any() else None,
            "truth_error_corr": rho,"matched": int(ok.sum()), "truth_coverage": float(np.mean(np.abs(z[ok]) <= 1)),
            "truth_coverage_paired": float(np.mean(np.abs(z[in_pair]) <= 1)) if in_pair.any() else None,
            "truth_robust_std": float(1.4826 * np.median(np.abs(z[ok] - np.median(z[ok])))),
            "pairs_one_true_emitter": float(same.mean()) if len(a) else None}


def run_public(args, details: dict) -> list[dict]:
    from smlm_diffusers.postprocess import sigma_selfcheck

    from .public import DATASETS

    pipe = load_pipe(args.public_model, args.threads)
    rows = []
    for name in args.public_sets:
        frames, gt = public_movie(Path(args.data), name, args.max_frames)
        locs, seconds = localize(pipe, frames, DATASETS[name].test.camera, args.batch_size)
        blink = blink_ids(locs)
        check = sigma_selfcheck(locs, blink)
        a, b = consecutive_pairs(locs, blink)
        assert len(a) == check.pairs, (len(a), check.pairs)
        details[name] = bins_of(check)
        row = {"movie": name, "stage": "per frame (DeepSTORM mode)", "frames": len(frames),
               "model": Path(args.public_model).name, "localize_s": seconds} | check_row(check, locs) \
            | truth_scores(gt, locs, a, b, check.z)
        rows.append(row)
        print(f"{name}: {len(frames)} frames, {len(locs)} rows in {seconds:.1f} s; {check.line()}; truth "
              f"{row['truth_coverage']:.3f} (paired rows {row['truth_coverage_paired'] or math.nan:.3f}), pairs of "
              f"one true emitter {row['pairs_one_true_emitter'] or 0:.2f}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- wobble


def fast_drift(n_frames: int, ramp_nm: float, wobble_nm: float, period: float, seed: int) -> np.ndarray:
    """A ramp of ``ramp_nm`` over the movie in a random direction plus a ``wobble_nm`` sine of ``period``
    frames on each axis (random phase), zero at frame 0: [F, 2] nm."""
    rng = np.random.default_rng(seed + 1000)
    t = np.arange(n_frames, dtype=np.float64)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ramp_nm * (t / max(n_frames - 1, 1))[:, None] * np.array([math.cos(angle), math.sin(angle)])
    phase = rng.uniform(0, 2 * math.pi, size=2)
    wobble = wobble_nm * (np.sin(2 * math.pi * t[:, None] / period + phase) - np.sin(phase))
    return ramp + wobble


def run_wobble(args, details: dict) -> list[dict]:
    import smlm_diffusers as sd
    from smlm_diffusers.postprocess import drift_residual, postprocess_localizations, sigma_selfcheck
    from smlm_diffusers.simulation import simulate_movie

    from .movie_postprocess import coverage, label_blinks, raw_coverage, true_drift, undrifted_coverage

    n, size = args.wobble_frames, args.wobble_size
    trace = fast_drift(n, args.ramp_nm, args.wobble_nm, args.wobble_period, args.seed)
    t0 = time.perf_counter()
    frames, gt = simulate_movie(n_frames=n, shape=(size, size), density=args.density, photons=PHOTONS,
                                background=BACKGROUND, seed=args.seed, structure="filaments", drift=trace)
    print(f"wobble movie: {n} frames of {size} x {size}, {gt['blink'].nunique()} blinks "
          f"({time.perf_counter() - t0:.1f} s to simulate)", flush=True)
    pipe = load_pipe(args.real_model, args.threads)
    locs, seconds = localize(pipe, frames, sd.Camera(), args.batch_size)
    truth = true_drift(gt, n)
    locs = locs.assign(row_id=np.arange(len(locs), dtype=np.float64))
    labelled = label_blinks(gt, locs)
    label = f"simulated, {args.wobble_nm:g} nm wobble of {args.wobble_period:g} frames + {args.ramp_nm:g} nm ramp"
    base = {"movie": label, "frames": n, "model": Path(args.real_model).name, "localize_s": seconds}

    raw = sigma_selfcheck(locs)
    rows = [base | {"stage": "per frame, no drift correction"} | check_row(raw, locs)
            | {"truth_coverage": raw_coverage(gt, locs)}
            | {f"drift_{k}": v for k, v in drift_residual(np.zeros_like(truth), truth, 200).items()}]

    und = postprocess_localizations(labelled, n, link=False, frc=False, segment_frames=args.segment_frames)
    d = und.drift
    rows.append(base | {"stage": "per frame, after --undrift (drift sigma added)"}
                | check_row(und.selfcheck, und.localizations)
                | {"truth_coverage": undrifted_coverage(gt, locs, und.localizations),
                   "drift_sigma_median_nm": float(np.median(np.r_[d.sigma_frame_x_nm, d.sigma_frame_y_nm]))
                   if d.sigma_frame_x_nm is not None else None}
                | {f"drift_{k}": v for k, v in drift_residual(np.c_[d.x_nm, d.y_nm], truth, 200).items()})
    details["wobble_undrift"] = bins_of(und.selfcheck)

    res = postprocess_localizations(labelled, n, frc=False, segment_frames=args.segment_frames)
    cov = coverage(gt, res.localizations)
    rows.append(base | {"stage": "linked, after --link --undrift", "rows": len(res.localizations),
                        "rows_per_true_blink": len(res.localizations) / gt["blink"].nunique(),
                        "truth_coverage": cov["coverage_1sigma"], "linked_pure_share": cov["pure_share"],
                        "selfcheck_coverage": res.selfcheck.coverage if res.selfcheck else None,
                        "pairs": res.selfcheck.pairs if res.selfcheck else None}
                | {f"drift_{k}": v for k, v in drift_residual(np.c_[res.drift.x_nm, res.drift.y_nm], truth, 200).items()})
    details["wobble"] = {"ramp_nm": args.ramp_nm, "wobble_nm": args.wobble_nm, "wobble_period_frames": args.wobble_period,
                         "density": args.density, "size": size, "seed": args.seed, "photons": list(PHOTONS),
                         "background": BACKGROUND, "segment_frames": args.segment_frames}
    print(f"wobble movie: {len(locs)} rows in {seconds:.1f} s", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- table


def fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


COLUMNS = [("movie", "movie", "s"), ("stage", "stage", "s"), ("frames", "frames", "d"), ("rows", "rows", "d"),
           ("pairs", "self-check pairs", "d"), ("selfcheck_coverage", "self-check coverage", ".3f"),
           ("selfcheck_robust_std", "robust std(z)", ".2f"), ("truth_coverage", "truth coverage", ".3f"),
           ("truth_coverage_paired", "truth, rows in pairs", ".3f"),
           ("pairs_one_true_emitter", "pairs of one true emitter", ".2f"),
           ("selfcheck_coverage_one_emitter", "self-check, those pairs", ".3f"),
           ("truth_error_corr", "error corr. t, t+1", ".2f"),
           ("selfcheck_worst_nn_coverage", "worst neighbour bin", ".3f"),
           ("selfcheck_coverage_near_hot_pixel", "near hot pixels", ".3f"), ("drift_segment_rms_nm", "drift seg. RMS (nm)", ".2f"),
           ("drift_sigma_median_nm", "drift sigma (nm)", ".2f")]


def markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|" + "|".join("---" if c[2] == "s" else "---:" for c in COLUMNS) + "|"
    body = []
    for r in rows:
        cells = []
        for key, _, spec in COLUMNS:
            v = r.get(key)
            if key == "selfcheck_worst_nn_coverage" and v is not None:
                cells.append(f"{fmt(v, spec)} ({r.get('selfcheck_worst_nn_bin')})")
            else:
                cells.append(fmt(v, spec) if spec != "s" else str(v if v is not None else "-"))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.selfcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="public data folder (default ../shared/data)")
    p.add_argument("--parts", default="real,public,wobble", help="comma separated, of real, public, wobble")
    p.add_argument("--real-model", default=REAL_MODEL, help="model of the real frames and the wobble movie")
    p.add_argument("--real-psf", type=float, default=REAL_PSF_PX, help="PSF sigma of the real frames, px (default 1.2)")
    p.add_argument("--public-model", default=PUBLIC_MODEL, help="model of the public movies (100 nm pixels)")
    p.add_argument("--public-sets", default=",".join(PUBLIC_SETS))
    p.add_argument("--max-frames", type=int, default=None, help="first frames of each public movie (default all)")
    p.add_argument("--wobble-frames", type=int, default=1000)
    p.add_argument("--wobble-size", type=int, default=96)
    p.add_argument("--density", type=float, default=100.0)
    p.add_argument("--ramp-nm", type=float, default=150.0)
    p.add_argument("--wobble-nm", type=float, default=20.0)
    p.add_argument("--wobble-period", type=float, default=200.0, help="frames (default 200)")
    p.add_argument("--segment-frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="folder for selfcheck.csv (+ .json); default print only")
    args = p.parse_args(argv)
    args.public_sets = [s.strip() for s in args.public_sets.split(",") if s.strip()]
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if set(parts) - {"real", "public", "wobble"}:
        p.error(f"unknown parts {sorted(set(parts) - {'real', 'public', 'wobble'})}")
    if ("real" in parts or "public" in parts) and not Path(args.data).is_dir():
        raise SystemExit(f"no public data at {args.data}: pass --data")
    if "wobble" in parts and args.wobble_frames < 2 * args.segment_frames:
        p.error("--wobble-frames must hold at least two --segment-frames")

    rows, details = [], {}
    for part, fn in (("real", run_real), ("public", run_public), ("wobble", run_wobble)):
        if part in parts:
            rows += fn(args, details)
    print()
    print(markdown(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / "selfcheck.csv", index=False)
        write_sidecar(out / "selfcheck.csv", "benchmarks.selfcheck", argv, threads=args.threads,
                      batch_size=args.batch_size, parts=parts, max_frames=args.max_frames,
                      real_model=Path(args.real_model).name, public_model=Path(args.public_model).name,
                      match_nm=MATCH_NM, selfcheck_link=SELF_LINK, details=details)
        print(f"wrote {out / 'selfcheck.csv'} and {out / 'selfcheck.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
