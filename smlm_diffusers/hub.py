"""Model cards, pushes to the Hugging Face Hub, and loading pipelines by repo id.

    python -m smlm_diffusers.hub card pretrained/smlm-ddpm-2d --results benchmarks/results/results.csv
    python -m smlm_diffusers.hub push pretrained/smlm-ddpm-2d --repo-id ORG/NAME [--dry-run]
    python -m smlm_diffusers.hub push . --repo-id ORG/NAME --repo-type space [--dry-run]

``card`` renders ``model_cards/smlm_pipeline.md`` (Jinja, ``ModelCard.from_template``) into
``<folder>/README.md``. Every number in it is read from the folder (component configs,
``train_config.yaml``, ``train_log.csv``), from the scheduler (gamma_T, L_T) and from the
benchmark's ``results.csv``; whatever is missing is said to be missing.

``push`` creates the repo and uploads the folder, leaving out training checkpoints, pickles
and caches. The curated model card (README.md) goes up last, in a commit of its own, because
``push_to_hub`` of a pipeline overwrites it. A Space push (``--repo-type space``, the folder is
the repository root) uploads only ``app.py``, ``requirements.txt``, ``README.md`` (with the
Space front matter added), the package ``smlm_diffusers/`` and ``pretrained/``.
``--dry-run`` lists exactly the files that would be uploaded and touches nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import warnings
from pathlib import Path

# never uploaded: resumable training state (pickles), caches, logs of the shell
IGNORE_PATTERNS = ["checkpoints/*", "**/checkpoints/*", "*.bin", "*.pkl", "*.pt", "*.pth", "__pycache__/*",
                   "**/__pycache__/*", ".git/*", "*.log", ".cache/*"]
# a Space gets the app, its requirements and card, the package and the shipped pipeline: nothing else
SPACE_ROOT_FILES = ["app.py", "requirements.txt"]
SPACE_FOLDERS = ["smlm_diffusers", "pretrained"]
SPACE_IGNORE_PATTERNS = ["*.pyc", "*.pyo", "*.egg-info/*", "**/.ipynb_checkpoints/*", ".DS_Store", "**/.DS_Store"]

REPO_ROOT = Path(__file__).resolve().parents[1]
CARD_TEMPLATE = REPO_ROOT / "model_cards" / "smlm_pipeline.md"
DEFAULT_RESULTS = "benchmarks/results/results.csv"
CARD_TAGS = ["smlm", "microscopy", "super-resolution", "single-molecule-localization", "ddpm", "diffusion",
             "uncertainty", "deepstorm"]
# the schedule of the paper's section 5, kept for the comparison in the card
PAPER_SCHEDULE = {"num_train_timesteps": 100, "beta_schedule": "paper", "beta_start": 1e-4, "beta_end": 1e-2,
                  "prediction_type": "epsilon"}


# -- what gets uploaded ------------------------------------------------------------------------
def files_to_upload(folder: str | Path, ignore_patterns: list[str] | None = None) -> list[str]:
    """Relative paths under ``folder`` that :func:`push_folder` uploads (model repos), sorted."""
    folder = Path(folder)
    patterns = IGNORE_PATTERNS + list(ignore_patterns or [])
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
                out.append(rel)
    return out


def space_files(root: str | Path) -> list[str]:
    """Relative paths a Space push uploads from the repository ``root``, sorted.

    ``README.md`` is always listed: it is uploaded with the Space front matter added
    (:func:`space_readme`), whether or not the root has one.
    """
    root = Path(root)
    if not (root / "app.py").is_file():
        raise FileNotFoundError(f"{root} has no app.py: a Space push takes the repository root")
    files = [name for name in SPACE_ROOT_FILES if (root / name).is_file()] + ["README.md"]
    for sub in SPACE_FOLDERS:
        if (root / sub).is_dir():
            files += [f"{sub}/{rel}" for rel in files_to_upload(root / sub, SPACE_IGNORE_PATTERNS)]
    return sorted(files)


def upload_plan(path: str | Path, repo_type: str = "model") -> list[str]:
    """Exactly the files :func:`push_folder` uploads for ``path`` (what ``--dry-run`` prints)."""
    path = Path(path)
    if repo_type == "space":
        return space_files(path)
    files = files_to_upload(path)
    if "README.md" not in files and (path / "model_index.json").is_file():
        files = sorted(files + ["README.md"])  # the card is generated before the upload
    return files


def _front_matter(text: str) -> tuple[dict, str]:
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}, text
    import yaml

    return (yaml.safe_load(m.group(1)) or {}), text[m.end():]


def space_readme(root: str | Path) -> str:
    """The root README.md with the Space front matter (gradio SDK, app.py) merged in front.

    Keys already in the README's front matter win; the gradio version comes from requirements.txt.
    """
    from huggingface_hub import SpaceCardData

    root = Path(root)
    readme = root / "README.md"
    meta, body = _front_matter(readme.read_text(encoding="utf-8") if readme.is_file() else "")
    if not body.strip():
        body = ("\n# smlm-diffusers\n\nUncertainty-aware single-molecule localization microscopy: a DeepSTORM "
                "estimate plus conditional DDPM posterior samples, with per-molecule uncertainties.\n")
    defaults = {"title": "smlm-diffusers", "emoji": "🔬", "colorFrom": "indigo", "colorTo": "pink",
                "sdk": "gradio", "app_file": "app.py", "pinned": False, "license": "apache-2.0",
                "short_description": "Uncertainty-aware SMLM with a conditional diffusion model",
                "tags": ["smlm", "microscopy", "super-resolution", "diffusers"]}
    reqs = root / "requirements.txt"
    pin = re.search(r"^gradio==([\w.]+)", reqs.read_text(), re.M) if reqs.is_file() else None
    if pin:
        defaults["sdk_version"] = pin.group(1)
    body = body if body.startswith("\n") else "\n" + body
    return f"---\n{SpaceCardData(**(defaults | meta)).to_yaml()}\n---\n{body}"


def _literal(path: str) -> str:
    """An fnmatch pattern that matches exactly ``path``."""
    return re.sub(r"([\[\]*?])", r"[\1]", path)


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload smlm-diffusers pipeline",
    results: str | Path | None = None,
    space_sdk: str = "gradio",
) -> list[str]:
    """Create ``repo_id`` (if needed) and upload ``folder``; README.md last. Returns the file list.

    A pipeline folder without README.md gets its model card generated first (with
    ``results``, a benchmark ``results.csv``, if given). For ``repo_type="space"``
    ``folder`` is the repository root and only :func:`space_files` go up, in one commit.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = upload_plan(folder, repo_type)
    if dry_run:
        return files
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                    space_sdk=space_sdk if repo_type == "space" else None)
    if repo_type == "space":
        # explicit operations: the root also holds .venv, runs, caches, which must not even be walked
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files if f != "README.md"]
        ops.append(CommitOperationAdd(path_in_repo="README.md",
                                      path_or_fileobj=space_readme(folder).encode("utf-8")))
        api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=ops,
                          commit_message="Upload smlm-diffusers Space")
        return files
    if "README.md" in files and not (folder / "README.md").exists():
        try:
            write_model_card(folder, results=results, repo_id=repo_id)
        except FileNotFoundError as err:  # no template (package installed without the repo): push anyway
            warnings.warn(f"no model card generated for {folder}: {err}", stacklevel=2)
    # exactly the planned files (the card aside), whatever upload_folder's own pattern rules are
    others = [_literal(f) for f in files if f != "README.md"]
    if others:
        api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), allow_patterns=others,
                          commit_message=commit_message)
    if (folder / "README.md").exists():
        api.upload_file(path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo_id,
                        repo_type=repo_type, commit_message="Upload model card")
    return files


