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
:func:`smlm_diffusers.movie.localize_movie` as ``smlm-diffusers localize --mode deepstorm`` does, both
ways. Prints the table; with ``--out`` writes ``speed.csv`` and its sidecar ``speed.json``.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=64, help="64 x 64 frames per density (one pipeline call)")
    p.add_argument("--movie-frames", type=int, default=16, help="frames of the 256 x 256 movie")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="folder for speed.csv (+ .json); default print only")
    args = p.parse_args(argv)

    from .movie import load

    pipe = load(args.model, args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = pipeline_rows(pipe, args) + movie_rows(pipe, args)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    for where, g in table.groupby("where", sort=False):
        for density, h in g.groupby("density"):
            fps = h.set_index("network")["frames_per_s"]
            print(f"{where}, density {density:g}: compiled / eager = {fps['compiled'] / fps['eager']:.2f}x")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "speed.csv", index=False)
        write_sidecar(out / "speed.csv", "benchmarks.speed", argv, threads=args.threads, photons=PHOTONS,
                      background=BACKGROUND, model=args.model)
        print(f"wrote {out / 'speed.csv'} and {out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
