"""Install the UNet of a finished training sitting into a shipped pipeline folder, in place.

    python train/install_weights.py runs/ddpm_v2c pretrained/smlm-ddpm-2d
    python train/install_weights.py runs/ddpm_v2_100nm pretrained/smlm-ddpm-2d-100nm --fresh

Training on this project's CPUs spans several sittings: each resumes from the committed weights
(``init_from``) and, when its time budget (``max_minutes``) is spent, exports
``<run>/pipeline``. This copies that pipeline's UNet weights over the folder's (the same file,
so git keeps one copy), continues the folder's ``unet/train_log.csv`` with the sitting's rows
(steps offset by the earlier sittings, a ``sitting`` column), keeps the config of each earlier
sitting as ``train_config_sitting<N>.yaml``, writes the new sitting's config as
``train_config.yaml`` and re-plots ``train_log.png``. ``--fresh`` starts the log anew (a
fine-tune into a new folder). The architecture must match; nothing else in the folder changes
(its calibration, peak settings and DeepSTORM stay: re-run the calibration after installing).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd


def install(run: Path, folder: Path, fresh: bool = False) -> pd.DataFrame:
    src, dst = run / "pipeline" / "unet", folder / "unet"
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (dst, src))
    keys = ("in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
            "layers_per_block")
    if any(ours.get(k) != theirs.get(k) for k in keys):
        raise SystemExit(f"{src} is not the architecture of {dst}: {[k for k in keys if ours.get(k) != theirs.get(k)]}")
    shutil.copy(src / "diffusion_pytorch_model.safetensors", dst / "diffusion_pytorch_model.safetensors")
    new = pd.read_csv(run / "train_log.csv")
    if fresh or not (dst / "train_log.csv").is_file():
        log = new.assign(sitting=1)
    else:
        old = pd.read_csv(dst / "train_log.csv")
        if "sitting" not in old:
            old["sitting"] = 1
        offset, last = int(old["step"].max()), int(old["sitting"].max())
        log = pd.concat([old, new.assign(step=new["step"] + offset, sitting=last + 1)], ignore_index=True)
        kept = dst / f"train_config_sitting{last}.yaml"  # the config of the sitting being continued
        if (dst / "train_config.yaml").is_file() and not kept.is_file():
            shutil.copy(dst / "train_config.yaml", kept)
    log.to_csv(dst / "train_log.csv", index=False)
    shutil.copy(run / "train_config.yaml", dst / "train_config.yaml")
    from smlm_diffusers.training import plot_log

    cols = ["loss"] + [c for c in log.columns if c.startswith(("jaccard_", "rmse_nm_", "coverage_"))]
    plot_log(dst / "train_log.csv", dst / "train_log.png", cols)
    return log


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the training run's output_dir (holds pipeline/ and train_log.csv)")
    p.add_argument("folder", type=Path, help="the shipped pipeline folder to update")
    p.add_argument("--fresh", action="store_true", help="start the folder's training log anew")
    args = p.parse_args(argv)
    log = install(args.run, args.folder, args.fresh)
    print(f"{args.folder}: UNet of {args.run}; {int(log['sitting'].max())} sitting(s), {int(log['step'].max())} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
