"""EPFL 2016 challenge MT0.N1.LD, astigmatic (AS) modality: calibrate on frames 1-32, test on 33-64.

Calibration (frames 1-32 only, with their ground truth): bright spots are fitted with an
elliptical Gaussian, matched to the ground truth (250 nm), and the Huang curves and wobble are
fitted to the widths and centre offsets against the true z (:func:`fit_astigmatism`). Test
(frames 33-64, never fitted to): :func:`localize_3d` with that optics; matching per frame at
250 nm lateral and 500 nm axial; the mean lateral offset of the matches removed (as the challenge
did for AS); Jaccard, lateral RMSE sqrt(mean(dx^2 + dy^2)), axial RMSE and the count of emitters.
Camera (``data/epfl2016_MT0.N1.LD/SOURCE.md``): 100 nm pixels, offset 100 ADU, 1/6 photon per ADU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from smlm_diffusers.localization.localize3d import detect, localize_3d
from smlm_diffusers.localization.spot_fit import fit_elliptical
from smlm_diffusers.optics import Optics
from smlm_diffusers.optics.calibration import fit_astigmatism
from smlm_diffusers.simulation import Camera

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "epfl2016_MT0.N1.LD"
EPFL_CAMERA = Camera(pixel_size_nm=100.0, offset=100.0, gain=6.0, read_noise=1.0)
# the frames' noise is an EMCCD's: background variance 1.97x EPFL_CAMERA's prediction, 0.99x this one's
EPFL_EMCCD = Camera.emccd(pixel_size_nm=100.0, offset=100.0, gain=6.0, read_noise=1.0, excess_noise=2.0)
CALIBRATION_FRAMES = range(0, 32)  # 0-based: the files 00001..00032
TEST_FRAMES = range(32, 64)


def load(data: Path = DATA):
    data = Path(data) if Path(data).exists() else Path("/work/shared/data/epfl2016_MT0.N1.LD")
    frames = np.stack([tifffile.imread(p) for p in sorted((data / "AS_frames_1-64").glob("*.tif"))]).astype(np.float64)
    gt = pd.read_csv(data / "activations.csv", skipinitialspace=True)
    gt.columns = [c.strip() for c in gt.columns]
    gt = gt[gt["frame"] <= len(frames)]
    gt = pd.DataFrame({"frame": gt["frame"].to_numpy(np.int64) - 1, "x_nm": gt["xnano"], "y_nm": gt["ynano"],
                       "z_nm": gt["znano"], "photons": gt["intensity"]}).reset_index(drop=True)
    return frames, gt


def calibrate(frames, gt, camera: Camera = EPFL_CAMERA, radius: int = 7, wobble_degree: int = 0,
              shared_shape: bool = True) -> tuple[Optics, pd.DataFrame]:
    from benchmarks.astig3d import _match

    frames, gt = frames[list(CALIBRATION_FRAMES)], gt[gt["frame"].isin(CALIBRATION_FRAMES)]
    ph = np.asarray(camera.adu_to_photons(frames))
    f, r, c = detect(ph, 1.5, 8.0)
    h, w = ph.shape[1:]
    inside = (r >= radius) & (r < h - radius) & (c >= radius) & (c < w - radius)
    f, r, c = f[inside], r[inside], c[inside]
    offs = np.arange(-radius, radius + 1)
    win = ph[f[:, None, None], r[:, None, None] + offs[None, :, None], c[:, None, None] + offs[None, None, :]]
    fit = fit_elliptical(win, camera.read_noise, 1.5)
    x, y, n, b, sx, sy = fit.theta.T
    spots = pd.DataFrame({"frame": f, "x_nm": (c - radius + x) * 100.0, "y_nm": (r - radius + y) * 100.0,
                          "sx": sx, "sy": sy, "ok": fit.ok & (sx < radius / 2) & (sy < radius / 2)})
    spots = spots[spots["ok"]].reset_index(drop=True)
    pairs = _match(gt.reset_index(drop=True), spots)
    g = gt.reset_index(drop=True).loc[[i for i, _ in pairs]].reset_index(drop=True)
    s = spots.loc[[j for _, j in pairs]].reset_index(drop=True)
    psf = fit_astigmatism(g["z_nm"], s["sx"], s["sy"], (s["x_nm"] - g["x_nm"]) / 100.0,
                          (s["y_nm"] - g["y_nm"]) / 100.0, higher_order=False, z_range_nm=(-750.0, 750.0),
                          wobble_degree=wobble_degree, shared_shape=shared_shape)
    table = pd.DataFrame({"z_nm": g["z_nm"], "sigma_x_px": s["sx"], "sigma_y_px": s["sy"],
                          "dx_px": (s["x_nm"] - g["x_nm"]) / 100.0, "dy_px": (s["y_nm"] - g["y_nm"]) / 100.0})
    return Optics(camera, psf), table


def run_epfl(data: Path = DATA, threshold_snr: float = 6.0, model: str | None = None,
             camera: Camera = EPFL_CAMERA) -> dict:
    """The test frames 33-64 localized with the optics calibrated on frames 1-32: by the matched filter and the 3D
    MLE alone, or (``model``, a 3D pipeline folder such as pretrained/smlm-3d-as-100nm) with the network's
    molecules and their z as seeds too (its own optics, calibrated the same way). ``camera``: the camera of the
    calibration and the fit (:data:`EPFL_EMCCD` models the frames' excess noise)."""
    from benchmarks.astig3d import _match

    frames, gt = load(data)
    optics, table = calibrate(frames, gt, camera)
    test = gt[gt["frame"].isin(TEST_FRAMES)].reset_index(drop=True)
    seeds = None
    if model is not None:
        from smlm_diffusers import SMLMDiffusionPipeline
        from smlm_diffusers.localization.localize3d import network_seeds_3d

        pipe = SMLMDiffusionPipeline.from_pretrained(model)
        optics = pipe.optics
        seeds = network_seeds_3d(pipe.kde_net, frames[list(TEST_FRAMES)], optics.camera, pipe.config.threshold)
    pred = localize_3d(frames[list(TEST_FRAMES)], optics, seeds=seeds, threshold_snr=threshold_snr,
                       extra_starts_nm=(-400.0, 400.0))
    pred["frame"] += TEST_FRAMES.start
    pairs = _match(test, pred, 250.0, 500.0)
    g = test.loc[[i for i, _ in pairs]].reset_index(drop=True)
    p = pred.loc[[j for _, j in pairs]].reset_index(drop=True)
    dx, dy, dz = (p[c] - g[c] for c in ("x_nm", "y_nm", "z_nm"))
    off = (float(dx.mean()), float(dy.mean()))
    tp = len(pairs)
    return {
        "n_ground_truth": len(test), "n_calibration_spots": len(table), "n_localizations": len(pred), "tp": tp,
        "fp": len(pred) - tp, "fn": len(test) - tp, "jaccard": tp / (len(pred) + len(test) - tp),
        "lateral_rmse_nm": float(np.sqrt(np.mean((dx - off[0]) ** 2 + (dy - off[1]) ** 2))),
        "axial_rmse_nm": float(np.sqrt(np.mean((dz - dz.mean()) ** 2))), "axial_rmse_raw_nm": float(np.sqrt(np.mean(dz ** 2))),
        "mean_offset_nm": off, "coverage_z_1sigma": float(np.mean(np.abs(dz) <= p["sigma_z_nm"])),
        "psf": optics.psf.to_dict(),
    }


def main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m benchmarks.epfl_as", description=__doc__.split("\n\n")[0])
    p.add_argument("--optics-out", metavar="YAML", help="write the optics calibrated on frames 1-32 (optics.yaml)")
    p.add_argument("--model", metavar="FOLDER", help="a 3D pipeline folder whose network seeds the fit too")
    args = p.parse_args(argv)
    if args.optics_out:
        frames, gt = load()
        optics, table = calibrate(frames, gt)
        optics.to_yaml(args.optics_out, {"calibration": {
            "source": "EPFL 2016 MT0.N1.LD AS frames 1-32 with their ground truth (python -m benchmarks.epfl_as)",
            "spots": int(len(table)), "z_covered_nm": [float(table["z_nm"].min()), float(table["z_nm"].max())]}})
        print(f"wrote {args.optics_out} ({len(table)} spots, z {table['z_nm'].min():.0f} to {table['z_nm'].max():.0f} nm)")
        return 0
    print(json.dumps(run_epfl(model=args.model), indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
