"""Make a 3D pipeline folder from a trained 3D DeepSTORM and its optics (no DDPM: the DDPM is 2D only).

    python train/install_3d_folder.py runs/deepstorm_3d_as pretrained/smlm-3d-as-100nm \
        --optics pretrained/smlm-3d-as-100nm/optics.yaml --threshold 0.05

The KDE peak threshold is tuned on simulated frames of the training optics (fixed seeds, never the
benchmark's test data): the Jaccard of the whole 3D localization (the network's seeds, the matched
filter's spots, the 3D MLE) at each candidate; the table is written beside the network
(``kde_net/localization_tuning.csv``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import yaml

THRESHOLDS = (0.02, 0.03, 0.05, 0.08, 0.12)


def tune_threshold(pipe, optics, ranges: dict, n_frames: int = 16, seed: int = 4321) -> pd.DataFrame:
    """Jaccard, lateral and axial RMSE of the 3D pipeline per threshold on simulated frames."""
    import numpy as np

    import smlm_diffusers as sd
    from smlm_diffusers.localization import match

    rows = []
    for density in (0.3, 1.0):
        frames, gt = sd.simulate(n_frames=n_frames, shape=(64, 64), density=density, photons=tuple(ranges["photons"]),
                                 background=tuple(ranges["background"]), camera=optics.camera, psf=optics.psf,
                                 z_nm=tuple(ranges["z_nm"]), seed=seed + int(10 * density))
        for t in THRESHOLDS:
            locs = pipe(frames, num_samples=0, threshold=t).localizations
            pairs = match(gt, locs)
            m = sd.evaluate(gt, locs)
            dz = locs["z_nm"].to_numpy()[pairs["pred_index"]] - gt["z_nm"].to_numpy()[pairs["gt_index"]]
            rows.append({"density": density, "threshold": t, "jaccard": m["jaccard"], "rmse_nm": m["rmse_nm"],
                         "rmse_z_nm": float(np.sqrt(np.mean(dz**2))) if len(dz) else float("nan")})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="training output folder (its kde_net/ and train_config.yaml)")
    p.add_argument("out", help="pipeline folder to write")
    p.add_argument("--optics", required=True, help="optics.yaml of the microscope (its PSF must be 3D)")
    p.add_argument("--threshold", type=float, help="the KDE peak threshold to ship in place of the simulated frames' best "
                   "(e.g. tuned on the microscope's own frames with ground truth; the table is still written)")
    args = p.parse_args(argv)

    import smlm_diffusers as sd
    from smlm_diffusers.optics import Optics

    run, out = Path(args.run), Path(args.out)
    optics = Optics.from_yaml(args.optics)
    if optics.ndim != 3:
        raise SystemExit(f"{args.optics}: the PSF is not 3D")
    net = sd.DeepSTORM.from_pretrained(run / "kde_net")
    if net.config.out_channels != 2:
        raise SystemExit(f"{run / 'kde_net'} is not a 3D DeepSTORM (out_channels != 2)")
    ranges = yaml.safe_load((run / "train_config.yaml").read_text())["data"]
    pipe = sd.SMLMDiffusionPipeline(kde_net=net.eval(), optics=optics.to_dict())
    pipe.set_progress_bar_config(disable=True)
    table = tune_threshold(pipe, optics, ranges)
    best = float(table.groupby("threshold")["jaccard"].mean().idxmax())
    print(table.round(4).to_string(index=False))
    print(f"threshold {best:g} (the best mean Jaccard)")
    if args.threshold is not None:
        best = float(args.threshold)
        print(f"shipping threshold {best:g} (--threshold)")
    pipe.register_to_config(threshold=best)
    if Path(args.optics).resolve() != (out / "optics.yaml").resolve():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.optics, out / "optics.yaml")
    pipe.save_pretrained(out)
    for name in ("train_config.yaml", "train_log.csv", "train_log.png"):
        if (run / "kde_net" / name).exists():
            shutil.copy(run / "kde_net" / name, out / "kde_net" / name)
    table.to_csv(out / "kde_net" / "localization_tuning.csv", index=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
