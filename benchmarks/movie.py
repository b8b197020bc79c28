"""Whole movies in DeepSTORM mode: frames/s, peak resident memory, and where a frame's time goes.

    python -m benchmarks.movie [--model pretrained/smlm-ddpm-2d[,other folder...]] [--threads 1]
                               [--mixed-precision no] [--sizes 64 256 512] [--frames 200 20 8]
                               [--memory-frames 8 24] [--out benchmarks/results]

For each frame size it writes a uint16 TIFF movie (density 2 per square micrometre, 2000
photons, background 20; a few simulated frames repeated, written page by page) into a
temporary folder and localizes it with :func:`smlm_diffusers.movie.localize_movie` exactly as
``smlm-diffusers localize --mode deepstorm --no-arbitrate`` does (the CRLB photometry included), each run in a
fresh process so that its peak resident memory (``VmHWM``) is its own. Frames/s counts the
run alone (model loading excluded). Two 512 x 512 movies of different lengths give the memory
per frame: the growth of the peak per extra frame, against the 512 KB of one raw frame.
With several models (comma separated, e.g. the two DeepSTORM heads) each gets its rows.

Then, on 64 x 64 frames, where the time goes per frame: the network (``DeepSTORM.predict``), peak
finding and refinement (``localize_kde``), the rest of the pipeline call, the CRLB photometry,
and the runner's own work (reading, checkpoints, table). It prints the tables and, with
``--out``, writes ``movie.csv`` (one row per model and frame size, with the model's DeepSTORM
head and whether the frame refinement ran) and ``movie.json`` (the command, the memory runs and
the breakdowns) for ``python -m benchmarks.report``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .model_localizers import DEFAULT_MODEL
from .sidecar import write_sidecar

DENSITY, PHOTONS, BACKGROUND = 2.0, 2000.0, 20.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_stack(path: Path, size: int, n_frames: int, seed: int = 0, pool: int = 4) -> None:
    """A uint16 movie of ``n_frames`` frames of ``size`` x ``size``, written one page at a time."""
    import tifffile

    import smlm_diffusers as sd

    frames, _ = sd.simulate(n_frames=pool, shape=(size, size), density=DENSITY, photons=PHOTONS,
                            background=BACKGROUND, seed=seed)
    frames = np.round(frames).clip(0, 65535).astype(np.uint16)
    with tifffile.TiffWriter(path) as tif:
        for i in range(n_frames):
            tif.write(frames[i % pool], contiguous=True, photometric="minisblack")


def load(model: str, threads: int):
    import torch

    import smlm_diffusers as sd

    torch.set_num_threads(threads)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    pipe.register_to_config(deepstorm_arbitrate=False)  # plain DeepSTORM mode (localize --no-arbitrate), as the rows say
    return pipe


def model_facts(model: str) -> dict:
    """The DeepSTORM head and the frame-refinement setting of a pipeline folder (from its configs)."""
    folder = Path(model)
    kde = json.loads((folder / "kde_net" / "config.json").read_text()) if folder.is_dir() else {}
    index = json.loads((folder / "model_index.json").read_text()) if folder.is_dir() else {}
    return {"model": folder.name, "head": kde.get("head", "resize_conv"), "refine": bool(index.get("refine", False))}


def crlb_postprocess(pipe):
    """The CLI's DeepSTORM-mode uncertainty: photometry and the CRLB on the raw windows."""
    from smlm_diffusers.localization.crlb_uncertainty import add_crlb_uncertainty

    camera, psf = pipe.kde_net.camera, float(pipe.kde_net.config.psf_sigma_px)
    return lambda locs, windows: add_crlb_uncertainty(locs, windows, camera, psf)


def run_movie(args) -> dict:
    """One movie in this process (the child of :func:`main`): frames/s and peak RSS, as JSON."""
    import warnings

    from smlm_diffusers.movie import localize_movie

    pipe = load(args.model, args.threads)
    post = crlb_postprocess(pipe) if args.uncertainty == "crlb" else None
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "movie.tif"
        write_stack(stack, args.size, args.n)
        before = peak_rss_mb()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = localize_movie(pipe, stack, Path(tmp) / "locs.csv.partial", batch_size=args.batch_size,
                                 mixed_precision=args.mixed_precision, postprocess=post, progress=False)
            run.write_table(Path(tmp) / "locs.csv", pixel_size_nm=pipe.kde_net.camera.pixel_size_nm,
                            shape=(run.frames_run, run.height, run.width), psf_sigma_px=1.0, samples=False)
        seconds = time.perf_counter() - t0
        run.render()
        run.finish()
    return {"size": args.size, "frames": args.n, "seconds": seconds, "frames_per_s": args.n / seconds,
            "localizations": run.localizations_written, "peak_rss_mb": peak_rss_mb(), "rss_before_run_mb": before}


