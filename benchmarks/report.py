"""Write the benchmark tables into README.md (between the results markers) and the model card.

    python -m benchmarks.report [--results benchmarks/results] [--readme README.md] [--model pretrained/smlm-ddpm-2d]
                                [--public-model pretrained/smlm-ddpm-2d-100nm]

Nothing is retyped: the tables come from ``results.csv`` (``python -m benchmarks.run``),
``ddpm_sweep.csv`` and ``models.csv`` (``python -m benchmarks.ddpm_sweep``), ``simulator.json``, between the
public markers ``public.csv`` (``python -m benchmarks.public``) and between the posterior markers
``ddpm_posterior.csv`` (``python -m benchmarks.ddpm_posterior``), formatted by the same code as the
model card (``smlm_diffusers.hub``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from smlm_diffusers.hub import benchmark_tables, markdown_table, write_model_card
from smlm_diffusers.hub.tables import dense_table

from .sidecar import read_sidecar

START, END = "<!-- results:start -->", "<!-- results:end -->"
PUBLIC_START, PUBLIC_END = "<!-- public:start -->", "<!-- public:end -->"
POSTERIOR_START, POSTERIOR_END = "<!-- posterior:start -->", "<!-- posterior:end -->"

SWEEP_COLUMNS = [("method", "method", "s"), ("steps", "steps", "g"), ("samples", "samples", "g"),
                 ("jaccard", "Jaccard", ".3f"), ("rmse_nm", "RMSE (nm)", ".2f"), ("efficiency", "efficiency", ".1f"),
                 ("coverage_1sigma", "coverage of 1 sigma", ".3f"), ("z_std", "std z", ".2f"),
                 ("coverage_raw", "coverage, raw spread", ".3f"), ("z_std_raw", "std z, raw spread", ".2f"),
                 ("s_per_frame", "s per 64x64 frame", ".2f")]


MOVIE_COLUMNS = [("model", "model", "s"), ("head", "DeepSTORM head", "s"), ("refine", "frame MLE", "s"),
                 ("frame", "frame", "s"), ("frames", "frames", "g"), ("frames_per_s", "frames/s", ".3g"),
                 ("peak_rss_mb", "peak RSS (MB)", ".0f")]


REFINE_COLUMNS = [("scenario", "scenario", "s"), ("method", "method", "s"), ("jaccard", "Jaccard", ".3f"),
                  ("recall", "recall", ".3f"), ("rmse_nm", "RMSE (nm)", ".2f"),
                  ("rmse_crlb_ratio", "RMSE / sqrt(CRLB)", ".3f"), ("coverage_1sigma", "coverage of 1 sigma", ".3f"),
                  ("z_std", "std(z)", ".2f"), ("frac_abs_z_gt_3", "share of abs(z) > 3", ".3f"),
                  ("cpu_ms_per_frame", "refinement CPU ms per frame", ".1f")]

def dense_markdown(folder: Path) -> list[str]:
    """Both modes against the multi-emitter bound, calibration and probability (``python -m benchmarks.dense``)."""
    csv = folder / "dense.csv"
    if not csv.is_file():
        return []
    meta = read_sidecar(csv)
    how = f"`{meta['command']}`, {meta['threads']} thread(s)" if meta else "`python -m benchmarks.dense`"
    t = dense_table(pd.read_csv(csv))
    return [f"**{t['title']}** ({how}; {t['settings']})", "", t["table"], ""]


POSTERIOR_COLUMNS = [("label", "label", "s"), ("signal", "photons / background", "s"), ("density", "density", "g"),
                     ("samples", "K", "g"), ("steps", "steps", "g"), ("sample_hit", "sample hit", ".3f"),
                     ("hit_crowded", "hit, neighbour within 300 nm", ".3f"), ("hit_isolated", "hit, none", ".3f"),
                     ("missed", "arbitration's misses", "g"), ("proposal_recall", "proposal recall", ".3f"),
                     ("missed_hit", "misses hit at all", ".3f"), ("ece", "frequency ECE", ".3f"),
                     ("new_per_frame", "new clusters per frame", ".1f"), ("new_true", "of them true", ".2f"),
                     ("s_per_frame", "s per frame", ".2f")]


def posterior_markdown(folder: Path) -> list[str]:
    """The DDPM's samples as a posterior, one block of rows per label (``python -m benchmarks.ddpm_posterior``)."""
    csv = folder / "ddpm_posterior.csv"
    if not csv.is_file():
        return []
    meta = read_sidecar(csv) or {}
    table = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    commands = meta.get("commands") or {}
    how = "; ".join(f"{label or 'no label'}: `{cmd}`" for label, cmd in commands.items()) \
        or "`python -m benchmarks.ddpm_posterior`"
    threads = f", {meta['threads']} thread(s)" if "threads" in meta else ""
    frames = ", ".join(str(n) for n in sorted(table["frames"].unique()))
    return [f"**The DDPM's samples as a posterior** ({how}{threads}; {frames} simulated 64x64 frame(s) per row, "
            "108 nm pixels, PSF sigma 1 px; K samples drawn over the whole frame; within 60 nm throughout; the "
            "arbitration's misses: true emitters that DeepSTORM + arbitration, molecules with probability >= 0.5, "
            "leaves unmatched; proposal recall: the share of them with a sample detection not within 60 nm of "
            "its molecules; frequency ECE: samples holding a cluster / K against its being a true emitter, "
            "10 bins; s per frame: the sampling and its localization)", "",
            markdown_table(table.to_dict("records"), POSTERIOR_COLUMNS), ""]


