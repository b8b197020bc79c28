"""Training logs (CSV + plot), seeding and checkpoint rotation, shared by the train/ scripts."""

from __future__ import annotations

import csv
import math
import re
import time
import shutil
from pathlib import Path

import numpy as np
import torch


class CSVLogger:
    """Append rows of metrics to a CSV file; new keys extend the header (file rewritten)."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        self.rows: list[dict] = []
        if resume and self.path.exists():
            with open(self.path) as fh:
                self.rows = list(csv.DictReader(fh))
        self._write()

    def log(self, row: dict, up_to_step: int | None = None):
        if up_to_step is not None:
            # after a resume, drop rows logged past the checkpoint we restarted from
            self.rows = [r for r in self.rows if int(float(r.get("step", 0))) <= up_to_step]
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._write()

    def _write(self):
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)


def plot_log(csv_path: str | Path, png_path: str | Path, columns: list[str]):
    """Plot training curves (log-scaled loss, linear metrics) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    cols = [c for c in columns if c in df]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axes[0], cols):
        d = df[["step", c]].dropna()
        ax.plot(d["step"], d[c], marker="." if len(d) < 50 else None)
        ax.set_xlabel("step")
        ax.set_title(c)
        if "loss" in c:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None."""
    folders = [p for p in Path(checkpoint_dir).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return max(folders, key=lambda p: int(p.name.split("-")[1]), default=None)


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch generator whose seed depends only on ``keys`` (e.g. seed, step, micro-batch, rank).

    Training data drawn this way is the same stream after a resume.
    """
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


def save_checkpoint(accelerator, ckpt_dir: Path, step: int, keep: int):
    """``accelerator.save_state`` into ``checkpoint-<step>``, keeping the newest ``keep``."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = sorted(Path(ckpt_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        for p in old[: max(len(old) - keep + 1, 0)]:
            shutil.rmtree(p)
    accelerator.save_state(str(Path(ckpt_dir) / f"checkpoint-{step}"))


def resume_from_checkpoint(accelerator, ckpt_dir: Path, which: str | None) -> int:
    """Load ``which`` (a checkpoint folder, or "latest" in ``ckpt_dir``) into the accelerator.

    Returns the step to continue from (0 without a checkpoint).
    """
    if not which:
        return 0
    path = latest_checkpoint(ckpt_dir) if which == "latest" else Path(which)
    if path is None:
        accelerator.print(f"no checkpoint in {ckpt_dir}; starting from scratch")
        return 0
    accelerator.load_state(str(path))
    step = int(path.name.split("-")[1])
    accelerator.print(f"resumed from {path} at step {step}")
    return step


def finish_step(step: int, cfg, losses: list[float], lr: float, t0: float, progress, validate=None) -> dict | None:
    """Bookkeeping after an optimizer step, shared by the training scripts.

    Raises on a non-finite loss; every ``cfg.log_every`` steps returns the mean loss since the
    last row (and empties ``losses``); every ``cfg.validate_every`` steps adds ``validate()``
    (pass None on processes that do not validate). Returns the row to log, or None.
    """
    if not math.isfinite(losses[-1]):
        raise FloatingPointError(f"loss is {losses[-1]} at step {step}")
    last = step == cfg.max_steps
    row = None
    if step % cfg.log_every == 0 or last:
        row = {"step": step, "loss": sum(losses) / len(losses), "lr": lr, "elapsed_s": round(time.time() - t0, 1)}
        progress.set_postfix(loss=f"{row['loss']:.4f}")
        losses.clear()
    if validate is not None and (step % cfg.validate_every == 0 or last):
        row = (row or {"step": step}) | validate()
        progress.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return row
