"""DeepSTORM mode's speed, before and after the compiled network, in one run (the machine is shared: only
ratios measured side by side mean anything).

    python -m benchmarks.speed [--model pretrained/smlm-ddpm-2d] [--threads 1] [--frames 64] [--repeats 3]
                               [--movie-frames 16] [--out benchmarks/results]

Inside the pipeline: ``pipe(frames, num_samples=0, batch_size=64, mixed_precision="no")`` on 64 x 64
frames at 1, 2, 3 and 4 emitters per square micrometre (2000 photons, background 20), with the
network run as the module (``compiled=False``, what main does) and as the frozen TorchScript copy
(:meth:`smlm_diffusers.DeepSTORM.inference_module`, the default now), alternating, best of
``--repeats``; frames/s, the network's share, and the Jaccard of both (they must agree). Through the
CLI's runner: a 256 x 256 uint16 TIFF movie (density 2) localized by
:func:`smlm_diffusers.movie.localize_movie` as ``smlm-diffusers localize --mode deepstorm --no-arbitrate`` does, both
ways. ``--sparse`` adds sparse 256 x 256 movies (0.01, 0.02 and 0.05 emitters per square micrometre)
through the same runner with the network on whole frames and only around the spots
(:mod:`smlm_diffusers.models.regions`, the default), the compiled network both times: frames/s, the
Jaccard of both against the truth, and how far the two tables' molecules lie apart. Prints the table;
with ``--out`` writes ``speed.csv`` and its sidecar ``speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .model_localizers import DEFAULT_MODEL
from .sidecar import write_sidecar

PHOTONS, BACKGROUND = 2000.0, 20.0


def network_mode(pipe, compiled: bool, spent: dict):
    """Make ``pipe.kde_net.predict`` run eager or compiled, adding its seconds to ``spent['network']``."""
    net = pipe.kde_net
    original = type(net).predict

    def predict(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(net, *args, **(kwargs | {"compiled": compiled}))
        spent["network"] = spent.get("network", 0.0) + time.perf_counter() - t0
        return out

    net.predict = predict


def pipeline_rows(pipe, args) -> list[dict]:
    import smlm_diffusers as sd

    rows = []
    for density in (1.0, 2.0, 3.0, 4.0):
        frames, gt = sd.simulate(n_frames=args.frames, shape=(64, 64), density=density, photons=PHOTONS,
                                 background=BACKGROUND, seed=7)
        best = {}
        for rep in range(args.repeats + 1):  # the first round warms up (and builds the compiled copy)
            for compiled in (False, True):
                spent = {}
                network_mode(pipe, compiled, spent)
                t0 = time.perf_counter()
                out = pipe(frames, num_samples=0, batch_size=64, mixed_precision="no")
                total = time.perf_counter() - t0
                if rep and total < best.get(compiled, {}).get("total", np.inf):
                    best[compiled] = {"total": total, "network": spent["network"],
                                      "jaccard": sd.evaluate(gt, out.localizations)["jaccard"]}
        for compiled, b in best.items():
            rows.append({"where": "pipeline 64x64", "density": density, "network": "compiled" if compiled else "eager",
                         "frames_per_s": args.frames / b["total"], "ms_per_frame": 1e3 * b["total"] / args.frames,
                         "network_ms_per_frame": 1e3 * b["network"] / args.frames, "jaccard": b["jaccard"]})
    return rows


def movie_rows(pipe, args) -> list[dict]:
    from smlm_diffusers.movie import localize_movie

    from .movie import crlb_postprocess, write_stack

    rows, best = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "movie.tif"
        write_stack(stack, 256, args.movie_frames)
        for rep in range(args.repeats):
            for compiled in (False, True):
                spent = {}
                network_mode(pipe, compiled, spent)
                t0 = time.perf_counter()
                run = localize_movie(pipe, stack, Path(tmp) / "work", batch_size=32, mixed_precision="no",
                                     postprocess=crlb_postprocess(pipe), progress=False, restart=True)
                seconds = time.perf_counter() - t0
                n_locs = len(run.localizations())
                run.finish()
                if seconds < best.get(compiled, {}).get("total", np.inf):
                    best[compiled] = {"total": seconds, "network": spent["network"], "localizations": n_locs}
    for compiled, b in best.items():
        rows.append({"where": "CLI runner 256x256", "density": 2.0, "network": "compiled" if compiled else "eager",
                     "frames_per_s": args.movie_frames / b["total"], "ms_per_frame": 1e3 * b["total"] / args.movie_frames,
                     "network_ms_per_frame": 1e3 * b["network"] / args.movie_frames,
                     "localizations": b["localizations"]})
    return rows


def sparse_rows(pipe, args) -> list[dict]:
    """Sparse 256 x 256 movies through the CLI's runner, whole frames against spot windows."""
    import tifffile

    import smlm_diffusers as sd
    from smlm_diffusers.localization import match
    from smlm_diffusers.movie import localize_movie

    from .movie import crlb_postprocess

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, density in enumerate((0.01, 0.02, 0.05)):
            frames, gt = sd.simulate(n_frames=args.movie_frames, shape=(256, 256), density=density, photons=PHOTONS,
                                     background=BACKGROUND, seed=20 + k)
            stack = Path(tmp) / f"sparse_{k}.tif"
            tifffile.imwrite(stack, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
            best, tables = {}, {}
            for rep in range(args.repeats):
                for windows in (False, True):
                    t0 = time.perf_counter()
                    run = localize_movie(pipe, stack, Path(tmp) / "work", batch_size=32, mixed_precision="no",
                                         sparse_windows=windows, postprocess=crlb_postprocess(pipe),
                                         progress=False, restart=True)
                    seconds = time.perf_counter() - t0
                    tables[windows] = run.localizations()
                    run.finish()
                    best[windows] = min(best.get(windows, np.inf), seconds)
            pairs = match(tables[False], tables[True], tolerance_nm=20.0)
            shift = float(np.hypot(pairs["dx"], pairs["dy"]).max()) if len(pairs) else np.nan
            for windows in (False, True):
                rows.append({"where": "CLI runner 256x256 sparse", "density": density,
                             "network": "spot windows" if windows else "whole frames",
                             "frames_per_s": args.movie_frames / best[windows],
                             "ms_per_frame": 1e3 * best[windows] / args.movie_frames,
                             "localizations": len(tables[windows]),
                             "jaccard": sd.evaluate(gt, tables[windows])["jaccard"],
                             "unmatched_between": len(tables[False]) + len(tables[True]) - 2 * len(pairs),
                             "max_shift_nm": shift})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=64, help="64 x 64 frames per density (one pipeline call)")
    p.add_argument("--movie-frames", type=int, default=16, help="frames of the 256 x 256 movie")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sparse", action="store_true", help="add the sparse 256 x 256 movies (spot windows)")
    p.add_argument("--only-sparse", action="store_true", help="only the sparse movies")
    p.add_argument("--out", default=None, help="folder for speed.csv (+ .json); default print only")
    args = p.parse_args(argv)

    from .movie import load

    pipe = load(args.model, args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [] if args.only_sparse else pipeline_rows(pipe, args) + movie_rows(pipe, args)
        if args.sparse or args.only_sparse:
            rows += sparse_rows(pipe, args)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    for where, g in table.groupby("where", sort=False):
        for density, h in g.groupby("density"):
            fps = h.set_index("network")["frames_per_s"]
            if "compiled" in fps:
                print(f"{where}, density {density:g}: compiled / eager = {fps['compiled'] / fps['eager']:.2f}x")
            else:
                print(f"{where}, density {density:g}: spot windows / whole frames = "
                      f"{fps['spot windows'] / fps['whole frames']:.2f}x")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = "speed_sparse" if args.only_sparse else "speed"  # the sparse rows alone keep the full table
        table.to_csv(out / f"{name}.csv", index=False)
        write_sidecar(out / f"{name}.csv", "benchmarks.speed", argv, threads=args.threads, photons=PHOTONS,
                      background=BACKGROUND, model=args.model)
        print(f"wrote {out / name}.csv and {out / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