def refinement_markdown(folder: Path) -> list[str]:
    """DeepSTORM mode with the frame refinement off and on (``python -m benchmarks.refinement``)."""
    csv = folder / "refinement.csv"
    if not csv.is_file():
        return []
    meta = read_sidecar(csv)
    how = f"`{meta['command']}`, {meta['threads']} thread(s)" if meta else "`python -m benchmarks.refinement`"
    rows = pd.read_csv(csv).to_dict("records")
    return [f"**Refinement on the frame, off and on, in DeepSTORM mode** ({how}; isolated: 64 emitters per "
            "64x64 frame on a jittered 8 px grid, background 20; density rows at 2000 photons; sigma = the "
            "bound of the fit; the timing rows refine 100 frames at density 2)", "",
            markdown_table(rows, REFINE_COLUMNS), ""]


def movie_markdown(folder: Path) -> list[str]:
    """The whole-movie table (``python -m benchmarks.movie --out``), with memory and time breakdown."""
    csv = folder / "movie.csv"
    if not csv.is_file():
        return []
    from .movie import breakdown_text

    meta = read_sidecar(csv) or {}
    rows = pd.read_csv(csv).to_dict("records")
    for r in rows:
        r["frame"] = f"{r['size']} x {r['size']}"
        r["refine"] = "on" if r["refine"] else "off"
    how = (f"`{meta['command']}`, {meta['threads']} thread(s), mixed precision {meta['mixed_precision']}, "
           f"batches of {meta['batch_size']} frames" if meta else "`python -m benchmarks.movie --out benchmarks/results`")
    parts = [f"**Whole movies in DeepSTORM mode** ({how}; uint16 TIFF movies read page by page, density 2 per "
             "square micrometre, 2000 photons, background 20; frames/s of the run alone, each run in a fresh "
             "process, peak RSS of that process)", "", markdown_table(rows, MOVIE_COLUMNS), ""]
    for model, facts in (meta.get("models") or {}).items():
        m, t = facts.get("memory"), facts.get("breakdown_ms")
        if m:
            parts.append(f"- `{model}`, {m['size']} x {m['size']} frames in batches of {m['batch']}: peak RSS "
                         f"{m['peak_rss_mb'][0]:.0f} MB at {m['frames'][0]} frames and {m['peak_rss_mb'][1]:.0f} MB "
                         f"at {m['frames'][1]} frames ({m['kb_per_extra_frame']:+.0f} KB per extra frame; one raw "
                         f"frame is {m['size'] ** 2 * 2 // 1024} KB).")
        if t:
            parts.append(f"- `{model}`, a 64 x 64 frame in ms: {breakdown_text(t)}.")
    return parts + [""]


