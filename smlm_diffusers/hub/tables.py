"""Markdown tables of the model card: simulation and training settings, benchmark results."""

from __future__ import annotations

import math

from ..simulation.camera import FLAT_KEYS


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, spec: str = "g") -> str:
    """A table cell: NaN/None as an en dash, ranges as 'lo - hi', floats with ``spec``."""
    if _is_missing(v):
        return "–"
    if isinstance(v, (list, tuple)):
        return " – ".join(fmt(x, spec) for x in v) if len(v) == 2 else ", ".join(fmt(x, spec) for x in v)
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, (int, float)) or hasattr(v, "__float__"):
        if float(v).is_integer() and spec == "g" and abs(float(v)) < 1e15:
            return str(int(v))
        return format(float(v), spec)
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A GitHub markdown table; ``columns`` are (key, header, format spec)."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for _, h, _ in columns) + " |",
             "|" + "|".join("---" if spec in ("s", "") else "---:" for _, _, spec in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(fmt(row.get(k), spec if spec not in ("s", "") else "g"))
                                       for k, _, spec in columns) + " |")
    return "\n".join(lines)


_SIM_KEYS = [  # (key, meaning with unit)
    ("pixel_size_nm", "camera pixel size (nm)"),
    ("sigma_px", "PSF sigma (camera pixels), Gaussian"),
    ("camera_offset", "camera offset (ADU)"),
    ("camera_gain", "camera gain (ADU per photo-electron)"),
    ("read_noise", "read noise (e- rms)"),
    ("qe", "quantum efficiency"),
    ("photons", "photons per emitter"),
    ("background", "background (photons per pixel)"),
    ("background_variation", "relative background variation across a frame"),
    ("density", "emitter density (per um^2, per frame)"),
    ("patch_size", "simulated frame size (camera pixels)"),
    ("margin_px", "emitter-free margin (camera pixels)"),
    ("upsampling", "KDE upsampling factor"),
    ("kde_sigma", "KDE kernel sigma (upsampled pixels)"),
]


def flat_camera(data: dict) -> dict:
    """A config's ``data`` section with its ``camera:`` block spelled as the flat keys of the older
    configs (``pixel_size_nm``, ``camera_offset``, ...), so cards read both formats alike."""
    camera = data.get("camera")
    if not isinstance(camera, dict):
        return data
    names = {field: key for key, field in FLAT_KEYS.items()} | {"qe": "qe"}
    return {k: v for k, v in data.items() if k != "camera"} | {names.get(k, f"camera.{k}"): v
                                                               for k, v in camera.items()}


def simulation_table(record: dict) -> str | None:
    """Markdown table of the ``data`` (simulation) section of each training config."""
    sources = [(name, (record.get(name) or {}).get("config") or {}) for name in ("deepstorm", "ddpm")]
    sources = [(n, flat_camera(c["data"])) for n, c in sources if isinstance(c.get("data"), dict)]
    if not sources:
        return None
    keys = [k for k, _ in _SIM_KEYS] + sorted({k for _, d in sources for k in d} - {k for k, _ in _SIM_KEYS})
    meaning = dict(_SIM_KEYS)
    rows = [{"key": f"`{k}`", "meaning": meaning.get(k, ""), **{n: d.get(k) for n, d in sources}}
            for k in keys if any(k in d for _, d in sources)]
    titles = {"deepstorm": "DeepSTORM training", "ddpm": "DDPM training"}
    return markdown_table(rows, [("key", "parameter", "s"), ("meaning", "meaning", "s")]
                          + [(n, titles[n], "g") for n, _ in sources])


def training_table(record: dict) -> str | None:
    """Optimisation settings of both trainings (scalars of the configs) and the last validation."""
    rows = []
    for name, title in (("deepstorm", "DeepSTORM"), ("ddpm", "DDPM")):
        rec = record.get(name) or {}
        cfg = rec.get("config") or {}
        keys = ["max_steps", "batch_size", "learning_rate", "lr_scheduler", "lr_warmup_steps", "weight_decay",
                "ema_decay", "crop_size", "mixed_precision", "seed"]
        for k in keys:
            if k in cfg:
                rows.append({"model": title, "key": f"`{k}`", "value": cfg[k]})
        log = rec.get("log")
        if log is not None and len(log):
            last = log.iloc[-1]
            rows.append({"model": title, "key": "final training loss", "value": last.get("loss")})
            val_cols = [c for c in log.columns if c not in ("step", "loss", "lr", "elapsed_s", "sitting")]
            validated = log.dropna(subset=val_cols, how="all") if val_cols else log.iloc[:0]
            if len(validated):
                v = validated.iloc[-1]
                at = f" (step {fmt(v['step'])})" if not _is_missing(v.get("step")) else ""
                for c in val_cols:
                    if not _is_missing(v.get(c)):
                        rows.append({"model": title, "key": f"validation `{c}`{at}", "value": v[c]})
            if "sitting" in log.columns:  # trained over several sittings (train/install_weights.py)
                rows.append({"model": title, "key": "sittings", "value": int(log["sitting"].max())})
                rows.append({"model": title, "key": "steps in all", "value": last.get("step")})
            if "elapsed_s" in log.columns and not _is_missing(last.get("elapsed_s")):
                if "sitting" in log.columns:  # each sitting's clock starts at zero
                    total = log.groupby("sitting")["elapsed_s"].max().sum()
                    rows.append({"model": title, "key": "wall time, all sittings (s)", "value": total})
                else:
                    rows.append({"model": title, "key": "wall time (s)", "value": last["elapsed_s"]})
    if not rows:
        return None
    return markdown_table(rows, [("model", "model", "s"), ("key", "setting", "s"), ("value", "value", ".4g")])