# -- model card ----------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError):
        return None


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


def _find_training_record(folder: Path) -> dict:
    """train_config.yaml / train_log.csv of the DDPM and of DeepSTORM, where the training scripts put them."""
    record = {}
    for name, candidates in {"ddpm": ["unet", "."], "deepstorm": ["kde_net"]}.items():
        for sub in candidates:
            cfg_path = folder / sub / "train_config.yaml"
            if cfg_path.is_file():
                record[name] = {"config": _read_yaml(cfg_path), "config_path": cfg_path,
                                "log": _read_csv(folder / sub / "train_log.csv")}
                break
    ddpm_cfg = (record.get("ddpm") or {}).get("config") or {}
    if "deepstorm" not in record and ddpm_cfg.get("kde_net_path"):
        # DeepSTORM's record stays beside the network the DDPM was trained on
        for base in (Path.cwd(), REPO_ROOT):
            cfg_path = base / ddpm_cfg["kde_net_path"] / "train_config.yaml"
            if cfg_path.is_file():
                record["deepstorm"] = {"config": _read_yaml(cfg_path), "config_path": cfg_path,
                                       "log": _read_csv(cfg_path.parent / "train_log.csv")}
                break
    return record


_SIM_KEYS = [  # (key, meaning with unit)
    ("pixel_size_nm", "camera pixel size (nm)"),
    ("sigma_px", "PSF sigma (camera pixels), Gaussian"),
    ("camera_offset", "camera offset (ADU)"),
    ("camera_gain", "camera gain (ADU per photo-electron)"),
    ("read_noise", "read noise (e- rms)"),
    ("photons", "photons per emitter"),
    ("background", "background (photons per pixel)"),
    ("background_variation", "relative background variation across a frame"),
    ("density", "emitter density (per um^2, per frame)"),
    ("patch_size", "simulated frame size (camera pixels)"),
    ("margin_px", "emitter-free margin (camera pixels)"),
    ("upsampling", "KDE upsampling factor"),
    ("kde_sigma", "KDE kernel sigma (upsampled pixels)"),
]