def results_markdown(folder: Path) -> str:
    parts = []
    csv = folder / "results.csv"
    if csv.is_file():
        for t in benchmark_tables(pd.read_csv(csv)):
            parts += [f"**{t['title']}**" + (f" ({t['settings']})" if t["settings"] else ""), "", t["table"], ""]
    sweep = folder / "ddpm_sweep.csv"
    if sweep.is_file():
        meta = read_sidecar(sweep)
        how = (f"`{meta['command']}`, {meta['threads']} thread(s); the same {meta['frames']} simulated 64x64 frame(s) "
               f"for every row: density {meta['density']:g} per square micrometre, 2000 photons, background 20"
               if meta else "`python -m benchmarks.ddpm_sweep`")
        parts += [f"**DDPM: steps x samples against time** ({how}; coverage with the folder's calibrated sigma "
                  "and with the raw sample spread)", "",
                  markdown_table(pd.read_csv(sweep).to_dict("records"), SWEEP_COLUMNS), ""]
    models = folder / "models.csv"
    if models.is_file():
        meta = read_sidecar(models)
        how = f"`{meta['command']}`, {meta['threads']} thread(s)" if meta else "`python -m benchmarks.ddpm_sweep --csv models.csv`"
        parts += ["**DDPM v2 against v1 on the same frames** "
                  f"({how}; the same simulated 64x64 frames for every row: density 2, 2000 photons, background 20; "
                  "each folder's own calibrated sigma, and the raw sample spread)", "",
                  markdown_table(pd.read_csv(models).to_dict("records"), [("model", "model", "s")] + SWEEP_COLUMNS),
                  ""]
    parts += dense_markdown(folder)
    parts += refinement_markdown(folder)
    parts += movie_markdown(folder)
    sim = folder / "simulator.json"
    if sim.is_file():
        s = json.loads(sim.read_text())
        parts += [f"Simulator: {s['frames_per_s']:.0f} frames/s of 64x64 frames with {s['emitters_per_frame']:.1f} "
                  "emitters each.", ""]
    if not parts:
        return "(no results yet: run `python -m benchmarks.run` first)"
    return "\n".join(parts).rstrip()


def public_markdown(folder: Path) -> str:
    csv = folder / "public.csv"
    if not csv.is_file():
        return "(no results yet: run `python -m benchmarks.public` first)"
    from benchmarks.public import public_table

    return public_table(pd.read_csv(csv))


def update_readme(readme: Path, body: str, start: str = START, end: str = END) -> None:
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} block")
    new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{body}\n{end}", text, flags=re.S)
    readme.write_text(new)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--model", default="pretrained/smlm-ddpm-2d", help="pipeline folder whose card is regenerated")
    p.add_argument("--public-model", default="pretrained/smlm-ddpm-2d-100nm",
                   help="pipeline folder whose card gets the public-data table (public.csv)")
    args = p.parse_args(argv)
    folder = Path(args.results)
    update_readme(Path(args.readme), results_markdown(folder))
    if PUBLIC_START in Path(args.readme).read_text():
        update_readme(Path(args.readme), public_markdown(folder), PUBLIC_START, PUBLIC_END)
    if POSTERIOR_START in Path(args.readme).read_text():
        body = ("\n".join(posterior_markdown(folder)).rstrip()
                or "(no results yet: run `python -m benchmarks.ddpm_posterior`)")
        update_readme(Path(args.readme), body, POSTERIOR_START, POSTERIOR_END)
    print(f"updated {args.readme}")
    if (Path(args.model) / "model_index.json").is_file():
        csv = folder / "results.csv"
        print(f"wrote {write_model_card(args.model, results=csv if csv.is_file() else None)}")
    if (Path(args.public_model) / "model_index.json").is_file():
        csv = folder / "public.csv"
        print(f"wrote {write_model_card(args.public_model, results=csv if csv.is_file() else None)}")


if __name__ == "__main__":
    main()