def child(args, size: int = 64, n: int = 64, batch_size: int | None = None, what: str = "movie") -> dict:
    """:func:`run_movie` (or :func:`breakdown`) in a fresh process: its own peak RSS and thread settings."""
    cmd = [sys.executable, "-m", "benchmarks.movie", "--child", what, "--size", str(size), "--n", str(n),
           "--model", args.model, "--threads", str(args.threads), "--mixed-precision", args.mixed_precision,
           "--batch-size", str(batch_size or args.batch_size), "--uncertainty", args.uncertainty]
    # BLAS threads as torch's: an OpenBLAS thread per core on a busy machine spins (the photometry's least
    # squares ran 100x slower here with 2 threads than with 1)
    env = os.environ | {k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def breakdown(args, n_frames: int = 64) -> dict:
    """Milliseconds per 64 x 64 frame in each part of one DeepSTORM-mode movie run (best of three)."""
    import warnings

    import tifffile

    import smlm_diffusers as sd
    from smlm_diffusers.movie import localize_movie

    pipe = load(args.model, args.threads)
    frames, gt = sd.simulate(n_frames=n_frames, shape=(64, 64), density=DENSITY, photons=PHOTONS,
                             background=BACKGROUND, seed=1)
    post = crlb_postprocess(pipe) if args.uncertainty == "crlb" else None
    spent = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    import smlm_diffusers.localization.molecules as readout

    net = pipe.kde_net
    net.predict = timed("network", net.predict)  # the pipeline's network pass and its peak finding
    pipe.localize_density = timed("peaks", pipe.localize_density)
    # the frame MLE, where the model's config turns it on
    readout.refine_frames = timed("refine", readout.refine_frames)
    post = timed("crlb", post) if post is not None else None
    runs = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack = Path(tmp) / "movie.tif"
        tifffile.imwrite(stack, np.round(frames).clip(0, 65535).astype(np.uint16))
        for _ in range(4):  # the first one warms up
            spent.clear()
            t0 = time.perf_counter()
            run = localize_movie(pipe, stack, Path(tmp) / "w", batch_size=args.batch_size,
                                 mixed_precision=args.mixed_precision, postprocess=post, progress=False,
                                 restart=True)
            run.write_table(Path(tmp) / "l.csv", pixel_size_nm=108.0, shape=(n_frames, 64, 64), psf_sigma_px=1.0,
                            samples=False)
            run.render()
            run.finish()
            runs.append(dict(spent, total=time.perf_counter() - t0))
    best = min(runs[1:], key=lambda r: r["total"])
    ms = {k: 1e3 * v / n_frames for k, v in best.items()}
    ms["rest"] = ms["total"] - ms["network"] - ms["peaks"] - ms.get("crlb", 0.0) - ms.get("refine", 0.0)
    out = pipe(frames, num_samples=0, batch_size=args.batch_size, mixed_precision=args.mixed_precision)
    m = sd.evaluate(gt, out.localizations)
    return ms | {"jaccard": m["jaccard"], "rmse_nm": m["rmse_nm"],
                 "molecules_per_frame": len(out.localizations) / n_frames}


def breakdown_text(t: dict) -> str:
    """One line of :func:`breakdown`'s milliseconds per 64 x 64 frame."""
    return (f"network {t['network']:.1f}, peak finding + KDE refinement {t['peaks']:.1f}, "
            f"frame MLE {t.get('refine', 0.0):.1f}, CRLB photometry {t.get('crlb', 0.0):.1f}, the rest (pipeline "
            f"bookkeeping, reading, checkpoints, table) {t['rest']:.1f}; total {t['total']:.1f} "
            f"({1e3 / t['total']:.1f} frames/s); {t['molecules_per_frame']:.0f} molecules per frame, "
            f"Jaccard {t['jaccard']:.3f}, RMSE {t['rmse_nm']:.2f} nm")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.movie", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder(s), comma separated")
    p.add_argument("--out", default=None, help="folder for movie.csv and movie.json (default: print only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the other core trains here)")
    p.add_argument("--mixed-precision", default="no", help="'no' (float32; this CPU has no native bf16) or 'bf16'")
    p.add_argument("--batch-size", type=int, default=32, help="frames per batch (default 32)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--frames", type=int, nargs="+", default=[200, 20, 8], help="movie length per size")
    p.add_argument("--memory-frames", type=int, nargs=2, default=[8, 24], metavar=("N1", "N2"),
                   help="two lengths of the memory movie (default 8 and 24 frames)")
    p.add_argument("--memory-size", type=int, default=512, help="frame side of the memory movie (default 512)")
    p.add_argument("--memory-batch", type=int, default=4,
                   help="its batch size (default 4: both lengths span several batches)")
    p.add_argument("--uncertainty", choices=("crlb", "none"), default="crlb",
                   help="crlb: the CLI's photometry and CRLB per molecule (default); none: positions only")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-per-frame runs")
    p.add_argument("--extras", choices=("all", "first"), default="all",
                   help="memory runs and time breakdown for every model, or the first only")
    p.add_argument("--no-breakdown", action="store_true", help="skip the time breakdown")
    p.add_argument("--child", choices=("movie", "breakdown"), help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_movie(args) if args.child == "movie" else breakdown(args, args.n)))
        return 0
    if len(args.frames) != len(args.sizes):
        p.error("--frames needs one length per --sizes entry")

    rows, extra = [], {}
    for i, model in enumerate(m.strip() for m in args.model.split(",") if m.strip()):
        args.model = model
        extras = args.extras == "all" or i == 0
        facts = model_facts(model)
        print(f"model {model} ({facts['head']} head, refine {facts['refine']}), {args.threads} thread(s), "
              f"mixed precision {args.mixed_precision}, batch {args.batch_size}, density {DENSITY:g}/um^2, "
              f"uncertainty {args.uncertainty}")
        print(f"{'frame':>9} {'frames':>6} {'frames/s':>9} {'s/frame':>8} {'peak RSS MB':>12}")
        for size, n in zip(args.sizes, args.frames):
            r = child(args, size, n)
            rows.append(facts | {"size": size, "frames": n, "frames_per_s": r["frames_per_s"],
                                 "peak_rss_mb": r["peak_rss_mb"]})
            print(f"{size:>4} x {size:<4}{n:>6} {r['frames_per_s']:>9.2f} {1 / r['frames_per_s']:>8.3f} "
                  f"{r['peak_rss_mb']:>12.0f}")
        here = extra.setdefault(facts["model"], {})
        if extras and not args.no_memory:
            n1, n2 = args.memory_frames
            size, mb = args.memory_size, args.memory_batch
            a, b = child(args, size, n1, mb), child(args, size, n2, mb)
            per_frame_kb = 1024 * (b["peak_rss_mb"] - a["peak_rss_mb"]) / (n2 - n1)
            here["memory"] = {"size": size, "batch": mb, "frames": [n1, n2],
                              "peak_rss_mb": [a["peak_rss_mb"], b["peak_rss_mb"]], "kb_per_extra_frame": per_frame_kb}
            print(f"{size} x {size}, batches of {mb}: peak RSS {a['peak_rss_mb']:.0f} MB at {n1} frames, "
                  f"{b['peak_rss_mb']:.0f} MB at {n2} frames: {per_frame_kb:+.0f} KB per extra frame "
                  f"(one raw frame: {size * size * 2 // 1024} KB uint16, {size * size * 4 // 1024} KB float32)")
        if extras and not args.no_breakdown:
            t = child(args, what="breakdown")
            here["breakdown_ms"] = t
            print(f"64 x 64 frame, ms: {breakdown_text(t)}")
    if args.out:
        import pandas as pd

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / "movie.csv", index=False)
        write_sidecar(out / "movie.csv", "benchmarks.movie", argv, threads=args.threads,
                      mixed_precision=args.mixed_precision, batch_size=args.batch_size, uncertainty=args.uncertainty,
                      models=extra)
        print(f"wrote {out / 'movie.csv'} and {out / 'movie.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