def simulation_table(record: dict) -> str | None:
    """Markdown table of the ``data`` (simulation) section of each training config."""
    sources = [(name, (record.get(name) or {}).get("config") or {}) for name in ("deepstorm", "ddpm")]
    sources = [(n, c.get("data")) for n, c in sources if isinstance(c.get("data"), dict)]
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
            val_cols = [c for c in log.columns if c not in ("step", "loss", "lr", "elapsed_s")]
            validated = log.dropna(subset=val_cols, how="all") if val_cols else log.iloc[:0]
            if len(validated):
                v = validated.iloc[-1]
                at = f" (step {fmt(v['step'])})" if not _is_missing(v.get("step")) else ""
                for c in val_cols:
                    if not _is_missing(v.get(c)):
                        rows.append({"model": title, "key": f"validation `{c}`{at}", "value": v[c]})
            if "elapsed_s" in log.columns and not _is_missing(last.get("elapsed_s")):
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


def schedule_comparison(scheduler) -> dict:
    """gamma_T and L_T (bits per dimension) of the paper's training schedule and the shipped one."""
    from .schedulers.scheduling_gamma_ddpm import GammaDDPMScheduler

    paper = GammaDDPMScheduler(**PAPER_SCHEDULE)
    rows = [{"which": "paper (section 5)", "T": paper.config.num_train_timesteps,
             "betas": "linear 1e-4 … 1e-2", "gamma_T": paper.gamma_T, "L_T": paper.prior_kl_bits(),
             "prediction": "epsilon on the KDE"}]
    if scheduler is not None:
        c = scheduler.config
        betas = {"cosine": "cosine (Nichol & Dhariwal)", "paper": f"linear {c.beta_start:g} … {c.beta_end:g}",
                 "linear": f"linear {c.beta_start:g} … {c.beta_end:g} (x 1000/T)"}
        betas = betas.get(c.beta_schedule, c.beta_schedule)
        rows.append({"which": "shipped", "T": c.num_train_timesteps, "betas": betas, "gamma_T": scheduler.gamma_T,
                     "L_T": scheduler.prior_kl_bits(),
                     "prediction": f"{c.prediction_type.replace('_prediction', '')} on the residual"})
    table = markdown_table(rows, [("which", "schedule", "s"), ("T", "T", "g"), ("betas", "betas", "s"),
                                  ("gamma_T", "gamma_T", ".3g"), ("L_T", "L_T (bits/dim)", ".3g"),
                                  ("prediction", "UNet target", "s")])
    return {"table": table, "paper": rows[0], "shipped": rows[1] if len(rows) > 1 else None}


