"""The command line's post-processing: options shared by ``localize`` and ``postprocess``, and both runs.

``smlm-diffusers localize STACK.tif -o locs.hdf5 --link --undrift`` post-processes the
whole table once the streaming pass is done (the checkpoints do not depend on these
options, so an interrupted run resumes as before and gives the same table);
``smlm-diffusers postprocess locs.hdf5 --link --undrift -o out.hdf5`` does it to a table
already written (this package's or Picasso's HDF5, or a ThunderSTORM CSV).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

POSTPROCESS_HELP = """\
post-processing (--link, --undrift; FRC always with either):
  --undrift measures the drift by redundant cross-correlation of segment renders (RCC) on
  the unlinked localizations and subtracts it; the trace is written beside the table as
  TABLE_drift.csv (frame 0-based, drift_x_nm, drift_y_nm) and TABLE_drift.png. --link
  merges the localizations of one blink (consecutive frames, --max-gap dark frames
  allowed, within --link-sigmas of their combined uncertainty): inverse-variance mean
  position, merged sigma 1/sqrt(sum 1/sigma^2), widened when the blink's frames scatter
  more than their sigmas allow (the CSV's uncertainty [nm]), photons
  summed, frame = the first frame, len (frames first to last) and n (localizations; CSV:
  detections), as Picasso's link. The FRC resolution of the result is printed and written
  to TABLE_postprocess.json. Every corrected row's sigma includes its frame's drift error. A
  sigma self-check (consecutive frames of each blink; blind to errors a blink's frames share)
  goes to the JSON, TABLE_selfcheck.png and the closing lines. The render is the streamed KDE, not drift corrected.
"""


def add_postprocess_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("post-processing")
    g.add_argument("--link", action="store_true", help="merge the localizations of each blink into one row")
    g.add_argument("--undrift", action="store_true", help="correct the stage drift (RCC), write the drift trace")
    g.add_argument("--link-sigmas", type=float, default=3.0, metavar="K",
                   help="link radius in combined sigmas of the two localizations (default 3)")
    g.add_argument("--max-gap", type=int, default=1, metavar="F",
                   help="dark frames a blink may skip and still be linked (default 1)")
    g.add_argument("--max-link-radius", type=float, default=200.0, metavar="NM",
                   help="never link farther than this, nm (default 200)")
    g.add_argument("--segment-frames", type=int, default=200, metavar="F",
                   help="frames per RCC segment (sparse ones are merged; default 200)")


def postprocess_options(args) -> dict | None:
    """Keyword arguments of :func:`~smlm_diffusers.postprocess.postprocess_localizations`, None if no step."""
    if not (args.link or args.undrift):
        return None
    if args.link_sigmas <= 0 or args.max_gap < 0 or args.max_link_radius <= 0 or args.segment_frames < 1:
        raise ValueError("--link-sigmas and --max-link-radius must be > 0, --max-gap >= 0, --segment-frames >= 1")
    sigma = getattr(args, "sigma", None)
    if sigma is not None and not sigma > 0:
        raise ValueError(f"--sigma must be > 0 nm, got {sigma:g}")
    return dict(link=bool(args.link), undrift=bool(args.undrift), n_sigma=args.link_sigmas, max_gap=args.max_gap,
                max_radius_nm=args.max_link_radius, segment_frames=args.segment_frames, sigma_nm=sigma)


def add_postprocess_parser(sub, func) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "postprocess", help="link blinks, correct drift and measure the FRC of a localization table",
        description="Post-process a localization table (this package's or Picasso's HDF5, or a ThunderSTORM CSV): "
                    "drift correction by RCC, linking of blinks, FRC resolution.",
        epilog=POSTPROCESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", metavar="TABLE", help="localizations: .hdf5 / .h5 (Picasso) or .csv (ThunderSTORM)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="table to write: .csv or .hdf5 / .h5")
    p.add_argument("--pixel-size", type=float, metavar="NM",
                   help="camera pixel, nm (default: the HDF5 metadata's; for a CSV only Picasso's output needs it)")
    p.add_argument("--sigma", type=float, metavar="NM",
                   help="--link: the position sigma (nm) of every row, for a table that has no uncertainty column")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages")
    add_postprocess_options(p)
    p.set_defaults(func=func)
    return p


def run_postprocess_command(args, log) -> int:
    """``smlm-diffusers postprocess``: read, post-process, write; ValueError/OSError for the user's mistakes."""
    from ..io import localization_format
    from .run import postprocess_localizations, read_table, write_postprocess_outputs

    options = postprocess_options(args)
    if options is None:
        raise ValueError("nothing to do: give --link and/or --undrift")
    src, out = Path(args.table), Path(args.output)
    if not src.is_file():
        raise ValueError(f"input table not found: {src}")
    localization_format(out)
    if out.resolve() == src.resolve():
        raise ValueError("-o must differ from the input table")
    from ..screening import describe_counts, screen_localizations

    locs, meta = read_table(src, args.pixel_size)
    # no field check: the table may be drift corrected already, its positions a drift's width off the frames
    locs, rejected = screen_localizations(locs, None, meta["pixel_size_nm"], meta["psf_sigma_px"])
    if describe_counts(rejected):
        log(f"{src.name}: left out {describe_counts(rejected)} (impossible numbers; counted in the summary)")
    result = postprocess_localizations(locs, meta["shape"][0], **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = write_postprocess_outputs(result, out, pixel_size_nm=meta["pixel_size_nm"], shape=meta["shape"],
                                        psf_sigma_px=meta["psf_sigma_px"], samples=meta["samples"], source=src.name,
                                        summary_extra={"input": str(src),
                                                       "input_rows_left_out": {k: v for k, v in rejected.items() if v}})
    for line in result.lines():
        log(line)
    for p in written:
        log(f"  wrote {p}")
    return 0


def postprocess_run(run, paths, shape, camera, psf_sigma_px: float, samples: bool, source: str, extra_info: dict,
                    options: dict) -> tuple[list[Path], list[str]]:
    """``localize --link/--undrift``: the finished run's table post-processed and written (instead of the raw
    one) with its drift files and summary; returns the files and the summary lines."""
    import time

    from .run import postprocess_localizations, write_postprocess_outputs

    t0 = time.perf_counter()
    result = postprocess_localizations(run.localizations(), run.frames_run, **options)
    h, w = shape
    summary = {"frames": run.frames_run, "localize_seconds": round(run.seconds, 3), "frames_new": run.frames_new,
               "frames_per_second": round(run.frames_per_second, 3) if run.frames_new else None}
    written = write_postprocess_outputs(result, paths.csv, pixel_size_nm=camera.pixel_size_nm,
                                        shape=(run.frames_run, h, w), psf_sigma_px=psf_sigma_px, samples=samples,
                                        camera=camera, source=source, extra_info=extra_info,
                                        summary_extra=summary | {"postprocess_seconds": round(time.perf_counter() - t0, 3)})
    run.localizations_written = result.rows_in  # what was localized; the link line says what it became
    return written, result.lines()


def stderr_log(quiet: bool):
    return (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
