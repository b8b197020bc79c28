"""Per-pixel sCMOS calibration (issue 34): frames simulated through a real camera's maps, and its real frames,
localized with the maps and with one uniform camera.

    python -m benchmarks.scmos [--data ../shared/data] [--frames 100] [--model smlm-ddpm-2d-100nm] [--psf 1.2]
        [--threads 1] [--out benchmarks/results]

The camera is the Hamamatsu sCMOS of ``storm_analysis_scmos_sample`` (256 x 256 pixels of 160 nm; offset,
read-noise variance and gain maps in the frames' row/column order, SOURCE.md). "Uniform" is the camera a user
without maps would give: the maps' medians (offset 100.4 ADU, gain 2.11 ADU/e-, read noise sqrt(median
variance) / gain = 1.13 e-, :meth:`smlm_diffusers.Camera.uniform`). Both runs are DeepSTORM mode as the CLI runs
it (the movie runner's chunk step with the CRLB photometry, float32 on the CPU; the folder's own arbitration
setting), PSF sigma ``--psf`` px (``estimate`` on the real frames: 1.19 px with the maps, 1.21 without).

- ``simulated``: ``--frames`` frames through the maps (:func:`smlm_diffusers.simulate`, each pixel's offset,
  gain and read noise), 200-500 photons per emitter (about 350, as the real spots), background 4 photons per
  pixel, 0.06 emitters per um^2 (about 100 per frame, as DeepSTORM finds in the real frames). Scores: Jaccard
  (250 nm), sigma coverage (share of |error / sigma| <= 1 per axis, ideal 0.683) of the matched molecules
  whose true position lies within 2 px of a noisy pixel (read-noise variance above 200 ADU^2; 8% of the field)
  and elsewhere, false positives per 1000 rows within 2 px of a noisy pixel, and error^2 over the per-pixel CRLB
  at the truth (:func:`smlm_diffusers.fisher.crlb_at_truth` with the maps; mean and median / 0.455, both 1 at
  the bound) of matched molecules with no other emitter within 1 um; the same ratio for the frame fit alone
  (:func:`~smlm_diffusers.localization.refine.refine_frames` seeded at the truth of those isolated emitters,
  ``fit_*``), which separates the likelihood from the detections. Time per frame: the chunks of both runs
  interleaved (the CPU is shared), the median per frame of each.
- ``real``: the 11 real frames: rows, rows within 2 px of a noisy pixel, sigma quantiles overall and there,
  the rows found by one run only (no row of the other within 100 nm), and the sigma self-check
  (:func:`smlm_diffusers.postprocess.sigma_selfcheck`), also split as :mod:`benchmarks.selfcheck` splits it
  (pairs with a row within one pixel of a pixel whose variance is above 100 ADU^2, and the others).

Prints both tables and, with ``--out``, writes ``scmos.csv`` / ``scmos.json`` (simulated) and
``scmos_real.csv`` / ``scmos_real.json`` (real), the command and settings in the sidecars.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from .selfcheck import hot_pixel_split
from .sidecar import write_sidecar

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
FOLDER = "storm_analysis_scmos_sample"
PIXEL_NM = 160.0
NOISY_ADU2 = 200.0
NEAR_PX = 2.0
ISOLATED_NM = 1000.0
MATCH_NM = 250.0


def load_camera(data: Path):
    """The sample's camera with its maps (read from the TIFFs: ``to_dict`` names them) and its frames."""
    import tifffile

    import smlm_diffusers as sd

    folder = data / FOLDER
    camera = sd.Camera(pixel_size_nm=PIXEL_NM).with_maps(offset=folder / "camera_offset_adu.tif",
                                                         variance=folder / "camera_variance_adu2.tif",
                                                         gain=folder / "camera_gain_adu_per_e.tif")
    return camera, tifffile.imread(folder / "sample_frames.tif").astype(np.float32)


def near_noisy(camera) -> np.ndarray:
    """[H, W] bool: pixels whose centre lies within NEAR_PX of a noisy pixel's centre."""
    r = int(NEAR_PX)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return binary_dilation(camera.maps.variance > NOISY_ADU2, structure=(yy**2 + xx**2) <= NEAR_PX**2)