def _count_parameters(component: Path) -> int | None:
    files = sorted(component.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    n = 0
    try:
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    n += math.prod(st.get_slice(k).get_shape())
    except Exception:  # an unreadable weights file: the card just leaves the count out
        return None
    return n


def _shown_path(path: Path, folder: Path) -> str:
    """``path`` relative to the pipeline folder (as it is on the Hub), else as found."""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def card_context(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None) -> dict:
    """Everything the card template needs, read from ``folder`` and ``results``; missing parts are None."""
    from .schedulers.scheduling_gamma_ddpm import GammaDDPMScheduler

    folder = Path(folder)
    index = _read_json(folder / "model_index.json") or {}
    kde_cfg = _read_json(folder / "kde_net" / "config.json")
    unet_cfg = _read_json(folder / "unet" / "config.json")
    scheduler = None
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        try:
            scheduler = GammaDDPMScheduler.from_pretrained(folder / "scheduler")
        except (OSError, ValueError, TypeError):
            scheduler = None
    record = _find_training_record(folder)
    data = next((r["config"]["data"] for r in (record.get("ddpm"), record.get("deepstorm"))
                 if r and isinstance((r.get("config") or {}).get("data"), dict)), None)

    optics = None
    if kde_cfg or data:
        k, d = kde_cfg or {}, data or {}
        pixel = k.get("pixel_size_nm", d.get("pixel_size_nm"))
        up = k.get("upsampling", d.get("upsampling"))
        optics = [("camera pixel size", pixel, "nm"),
                  ("PSF", k.get("psf_sigma_px", d.get("sigma_px")), "sigma in camera pixels (2D Gaussian)"),
                  ("camera offset", k.get("camera_offset", d.get("camera_offset")), "ADU"),
                  ("camera gain", k.get("camera_gain", d.get("camera_gain")), "ADU per photo-electron"),
                  ("read noise", k.get("read_noise", d.get("read_noise")), "e- rms"),
                  ("KDE grid", None if _is_missing(pixel) or _is_missing(up) else pixel / up,
                   f"nm per pixel ({fmt(up)}x upsampled)")]
        optics = [{"name": n, "value": fmt(v), "unit": u} for n, v, u in optics if not _is_missing(v)]
    ranges = None
    if data:
        ranges = {k: fmt(data.get(k)) for k in ("photons", "background", "density", "sigma_px")
                  if data.get(k) is not None}
        phrases = [f"{ranges[k]} {what}" for k, what in (("photons", "photons per emitter"),
                                                          ("background", "background photons per pixel"),
                                                          ("density", "emitters per square micrometre")) if k in ranges]
        ranges["covered"] = ", ".join(phrases[:-1]) + " and " + phrases[-1] if len(phrases) > 1 else "".join(phrases)
        lo_hi = {k: data.get(k) for k in ("photons", "background", "density")}
        ranges |= {f"{k}_{i}": fmt(v[j]) for k, v in lo_hi.items() if isinstance(v, (list, tuple)) and len(v) == 2
                   for i, j in (("min", 0), ("max", 1))}

    evaluation = None
    results_path = Path(results) if results else None
    if results_path is not None and results_path.is_file():
        df = _read_csv(results_path)
        if df is not None and len(df):
            evaluation = {"tables": benchmark_tables(df), "source": results_path.as_posix(),
                          "public": "dataset" in df.columns,
                          "methods": list(dict.fromkeys(df["method"])) if "method" in df.columns else []}
    params = {name: _count_parameters(folder / name) for name in ("kde_net", "unet")}
    sched = schedule_comparison(scheduler)
    ddpm_cfg = (record.get("ddpm") or {}).get("config") or {}
    return {
        "repo_id": repo_id or f"<your-org>/{folder.resolve().name}",
        "repo_id_given": repo_id is not None,
        "local_path": folder.as_posix(),
        "name": folder.resolve().name,
        "optics": optics,
        "ranges": ranges,
        "simulation_table": simulation_table(record),
        "training_table": training_table(record),
        "record_sources": {n: _shown_path(r["config_path"], folder) for n, r in record.items()},
        "has_ddpm_record": "ddpm" in record,
        "has_deepstorm_record": "deepstorm" in record,
        "kde_net_path": ddpm_cfg.get("kde_net_path"),
        "params": {k: (None if not v else f"{v / 1e6:.2f} M" if v >= 100_000 else f"{v:,}") for k, v in params.items()},
        "unet": unet_cfg,
        "kde_net": kde_cfg,
        "scheduler": dict(scheduler.config) if scheduler is not None else None,
        "schedule": sched,
        "pipeline": {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)},
        "evaluation": evaluation,
        "results_path": (results_path.as_posix() if results_path else DEFAULT_RESULTS),
        "condition_on_frame": bool(unet_cfg and unet_cfg.get("in_channels") == 3),
    }


