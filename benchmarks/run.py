"""Run the benchmark: ``python -m benchmarks.run [--methods picasso,...] [--quick] [--out DIR]``.

For every method x scenario: the method's tuning hook (if any) selects its parameters on
the scenario's tuning movie (another seed), the localizer runs once untimed on the first
``warmup_frames`` frames (JIT compilation, lazy model setup), then once timed on the scored
frames, and :func:`smlm_diffusers.evaluate` scores it (docs/conventions.md "Metrics": per-frame
Hungarian matching, 250 nm tolerance).

Outputs in ``--out`` (default ``benchmarks/results``):

- ``results.csv``: one row per method x scenario, columns :data:`RESULT_COLUMNS`
  (documented in :data:`COLUMN_DOCS` and benchmarks/README.md);
- ``simulator.json``: the simulator's throughput;
- ``isolated_rmse_vs_photons.png`` (log-log RMSE vs photons, sqrt(CRLB) as a line) and
  ``density_sweep.png`` (Jaccard and RMSE vs density).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_position_averaged

from .localizers import check_localizations, crlb_at_truth, get_localizer, load_plugins
from .scenarios import Scenario, default_scenarios, density_scenarios, isolated_scenarios, simulate_scenario

COLUMN_DOCS = {
    "method": "registered localizer name",
    "group": "scenario set: 'isolated' (photon sweep) or 'density' (density sweep)",
    "scenario": "scenario name",
    "layout": "'grid' (isolated emitters) or 'uniform' (smlm_diffusers.simulate)",
    "photons": "photons per emitter (incident)",
    "background": "background photons per pixel",
    "density": "emitters per um^2 (NaN for the grid layout)",
    "sigma_px": "PSF sigma, camera pixels",
    "n_frames": "scored frames",
    "seed": "seed of the scored movie",
    "tuning_seed": "seed of the tuning movie",
    "n_gt": "ground-truth emitters", "n_pred": "localizations",
    "tp": "matched pairs", "fp": "unmatched localizations", "fn": "unmatched ground truth",
    "jaccard": "TP / (TP + FP + FN)",
    "precision": "TP / n_pred", "recall": "TP / n_gt",
    "rmse_nm": "lateral RMSE sqrt(mean(dx^2 + dy^2)) over matched pairs, nm",
    "rmse_x_nm": "RMSE in x, nm", "rmse_y_nm": "RMSE in y, nm",
    "efficiency": "100 - sqrt((100 - 100 Jaccard)^2 + (RMSE / 1 nm)^2)",
    "crlb_nm": "sqrt(mean CRLB_x + mean CRLB_y) over all ground-truth emitters at their true "
               "(x, y, photons, background), nm; isolated scenarios only",
    "rmse_crlb_ratio": "sqrt((RMSE_x^2 + RMSE_y^2) / (mean CRLB_x + mean CRLB_y)) over matched pairs; isolated only",
    "coverage_1sigma": "fraction of |error / predicted sigma| <= 1 over both axes (ideal 0.683); "
                       "NaN if the method gives no sigma_x_nm/sigma_y_nm",
    "z_std": "std of error / predicted sigma (ideal 1)",
    "z_mean": "mean of error / predicted sigma (ideal 0)",
    "localize_s": "wall time of the timed localizer call (scored frames only), s",
    "frames_per_s": "n_frames / localize_s",
    "tune_s": "wall time of the tuning hook, s (NaN if none)",
    "tuned": "JSON of the parameters returned by the tuning hook",
    "border_px": "scoring ignored ground truth (and unmatched localizations) within this many pixels "
                 "of the frame border (0: the whole field, the default)",
}
RESULT_COLUMNS = list(COLUMN_DOCS)

TABLE_COLUMNS = {
    "method": "method",
    "scenario": "scenario",
    "jaccard": "Jaccard",
    "rmse_nm": "RMSE nm",
    "efficiency": "eff",
    "rmse_crlb_ratio": "RMSE/sqrtCRLB",
    "coverage_1sigma": "cov1s",
    "z_std": "std z",
    "frames_per_s": "frames/s",
}


def run_benchmark(
    methods,
    scenarios: list[Scenario] | None = None,
    camera: sd.Camera | None = None,
    tolerance_nm: float = 250.0,
    method_options: dict | None = None,
    warmup_frames: int = 2,
    tune: bool = True,
    border_px: float = 0.0,
    verbose: bool = False,
) -> pd.DataFrame:
    """Run ``methods`` on ``scenarios`` and return one row per method x scenario.

    Parameters
    ----------
    methods : str or list of str
        Registered localizer names (:data:`benchmarks.localizers.LOCALIZERS`), or
        ``LABEL=NAME`` to run localizer NAME under the row label LABEL (the same localizer
        with two models side by side: ``"DDPM v1=DDPM,DDPM v2=DDPM"``); a comma-separated
        string is split. ``method_options`` are keyed by the label.
    scenarios : list of Scenario, optional
        Default :func:`benchmarks.scenarios.default_scenarios`.
    camera : smlm_diffusers.Camera, optional
        Camera of the simulation and of the localizers (default: the paper's camera).
    tolerance_nm : float
        Matching radius.
    method_options : dict, optional
        ``{name: {factory kwargs}}``.
    warmup_frames : int
        Frames of the untimed warm-up call (0 to skip).
    tune : bool
        Call the localizers' tuning hooks (on the tuning movie).
    border_px : float
        Score only the field's interior (see :func:`evaluate_interior`); 0 scores the
        whole field (docs/conventions.md). Tuning always sees the whole field.

    Returns
    -------
    pandas.DataFrame with columns :data:`RESULT_COLUMNS`.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    scenarios = default_scenarios() if scenarios is None else list(scenarios)
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names must be unique, got {names}")
    camera = camera or sd.Camera()
    method_options = method_options or {}
    localizers = {label_of(m): get_localizer(m.split("=", 1)[-1].strip(), **method_options.get(label_of(m), {}))
                  for m in methods}

    rows = []
    for sc in scenarios:
        frames, gt = simulate_scenario(sc, camera=camera)
        tuning = None
        crlb_fn = crlb_at_truth(camera, sc.sigma_px) if sc.isolated else None
        crlb_nm = math.nan
        if crlb_fn is not None and len(gt):
            cx, cy = crlb_fn(gt)
            crlb_nm = math.sqrt(float(np.mean(cx)) + float(np.mean(cy)))
        for name, loc in localizers.items():
            tuned, tune_s = {}, math.nan
            hook = getattr(loc, "tune", None)
            if tune and callable(hook):
                if tuning is None:
                    tuning = simulate_scenario(sc, seed=sc.tuning_seed, n_frames=sc.tuning_frames or sc.n_frames,
                                               camera=camera)
                t0 = time.perf_counter()
                tuned = dict(hook(tuning[0], tuning[1], camera, sc.sigma_px) or {})
                tune_s = time.perf_counter() - t0
            if warmup_frames > 0:
                loc(frames[:warmup_frames], camera, sc.sigma_px, **tuned)
            t0 = time.perf_counter()
            pred = loc(frames, camera, sc.sigma_px, **tuned)
            dt = time.perf_counter() - t0
            pred = check_localizations(pred, name)
            m = evaluate_interior(gt, pred, frames.shape[1:], camera.pixel_size_nm, border_px, tolerance_nm, crlb_fn)
            row = _result_row(name, sc, crlb_nm, dt, tune_s, tuned, border_px, m)
            rows.append(row)
            if verbose:
                print(f"  {name:>12s} {sc.name:<16s} J={row['jaccard']:.3f} RMSE={row['rmse_nm']:.2f} nm "
                      f"ratio={row['rmse_crlb_ratio']:.3f} {row['frames_per_s']:.3g} frames/s tuned={row['tuned']}",
                      flush=True)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _result_row(name, sc, crlb_nm, dt, tune_s, tuned, border_px, m) -> dict:
    """One row of :data:`RESULT_COLUMNS`: the scenario, the timing and the metrics ``m``."""
    row = {
        "method": name, "group": sc.group, "scenario": sc.name, "layout": sc.layout, "photons": sc.photons,
        "background": sc.background, "density": sc.density, "sigma_px": sc.sigma_px, "n_frames": sc.n_frames,
        "seed": sc.seed, "tuning_seed": sc.tuning_seed, "crlb_nm": crlb_nm, "localize_s": dt,
        "frames_per_s": sc.n_frames / dt if dt > 0 else math.inf, "tune_s": tune_s,
        "tuned": json.dumps(tuned, sort_keys=True, default=float), "border_px": float(border_px),
    }
    for k in ("n_gt", "n_pred", "tp", "fp", "fn", "jaccard", "precision", "recall", "rmse_nm",
              "rmse_x_nm", "rmse_y_nm", "efficiency", "rmse_crlb_ratio", "coverage_1sigma", "z_std", "z_mean"):
        row[k] = m.get(k, math.nan)
    return row


def evaluate_interior(gt, pred, shape, pixel_size_nm, border_px=0.0, tolerance_nm=250.0, crlb_nm2=None) -> dict:
    """:func:`smlm_diffusers.evaluate`, optionally ignoring a border of ``border_px`` pixels.

    With ``border_px > 0`` the tables are first matched on the whole field; then ground
    truth whose position lies within ``border_px`` of the border is dropped together with
    its matched localization, and unmatched localizations in the border are dropped. So a
    border emitter is neither a miss nor a hit, and a localization just outside the
    interior that belongs to an interior emitter still counts as its hit.
    """
    if not border_px or border_px <= 0:
        return sd.evaluate(gt, pred, tolerance_nm=tolerance_nm, crlb_nm2=crlb_nm2)
    from smlm_diffusers.localization import match

    h, w = shape
    a, b = float(pixel_size_nm), float(border_px)

    def inside(df):
        x = df["x_nm"].to_numpy(np.float64) / a
        y = df["y_nm"].to_numpy(np.float64) / a
        return (x >= b) & (x < w - b) & (y >= b) & (y < h - b)

    gt = gt.reset_index(drop=True)
    pred = pred.reset_index(drop=True)
    pairs = match(gt, pred, tolerance_nm)
    keep_gt = inside(gt)
    keep_pred = inside(pred)
    gi, pi = pairs["gt_index"].to_numpy(), pairs["pred_index"].to_numpy()
    keep_pred[pi] = keep_gt[gi]
    return sd.evaluate(gt[keep_gt].reset_index(drop=True), pred[keep_pred].reset_index(drop=True),
                       tolerance_nm=tolerance_nm, crlb_nm2=crlb_nm2)


def simulator_throughput(
    n_frames: int = 2000,
    shape=(64, 64),
    emitters_per_frame: float = 20.0,
    camera: sd.Camera | None = None,
    seed: int = 0,
) -> dict:
    """Frames per second of :func:`smlm_diffusers.simulate` (uniform emitters, 2000 photons, bg 20)."""
    camera = camera or sd.Camera()
    area_um2 = shape[0] * shape[1] * (camera.pixel_size_nm / 1000.0) ** 2
    density = emitters_per_frame / area_um2
    sd.simulate(n_frames=4, shape=shape, density=density, seed=seed, camera=camera)  # warm-up
    t0 = time.perf_counter()
    frames, gt = sd.simulate(n_frames=n_frames, shape=shape, density=density, seed=seed, camera=camera)
    dt = time.perf_counter() - t0
    return {
        "n_frames": int(n_frames),
        "shape": list(shape),
        "density_per_um2": density,
        "emitters_per_frame": len(gt) / n_frames,
        "seconds": dt,
        "frames_per_s": n_frames / dt,
    }


def format_table(results: pd.DataFrame, group: str) -> str:
    """The printed table of one scenario set."""
    df = results[results["group"] == group]
    if df.empty:
        return f"(no {group} scenarios)"
    t = df[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    fmt = {
        "Jaccard": "{:.3f}".format, "RMSE nm": "{:.2f}".format, "eff": "{:.1f}".format,
        "RMSE/sqrtCRLB": "{:.3f}".format, "cov1s": "{:.3f}".format, "std z": "{:.3f}".format,
        "frames/s": "{:.1f}".format,
    }
    return t.to_string(index=False, formatters=fmt, na_rep="-")


def make_plots(results: pd.DataFrame, out: Path, camera: sd.Camera | None = None) -> list[Path]:
    """PNG plots of the isolated and density sweeps; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    camera = camera or sd.Camera()
    out = Path(out)
    written = []
    iso = results[results["group"] == "isolated"]
    if not iso.empty:
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for (bg, sig), part in iso.groupby(["background", "sigma_px"]):
            p = np.geomspace(iso["photons"].min() * 0.8, iso["photons"].max() * 1.25, 60)
            ax.plot(p, crlb_position_averaged(p, bg, sig, camera), "k-", lw=1.2, label=f"sqrt(CRLB), bg {bg:g}")
        for method, part in iso.groupby("method", sort=False):
            part = part.sort_values("photons")
            ax.plot(part["photons"], part["rmse_nm"], "o--", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted(iso["photons"].unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("photons per emitter")
        ax.set_ylabel("lateral RMSE (nm)")
        ax.set_title("Isolated emitters")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "isolated_rmse_vs_photons.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    den = results[results["group"] == "density"]
    if not den.empty:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for method, part in den.groupby("method", sort=False):
            part = part.sort_values("density")
            axes[0].plot(part["density"], part["jaccard"], "o-", label=method)
            axes[1].plot(part["density"], part["rmse_nm"], "o-", label=method)
        axes[0].set_ylabel("Jaccard")
        axes[0].set_ylim(0, 1.02)
        axes[1].set_ylabel("lateral RMSE (nm)")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("density (emitters / um^2)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle("Density sweep")
        fig.tight_layout()
        path = out / "density_sweep.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def label_of(method: str) -> str:
    """The row label of a ``--methods`` entry: ``LABEL`` of ``LABEL=NAME``, else the name."""
    return method.split("=", 1)[0].strip()


def parse_options(items: list[str]) -> dict[str, dict]:
    """``["DDPM.num_samples=8", ...]`` -> ``{"DDPM": {"num_samples": 8}}`` (values parsed as YAML scalars)."""
    import yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.rpartition(".")
        if not (sep and dot and method and name):
            raise SystemExit(f"--option must look like METHOD.KEY=VALUE, got {item!r}")
        options.setdefault(method, {})[name] = yaml.safe_load(value)
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="picasso",
                        help="comma-separated registered localizers; LABEL=NAME runs NAME under the label LABEL")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (few frames)")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--groups", default="isolated,density", help="scenario sets to run")
    parser.add_argument("--plugins", default="", help="comma-separated modules to import (they register localizers)")
    parser.add_argument("--merge", action="store_true",
                        help="keep rows of other methods from an existing results.csv in --out")
    parser.add_argument("--sim-frames", type=int, default=None, help="frames of the simulator throughput run")
    parser.add_argument("--isolated-frames", type=int, default=None,
                        help="scored frames per photon level (16 emitters each; default 40, quick 4)")
    parser.add_argument("--density-frames", type=int, default=None,
                        help="scored frames per density (default 100, quick 5)")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="keyword argument for a method's factory, e.g. DDPM.num_samples=8 (repeatable)")
    parser.add_argument("--warmup-frames", type=int, default=2,
                        help="untimed frames run before each timed call (0 for slow methods)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--tolerance-nm", type=float, default=250.0)
    parser.add_argument("--border-px", type=float, default=0.0,
                        help="score only ground truth farther than this from the frame border (default 0: whole field)")
    args = parser.parse_args(argv)

    load_plugins([m.strip() for m in args.plugins.split(",") if m.strip()])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    groups = {g.strip() for g in args.groups.split(",") if g.strip()}
    scenarios = []
    if "isolated" in groups:
        scenarios += isolated_scenarios(quick=args.quick, n_frames=args.isolated_frames)
    if "density" in groups:
        scenarios += density_scenarios(quick=args.quick, n_frames=args.density_frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    results = run_benchmark(methods, scenarios, tolerance_nm=args.tolerance_nm, border_px=args.border_px,
                            method_options=parse_options(args.option), warmup_frames=args.warmup_frames,
                            verbose=True)
    total = time.perf_counter() - t0
    csv = out / "results.csv"
    if args.merge and csv.exists():
        old = pd.read_csv(csv)
        old = old[~old["method"].isin([label_of(m) for m in methods])]
        results = pd.concat([old, results], ignore_index=True).reindex(columns=RESULT_COLUMNS)
    results.to_csv(csv, index=False)

    for group in ("isolated", "density"):
        if (results["group"] == group).any():
            print(f"\n== {group} ==")
            print(format_table(results, group))

    sim_frames = args.sim_frames or (200 if args.quick else 2000)
    thr = simulator_throughput(n_frames=sim_frames)
    (out / "simulator.json").write_text(json.dumps(thr, indent=2) + "\n")
    print(f"\nsimulator: {thr['frames_per_s']:.0f} frames/s ({thr['n_frames']} frames 64x64, "
          f"{thr['emitters_per_frame']:.1f} emitters/frame, {thr['seconds']:.2f} s)")
    if not args.no_plots:
        for p in make_plots(results, out):
            print(f"wrote {p}")
    print(f"wrote {csv} ({len(results)} rows); benchmark wall time {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
