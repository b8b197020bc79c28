"""Figures of a post-processing result: the drift trace and the FRC curve (for files and for the app)."""

from __future__ import annotations

import math

import numpy as np

from .drift import DriftTrace
from .frc import FRC_THRESHOLD, FRCResult


def drift_figure(drift: DriftTrace | None = None, frc: FRCResult | None = None, title: str | None = None):
    """A matplotlib Figure: x and y drift (nm) against frame, and beside it the FRC curve with its
    threshold and resolution (either panel is left out when its input is None, or when it was not
    measured: its ``reason`` is then said in the title; with neither panel measured, a figure with the
    reasons alone).

    The figure is built without pyplot (no backend, no global figure list): save it with
    ``fig.savefig(path)`` or hand it to a UI (``gradio.Plot(value=fig)``); nothing to close.
    """
    if drift is None and frc is None:
        raise ValueError("drift_figure needs a drift trace, an FRC result or both")
    from matplotlib.figure import Figure

    reasons = [f"{name} not measured: {p.reason}" for name, p in (("drift", drift), ("FRC", frc))
               if p is not None and getattr(p, "reason", None)]
    drift = drift if drift is not None and not getattr(drift, "reason", None) else None
    frc = frc if frc is not None and not getattr(frc, "reason", None) else None
    panels = [p for p in (drift, frc) if p is not None]
    fig = Figure(figsize=(6 * max(len(panels), 1), 3.2 if panels else 1.0), dpi=120)
    if reasons:
        fig.suptitle("\n".join(reasons), fontsize=8)
    if not panels:
        return fig
    axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    if drift is not None:
        ax = axes.pop(0)
        frames = np.arange(len(drift.x_nm))
        ax.plot(frames, drift.x_nm, label="x", color="tab:blue")
        ax.plot(frames, drift.y_nm, label="y", color="tab:orange")
        ax.plot(drift.segment_frames, drift.segment_x_nm, "o", ms=3, color="tab:blue")
        ax.plot(drift.segment_frames, drift.segment_y_nm, "o", ms=3, color="tab:orange")
        ax.set_xlabel("frame")
        ax.set_ylabel("drift (nm)")
        ax.set_title(title or "drift (RCC)")
        ax.legend()
    if frc is not None:
        ax = axes.pop(0)
        ax.plot(frc.frequency_per_nm, frc.frc, color="black")
        ax.axhline(FRC_THRESHOLD, color="gray", ls="--", lw=1)
        r = frc.resolution_nm
        if math.isfinite(r):
            ax.axvline(1.0 / r, color="tab:red", lw=1)
        ax.set_xlabel("spatial frequency (1/nm)")
        ax.set_ylabel("FRC")
        ax.set_title(f"FRC resolution {r:.1f} nm" if math.isfinite(r) else "FRC: never below 1/7")
    fig.tight_layout()
    return fig