_EVAL_COLUMNS = {
    "isolated": [("method", "method", "s"), ("photons", "photons", "g"), ("jaccard", "Jaccard", ".3f"),
                 ("rmse_nm", "RMSE (nm)", ".2f"), ("crlb_nm", "sqrt(CRLB) (nm)", ".2f"),
                 ("rmse_crlb_ratio", "RMSE / sqrt(CRLB)", ".2f"), ("coverage_1sigma", "coverage of 1 sigma", ".3f"),
                 ("z_std", "std(z)", ".2f"), ("frames_per_s", "frames/s", ".3g")],
    "density": [("method", "method", "s"), ("density", "density (per um^2)", "g"), ("jaccard", "Jaccard", ".3f"),
                ("precision", "precision", ".3f"), ("recall", "recall", ".3f"), ("rmse_nm", "RMSE (nm)", ".2f"),
                ("efficiency", "efficiency", ".1f"), ("coverage_1sigma", "coverage of 1 sigma", ".3f"),
                ("z_std", "std(z)", ".2f"), ("frames_per_s", "frames/s", ".3g")],
}
_GROUP_TITLES = {"isolated": "Isolated emitters: photon sweep", "density": "Density sweep"}


def benchmark_tables(results) -> list[dict]:
    """One markdown table per scenario group of the benchmark's results.csv (a DataFrame).

    Columns with no value for any row of a group are dropped (e.g. the CRLB outside the
    photon sweep); the scenario settings constant over a group are returned as ``setting``.
    """
    tables = []
    generic = [("method", "method", "s"), ("scenario", "scenario", "s"), ("n_frames", "frames", "g"),
               ("jaccard", "Jaccard", ".3f"),
               ("rmse_nm", "RMSE (nm)", ".2f"), ("efficiency", "efficiency", ".1f"),
               ("coverage_1sigma", "coverage of 1 sigma", ".3f"), ("frames_per_s", "frames/s", ".3g")]
    # results.csv of benchmarks/run.py has scenario groups; public.csv of benchmarks/public.py has datasets
    group_col = next((c for c in ("group", "dataset") if c in results.columns), None)
    groups = list(dict.fromkeys(results[group_col])) if group_col else [None]
    for group in groups:
        df = results[results[group_col] == group] if group_col else results
        sort = [c for c in ("method", "photons", "density") if c in df.columns]
        df = df.sort_values(sort, kind="stable") if sort else df
        cols = [c for c in _EVAL_COLUMNS.get(group, generic)
                if c[0] in df.columns and (c[2] == "s" or df[c[0]].notna().any())]
        settings = []
        for key, label in (("background", "background {} photons/pixel"), ("sigma_px", "PSF sigma {} px"),
                           ("photons", "{} photons per emitter"), ("n_frames", "{} frames per scenario"),
                           ("border_px", "border of {} px not scored")):
            if key in df.columns and df[key].nunique(dropna=True) == 1 and key not in [c[0] for c in cols]:
                value = df[key].dropna().iloc[0]
                if key == "border_px" and not value:
                    continue
                settings.append(label.format(fmt(value)))
        title = f"Public data: `{group}`" if group_col == "dataset" else f"Scenario group `{group}`"
        tables.append({"title": _GROUP_TITLES.get(group, title if group else "Results"),
                       "table": markdown_table(df.to_dict("records"), cols), "settings": ", ".join(settings)})
    return tables


DENSE_COLUMNS = [("scenario", "scenario", "s"), ("mode", "mode", "s"), ("jaccard", "Jaccard", ".3f"),
                 ("rms_bound", "RMS error / sqrt(CRLB)", ".3f"), ("median_bound", "median", ".3f"),
                 ("cov1", "coverage 1 sigma", ".3f"), ("cov2", "coverage 2 sigma", ".3f"), ("std_z", "std(z)", ".2f"),
                 ("z_gt3", "share abs(z) > 3", ".3f"), ("ece", "ECE of probability", ".3f"),
                 ("s_per_frame", "s per frame", ".3f")]


def dense_table(dense) -> dict:
    """The table of ``benchmarks/dense.py`` (a DataFrame of ``dense.csv``): both modes side by side per scenario,
    errors over each molecule's multi-emitter bound of the true configuration."""
    return {"title": "Found molecules against their multi-emitter bound, calibration and detection probability",
            "settings": "64x64 frames, PSF sigma 1 px; error / sqrt(CRLB of the frame's true configuration) per axis; "
                        "z = error / reported sigma; molecules with probability >= 0.5; ECE over 10 bins of every "
                        "reported molecule",
            "table": markdown_table(dense.to_dict("records"), DENSE_COLUMNS)}
