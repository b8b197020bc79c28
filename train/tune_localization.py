"""Tune the KDE peak settings (threshold, refinement window) of a DeepSTORM on a validation set.

    python train/tune_localization.py pretrained/smlm-ddpm-2d
    python train/tune_localization.py runs/deepstorm_100nm/kde_net --densities 0.5,1,3,5.5 --backgrounds 20,500

The validation movies are simulated with their own seeds (9000+), never the benchmark's, over
the training optics: by default densities 0.5 to 4 per square micrometre, 1000 to 5000 photons
and background 20. The setting with the best mean efficiency becomes the pipeline's
``threshold`` and ``peak_window`` (a pipeline folder is loaded, changed by
``register_to_config`` and its config saved; no weights are rewritten). A bare DeepSTORM folder
(``train_deepstorm.py``'s ``kde_net``) has no pipeline config: the best setting is printed for
the ``pipeline:`` section of the DDPM training config. Either way the table is written to the
DeepSTORM folder as ``localization_tuning.csv`` (``train_ddpm.py`` copies it into the pipeline).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

import smlm_diffusers as sd
from smlm_diffusers.kde import KDEScaling
from smlm_diffusers.localization.peaks import DEFAULT_REFINE

DENSITIES = (0.5, 1.0, 2.0, 4.0)
PHOTONS = (1000.0, 2000.0, 5000.0)
THRESHOLDS = (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08)
WINDOWS = (5, 7)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a pipeline folder, or a DeepSTORM folder (e.g. .../kde_net)")
    p.add_argument("--frames", type=int, default=20, help="frames per (density, photons) setting")
    p.add_argument("--densities", type=_floats, default=DENSITIES, help="emitters per um^2, comma separated")
    p.add_argument("--photons", type=_floats, default=PHOTONS, help="photons per emitter, comma separated")
    p.add_argument("--backgrounds", type=_floats, default=(20.0,), help="photons per pixel, comma separated")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the config")
    args = p.parse_args(argv)

    folder = Path(args.model)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder) if (folder / "model_index.json").is_file() else None
    model = (pipe.kde_net if pipe is not None else sd.DeepSTORM.from_pretrained(folder)).eval()
    cfg = model.config
    refine = pipe.config.peak_refine if pipe is not None else model.legacy_localization.get("refine", DEFAULT_REFINE)
    camera = model.camera
    scaling = KDEScaling(cfg.kde_sigma)
    sets = []
    for k, (d, ph, bg) in enumerate(itertools.product(args.densities, args.photons, args.backgrounds)):
        frames, gt = sd.simulate(n_frames=args.frames, density=d, photons=ph, background=bg,
                                 sigma_px=cfg.psf_sigma_px, seed=9000 + k, camera=camera)
        kde = scaling.from_unit(model.predict(frames))
        sets.append((d, ph, kde, gt))
    rows = []
    for th, win in itertools.product(THRESHOLDS, WINDOWS):
        for d, ph, kde, gt in sets:
            pred = sd.localize_kde(kde, pixel_size_nm=cfg.pixel_size_nm, upsampling=cfg.upsampling, threshold=th,
                                   refine=refine, window=win, kernel_sigma=cfg.kde_sigma)
            m = sd.evaluate(gt, pred)
            rows.append({"threshold": th, "window": win, "density": d, "photons": ph, **{
                k: m[k] for k in ("jaccard", "rmse_nm", "efficiency")}})
    table = pd.DataFrame(rows)
    summary = table.groupby(["threshold", "window"])[["jaccard", "rmse_nm", "efficiency"]].mean().reset_index()
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    best = summary.loc[summary["efficiency"].idxmax()]
    print(f"\nbest: threshold={best.threshold:g} window={int(best.window)} "
          f"(mean efficiency {best.efficiency:.2f}, Jaccard {best.jaccard:.3f}, RMSE {best.rmse_nm:.1f} nm)")
    settings = {"threshold": float(best.threshold), "peak_window": int(best.window)}
    if args.dry_run:
        return best
    net_folder = folder / "kde_net" if pipe is not None else folder
    table.to_csv(net_folder / "localization_tuning.csv", index=False)
    if pipe is None:
        print(f"wrote {net_folder / 'localization_tuning.csv'}; for the pipeline: section of the DDPM config: "
              + ", ".join(f"{k}: {v:g}" for k, v in settings.items()))
        return best
    pipe.register_to_config(**settings)
    pipe.save_config(folder)
    model.save_config(net_folder)  # a config of the old format loses its localization keys here
    print(f"wrote {folder / 'model_index.json'}")
    return best


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
