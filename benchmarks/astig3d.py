"""3D astigmatic benchmark: simulated isolated emitters (RMSE / sqrt(CRLB), sigma_z coverage per z bin)
and the EPFL 2016 MT0.N1.LD AS frames (calibrated on frames 1-32 with their ground truth, tested on 33-64).

    python -m benchmarks.astig3d [--frames 400] [--out benchmarks/results/astig3d.json]

Simulation: emitters on a jittered grid (one per 16 x 16 pixel cell), z uniform in [-600, 600] nm,
1000 and 5000 photons, background 20 photons per pixel, 100 nm pixels, the PSF of ``SIM_PSF``;
localized by :func:`smlm_diffusers.localization.localize3d.localize_3d` (detector + 3D MLE), matched
at 250 nm. Per 200 nm bin of true z: lateral RMSE / sqrt(mean CRLB_x + CRLB_y), axial RMSE /
sqrt(mean CRLB_z) (CRLB at the true x, y, z, photons, background) and the fraction of |dz| <= sigma_z.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from smlm_diffusers.fisher import crlb_3d
from smlm_diffusers.localization.localize3d import localize_3d
from smlm_diffusers.optics import AstigmaticPSF, Optics
from smlm_diffusers.simulation import Camera, simulate

SIM_CAMERA = Camera(pixel_size_nm=100.0)
SIM_PSF = AstigmaticPSF(sigma0_x_px=1.1, sigma0_y_px=1.1, focus_x_nm=-300.0, focus_y_nm=300.0, depth_x_nm=450.0,
                        depth_y_nm=450.0, wobble_x_px=(0.0, 0.1), wobble_y_px=(0.0, -0.05), z_range_nm=(-700.0, 700.0))
BINS = np.arange(-600, 601, 200)


def _match(gt: pd.DataFrame, pred: pd.DataFrame, tol_nm: float = 250.0, tol_z_nm: float | None = None):
    """Matched (gt row, pred row) pairs per frame, Hungarian on lateral distance (and |dz| <= tol_z_nm)."""
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for f, g in gt.groupby("frame"):
        p = pred[pred["frame"] == f]
        if not len(p):
            continue
        d = np.hypot(g["x_nm"].to_numpy()[:, None] - p["x_nm"].to_numpy()[None], g["y_nm"].to_numpy()[:, None]
                     - p["y_nm"].to_numpy()[None])
        bad = d > tol_nm
        if tol_z_nm is not None:
            bad |= np.abs(g["z_nm"].to_numpy()[:, None] - p["z_nm"].to_numpy()[None]) > tol_z_nm
        cost = np.where(bad, 1e9, d)
        r, c = linear_sum_assignment(cost)
        keep = ~bad[r, c]
        pairs += list(zip(g.index[r[keep]], p.index[c[keep]]))
    return pairs


def simulated(n_frames: int, photons: float, seed: int = 0) -> list[dict]:
    frames, gt = simulate(n_frames=n_frames, shape=(64, 64), photons=photons, background=20.0, seed=seed,
                          structure="grid", spacing_px=16.0, jitter_px=3.0, camera=SIM_CAMERA, psf=SIM_PSF,
                          z_nm=(-600.0, 600.0))
    pred = localize_3d(frames, Optics(SIM_CAMERA, SIM_PSF))
    pairs = _match(gt, pred)
    g, p = gt.loc[[i for i, _ in pairs]].reset_index(drop=True), pred.loc[[j for _, j in pairs]].reset_index(drop=True)
    a = SIM_CAMERA.pixel_size_nm
    cx, cy, cz = crlb_3d(g["photons"].to_numpy(), g["background"].to_numpy(), SIM_PSF, g["z_nm"].to_numpy(),
                         SIM_CAMERA, x_px=6 + np.mod(g["x_nm"] / a, 1.0), y_px=6 + np.mod(g["y_nm"] / a, 1.0),
                         roi_size=13)
    dx, dy, dz = (p[c] - g[c] for c in ("x_nm", "y_nm", "z_nm"))
    rows = []
    for lo in BINS[:-1]:
        m = ((g["z_nm"] >= lo) & (g["z_nm"] < lo + 200)).to_numpy()
        rows.append({
            "photons": photons, "z_bin_nm": f"[{lo}, {lo + 200})", "n": int(m.sum()),
            "lateral_rmse_nm": float(np.sqrt(np.mean(dx[m] ** 2 + dy[m] ** 2))),
            "lateral_ratio": float(np.sqrt(np.mean(dx[m] ** 2 + dy[m] ** 2) / np.mean(cx[m] + cy[m]))),
            "axial_rmse_nm": float(np.sqrt(np.mean(dz[m] ** 2))),
            "axial_ratio": float(np.sqrt(np.mean(dz[m] ** 2) / np.mean(cz[m]))),
            "coverage_z_1sigma": float(np.mean(np.abs(dz[m]) <= p["sigma_z_nm"][m])),
            "recall": float(m.sum() / max(1, ((gt["z_nm"] >= lo) & (gt["z_nm"] < lo + 200)).sum())),
        })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--out", default="benchmarks/results/astig3d.json")
    ap.add_argument("--skip-epfl", action="store_true")
    ap.add_argument("--model", default="pretrained/smlm-3d-as-100nm",
                    help="a 3D pipeline folder also run on the EPFL frames (skipped where absent)")
    args = ap.parse_args(argv)
    rows = simulated(args.frames, 1000.0, seed=1) + simulated(args.frames, 5000.0, seed=2)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    result = {"simulated": rows}
    if not args.skip_epfl:
        from benchmarks.epfl_as import run_epfl

        result["epfl"] = run_epfl()
        print(json.dumps(result["epfl"], indent=1))
        from benchmarks.epfl_as import EPFL_EMCCD

        result["epfl_emccd"] = run_epfl(camera=EPFL_EMCCD)  # the frames' excess noise modelled
        print(json.dumps(result["epfl_emccd"], indent=1))
        if Path(args.model).is_dir():  # the shipped 3D folder: its network's seeds too
            result["epfl_model"] = run_epfl(model=args.model)
            print(json.dumps(result["epfl_model"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