def at(mask: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """``mask`` at each row's pixel (x_nm, y_nm)."""
    h, w = mask.shape
    r = np.clip(np.floor(table["y_nm"].to_numpy() / PIXEL_NM).astype(int), 0, h - 1)
    c = np.clip(np.floor(table["x_nm"].to_numpy() / PIXEL_NM).astype(int), 0, w - 1)
    return mask[r, c]


def load_pipe(model: str, psf_sigma_px: float, threads: int):
    import torch

    import smlm_diffusers as sd

    torch.set_num_threads(threads)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    trained = float(pipe.kde_net.config.psf_sigma_px)
    pipe.kde_net.register_to_config(psf_sigma_px=float(psf_sigma_px))  # as the CLI's --psf-sigma
    return pipe, trained


def localize_chunk(pipe, frames: np.ndarray, start: int, camera) -> tuple[pd.DataFrame, float]:
    """The CLI's DeepSTORM-mode rows of ``frames`` (the movie runner's chunk step, CRLB photometry) and seconds."""
    from smlm_diffusers.localization.crlb_uncertainty import add_crlb_uncertainty
    from smlm_diffusers.movie.chunks import localize_frames

    psf = float(pipe.kde_net.config.psf_sigma_px)

    def crlb(locs, windows, camera=camera):
        return add_crlb_uncertainty(locs, windows, camera, psf)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = localize_frames(pipe, np.ascontiguousarray(frames), start, num_samples=0, camera=camera,
                              batch_size=32, mixed_precision="no", postprocess=crlb)
        seconds = time.perf_counter() - t0
    return out.localizations, seconds


def localize_both(pipe, frames, cameras: dict, chunk: int = 10) -> tuple[dict, dict]:
    """Tables of every camera and its seconds per frame per chunk, the chunks interleaved (order alternating)."""
    tables, times = {k: [] for k in cameras}, {k: [] for k in cameras}
    names = list(cameras)
    for i, start in enumerate(range(0, len(frames), chunk)):
        for name in (names if i % 2 == 0 else names[::-1]):
            locs, s = localize_chunk(pipe, frames[start:start + chunk], start, cameras[name])
            tables[name].append(locs)
            times[name].append(s / len(frames[start:start + chunk]))
    return {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}, times


def score(gt: pd.DataFrame, locs: pd.DataFrame, near: np.ndarray, camera_maps, sigma_px: float) -> dict:
    import smlm_diffusers as sd
    from smlm_diffusers.fisher import crlb_at_truth
    from smlm_diffusers.localization.matching import match

    m = sd.evaluate(gt, locs, tolerance_nm=MATCH_NM)
    pairs = match(gt, locs, MATCH_NM)
    g, p = gt.iloc[pairs["gt_index"]], locs.iloc[pairs["pred_index"]]
    z = np.c_[pairs["dx"].to_numpy() / p["sigma_x_nm"].to_numpy(), pairs["dy"].to_numpy() / p["sigma_y_nm"].to_numpy()]
    g_near = at(near, g)
    cover = lambda sel: float(np.mean(np.abs(z[sel]) <= 1.0)) if sel.any() else float("nan")  # noqa: E731
    row_near = at(near, locs)
    fp = np.ones(len(locs), bool)
    fp[pairs["pred_index"].to_numpy()] = False
    # error^2 over the per-pixel CRLB at the truth, isolated molecules (no other true emitter within 1 um)
    pts = np.c_[gt["x_nm"], gt["y_nm"], gt["frame"] * 1e7]
    nn = cKDTree(pts).query(pts, k=2)[0][:, 1]
    iso = nn[pairs["gt_index"].to_numpy()] > ISOLATED_NM
    cx, cy = crlb_at_truth(g, sigma_px, camera_maps)
    r2 = np.c_[pairs["dx"].to_numpy() ** 2 / cx, pairs["dy"].to_numpy() ** 2 / cy]
    ratio = lambda sel: (float(np.mean(r2[sel])), float(np.median(r2[sel]) / 0.455)) if sel.any() else (None, None)  # noqa: E731
    mean_near, med_near = ratio(iso & g_near)
    mean_far, med_far = ratio(iso & ~g_near)
    return {"jaccard": m["jaccard"], "rmse_nm": m["rmse_nm"], "rows": len(locs), "matched": len(pairs),
            "coverage_near_noisy": cover(g_near), "coverage_elsewhere": cover(~g_near),
            "molecules_near_noisy": int(g_near.sum()), "rows_near_noisy": int(row_near.sum()),
            "fp_per_1000_near_noisy": 1000.0 * float(fp[row_near].mean()) if row_near.any() else float("nan"),
            "fp_per_1000_elsewhere": 1000.0 * float(fp[~row_near].mean()) if (~row_near).any() else float("nan"),
            "err2_over_crlb_near_noisy": mean_near, "err2_over_crlb_near_noisy_median": med_near,
            "err2_over_crlb_elsewhere": mean_far, "err2_over_crlb_elsewhere_median": med_far,
            "isolated_near_noisy": int((iso & g_near).sum()), "isolated_elsewhere": int((iso & ~g_near).sum())}


def fit_at_truth(frames, gt, near, camera, camera_maps, sigma_px: float) -> dict:
    """error^2 / per-pixel CRLB of the frame fit alone, seeded at the truth of the isolated emitters."""
    from smlm_diffusers.fisher import crlb_at_truth
    from smlm_diffusers.localization.refine import refine_frames

    pts = np.c_[gt["x_nm"], gt["y_nm"], gt["frame"] * 1e7]
    iso = gt[cKDTree(pts).query(pts, k=2)[0][:, 1] > ISOLATED_NM].reset_index(drop=True)
    fit = refine_frames(frames, iso[["frame", "x_nm", "y_nm"]], camera, sigma_px, split=False, seed_consistency=None)
    cx, cy = crlb_at_truth(iso, sigma_px, camera_maps)
    r2 = np.c_[(fit["x_nm"] - iso["x_nm"]).to_numpy() ** 2 / cx, (fit["y_nm"] - iso["y_nm"]).to_numpy() ** 2 / cy]
    z = np.c_[(fit["x_nm"] - iso["x_nm"]) / fit["crlb_x_nm"], (fit["y_nm"] - iso["y_nm"]) / fit["crlb_y_nm"]]
    g_near = at(near, iso)
    out = {}
    for where, sel in (("near_noisy", g_near), ("elsewhere", ~g_near)):
        out[f"fit_err2_over_crlb_{where}"] = float(np.mean(r2[sel]))
        out[f"fit_bound_coverage_{where}"] = float(np.mean(np.abs(z[sel]) <= 1.0))
    return out


def run_simulated(args, pipe, camera, near) -> list[dict]:
    import smlm_diffusers as sd

    frames, gt = sd.simulate(n_frames=args.frames, shape=camera.maps.shape, density=args.density,
                             photons=(200.0, 500.0), background=4.0, sigma_px=args.psf, camera=camera, seed=args.seed)
    cameras = {"per-pixel maps": camera, "uniform (maps' medians)": camera.uniform()}
    tables, times = localize_both(pipe, frames, cameras)
    rows = []
    for name, locs in tables.items():
        rows.append({"camera": name, "frames": len(frames), "emitters": len(gt)}
                    | score(gt, locs, near, camera, args.psf)
                    | fit_at_truth(frames, gt, near, cameras[name], camera, args.psf)
                    | {"ms_per_frame": 1000.0 * float(np.median(times[name]))})
    base = rows[1]["ms_per_frame"]
    for r in rows:
        r["time_vs_uniform"] = r["ms_per_frame"] / base
    return rows


def run_real(args, pipe, camera, frames, near) -> list[dict]:
    from smlm_diffusers.postprocess import sigma_selfcheck

    cameras = {"per-pixel maps": camera, "uniform (maps' medians)": camera.uniform()}
    tables, times = localize_both(pipe, frames, cameras, chunk=len(frames))
    rows = []
    for name, locs in tables.items():
        other = tables[[k for k in tables if k != name][0]]
        sig = np.r_[locs["sigma_x_nm"], locs["sigma_y_nm"]]
        rn = at(near, locs)
        sig_near = np.r_[locs["sigma_x_nm"][rn], locs["sigma_y_nm"][rn]]
        only = np.ones(len(locs), bool)
        if len(other):
            d, _ = cKDTree(np.c_[other["x_nm"], other["y_nm"], other["frame"] * 1e7]).query(
                np.c_[locs["x_nm"], locs["y_nm"], locs["frame"] * 1e7])
            only = d > 100.0
        check = sigma_selfcheck(locs)
        hot = hot_pixel_split(Path(args.data), locs, check)  # as benchmarks.selfcheck: variance > 100 ADU^2, 1 px
        q = lambda v, p: float(np.nanpercentile(v, p)) if len(v) else float("nan")  # noqa: E731
        rows.append({"camera": name, "frames": len(frames), "rows": len(locs), "rows_near_noisy": int(rn.sum()),
                     "rows_near_noisy_per_frame": float(rn.sum()) / len(frames),
                     "rows_only_this_camera": int(only.sum()), "rows_only_near_noisy": int((only & rn).sum()),
                     "sigma_p10_nm": q(sig, 10), "sigma_median_nm": q(sig, 50), "sigma_p90_nm": q(sig, 90),
                     "sigma_median_near_noisy_nm": q(sig_near, 50), "sigma_p90_near_noisy_nm": q(sig_near, 90),
                     "photons_median": float(np.nanmedian(locs["photons"])) if len(locs) else float("nan"),
                     "selfcheck_pairs": check.pairs, "selfcheck_coverage": check.coverage,
                     "selfcheck_robust_std": check.robust_std} | hot
                    | {"ms_per_frame": 1000.0 * float(np.median(times[name]))})
    return rows


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    frame = pd.DataFrame(rows)[columns]
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scmos", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="public data folder (default ../shared/data)")
    p.add_argument("--model", default=str(ROOT / "pretrained" / "smlm-ddpm-2d-100nm"),
                   help="pipeline folder (default smlm-ddpm-2d-100nm: its PSF of 1.1 px is the nearest to these "
                        "frames' 1.2 px; no shipped folder fits 160 nm pixels)")
    p.add_argument("--psf", type=float, default=1.2, help="PSF sigma, camera pixels (default 1.2: SOURCE.md)")
    p.add_argument("--frames", type=int, default=100, help="simulated frames (default 100)")
    p.add_argument("--density", type=float, default=0.06, help="emitters per um^2 (default 0.06)")
    p.add_argument("--seed", type=int, default=34)
    p.add_argument("--parts", default="simulated,real")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="folder for scmos.csv / scmos_real.csv and their sidecars")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / FOLDER).is_dir():
        print(f"no {FOLDER} under {data}: nothing to run", file=sys.stderr)
        return 2
    camera, real = load_camera(data)
    near = near_noisy(camera)
    pipe, trained_sigma = load_pipe(args.model, args.psf, args.threads)
    from smlm_diffusers.cli_optics import model_fit_warning

    warning = model_fit_warning(args.model, float(pipe.kde_net.config.pixel_size_nm), trained_sigma, PIXEL_NM,
                                args.psf, ddpm=False)
    facts = {"model": Path(args.model).name, "psf_sigma_px": args.psf, "pixel_size_nm": PIXEL_NM,
             "camera_uniform": camera.uniform().to_dict(), "noisy_pixels": int((camera.maps.variance > NOISY_ADU2).sum()),
             "near_noisy_fraction": float(near.mean()), "mode": pipe.call_mode(0).name if hasattr(pipe, "call_mode")
             else "DeepSTORM", "threads": args.threads, "model_fit_warning": warning}
    parts = set(args.parts.split(","))
    if "simulated" in parts:
        rows = run_simulated(args, pipe, camera, near)
        print_table(f"Simulated through the real maps: {args.frames} frames of 256 x 256 px, ~350 photons, background 4, "
                    f"PSF {args.psf:g} px, {args.density:g} per um^2 ({facts['mode']}, {facts['model']})", rows,
                    ["camera", "jaccard", "rmse_nm", "coverage_near_noisy", "coverage_elsewhere",
                     "fp_per_1000_near_noisy", "fp_per_1000_elsewhere", "ms_per_frame", "time_vs_uniform"])
        print_table("error^2 / per-pixel CRLB at the truth, isolated emitters: the pipeline's rows (mean; median "
                    "/ 0.455) and the frame fit seeded at the truth (mean), and that fit's own bound's coverage", rows,
                    ["camera", "err2_over_crlb_near_noisy", "err2_over_crlb_near_noisy_median",
                     "err2_over_crlb_elsewhere", "err2_over_crlb_elsewhere_median", "fit_err2_over_crlb_near_noisy",
                     "fit_err2_over_crlb_elsewhere", "fit_bound_coverage_near_noisy", "fit_bound_coverage_elsewhere"])
        if args.out:
            csv = Path(args.out) / "scmos.csv"
            pd.DataFrame(rows).to_csv(csv, index=False)
            write_sidecar(csv, "benchmarks.scmos", argv, **facts, frames=args.frames, density=args.density,
                          photons=[200.0, 500.0], background=4.0, seed=args.seed)
    if "real" in parts:
        rows = run_real(args, pipe, camera, real, near)
        print_table(f"The real frames ({len(real)}, {facts['mode']}, {facts['model']}, PSF {args.psf:g} px)", rows,
                    ["camera", "rows", "rows_near_noisy", "rows_only_this_camera", "rows_only_near_noisy",
                     "sigma_median_nm", "sigma_p90_nm", "sigma_median_near_noisy_nm", "sigma_p90_near_noisy_nm",
                     "selfcheck_coverage", "selfcheck_robust_std", "pairs_near_hot_pixel",
                     "selfcheck_coverage_near_hot_pixel", "selfcheck_coverage_away_from_hot_pixels"])
        if args.out:
            csv = Path(args.out) / "scmos_real.csv"
            pd.DataFrame(rows).to_csv(csv, index=False)
            write_sidecar(csv, "benchmarks.scmos", argv, **facts)
    if warning:
        print(f"\nmodel fit: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