def render_model_card(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None,
                      template: str | Path | None = None):
    """The model card (a ``huggingface_hub.ModelCard``) of the pipeline folder ``folder``."""
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template) if template else CARD_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found (pass --template)")
    data = ModelCardData(library_name="diffusers", license="apache-2.0", pipeline_tag="image-to-image",
                         tags=list(CARD_TAGS), inference=False)
    return ModelCard.from_template(data, template_path=str(template),
                                   **card_context(folder, results=results, repo_id=repo_id))


def write_model_card(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None,
                     template: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Render the card and write it to ``out`` (default ``<folder>/README.md``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    card = render_model_card(folder, results=results, repo_id=repo_id, template=template)
    out = Path(out) if out else folder / "README.md"
    card.save(out)
    return out


# -- loading by repo id ----------------------------------------------------------------------------
def resolve_pretrained(name_or_path, revision: str | None = None, cache_dir: str | None = None,
                       token: str | None = None) -> Path:
    """A local pipeline folder for ``name_or_path``: the folder itself, or a Hub snapshot.

    A repo id is fetched with ``snapshot_download`` (diffusers 0.42 cannot resolve this
    package's components by repo id, so the whole folder is downloaded, then loaded locally).
    With ``HF_HUB_OFFLINE=1`` only the local cache is used.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} has no model_index.json: not a pipeline folder")
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(f"{name_or_path} is neither a pipeline folder nor a Hub repo id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir, token=token,
                                      ignore_patterns=IGNORE_PATTERNS))
    except RepositoryNotFoundError as err:
        # "org/name" is also what a relative folder path looks like
        raise FileNotFoundError(
            f"{name_or_path} is not a folder (relative to {Path.cwd()}) and no Hub repo of that id was found"
        ) from err
    except LocalEntryNotFoundError as err:
        raise OSError(
            f"cannot load {name_or_path}: it is not cached locally and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network). Download it once online, or pass a local folder."
        ) from err


# -- command line ------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m smlm_diffusers.hub", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card", help="(re)generate <folder>/README.md, the model card")
    card.add_argument("folder")
    card.add_argument("--results", default=None, help=f"the benchmark's results.csv (e.g. {DEFAULT_RESULTS})")
    card.add_argument("--repo-id", default=None, help="Hub repo id used in the loading examples")
    card.add_argument("--template", default=None, help=f"Jinja template (default {CARD_TEMPLATE})")
    card.add_argument("--out", default=None, help="write here instead of <folder>/README.md")
    push = sub.add_parser("push", help="upload a folder to a Hub repo")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--repo-type", default="model", choices=["model", "space", "dataset"])
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    push.add_argument("--results", default=None,
                      help="regenerate the model card with this results.csv (and --repo-id) before uploading")
    args = p.parse_args(argv)
    try:
        _run(args)
    except FileNotFoundError as err:  # a wrong path: say so, without a traceback
        p.exit(2, f"{p.prog} {args.command}: error: {err}\n")


def _run(args):
    if args.command == "card":
        out = write_model_card(args.folder, results=args.results, repo_id=args.repo_id, template=args.template,
                               out=args.out)
        print(f"wrote {out}")
        return
    if args.results and args.repo_type == "model" and not args.dry_run:
        write_model_card(args.folder, results=args.results, repo_id=args.repo_id)
    files = push_folder(args.folder, args.repo_id, args.repo_type, args.private, dry_run=args.dry_run,
                        results=args.results)
    print(("would upload" if args.dry_run else "uploaded") + f" {len(files)} files to {args.repo_id}"
          + (f" ({args.repo_type})" if args.repo_type != "model" else "") + ":")
    for f in files:
        print("  " + f)


if __name__ == "__main__":
    main()
