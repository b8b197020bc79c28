"""The model card of a pipeline folder, rendered from the Jinja template shipped in this package.

Every number in it is read from the folder (component configs, ``train_config.yaml``,
``train_log.csv``), from the scheduler (gamma_T, L_T) and from a benchmark's ``results.csv``
given by path; whatever is missing is said to be missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..models import layout
from .tables import _is_missing, benchmark_tables, dense_table, flat_camera, fmt, markdown_table, simulation_table, training_table

# package data (pyproject.toml), so the card renders from an installed package too
CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "smlm_pipeline.md"
CARD_TAGS = ["smlm", "microscopy", "super-resolution", "single-molecule-localization", "ddpm", "diffusion",
             "uncertainty", "deepstorm"]
# the schedule of the paper's section 5, kept for the comparison in the card
PAPER_SCHEDULE = {"num_train_timesteps": 100, "beta_schedule": "paper", "beta_start": 1e-4, "beta_end": 1e-2,
                  "prediction_type": "epsilon"}



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
        # (a path relative to where training ran: the working directory or a folder above the pipeline)
        for base in (Path.cwd(), *folder.resolve().parents):
            cfg_path = base / ddpm_cfg["kde_net_path"] / "train_config.yaml"
            if cfg_path.is_file():
                record["deepstorm"] = {"config": _read_yaml(cfg_path), "config_path": cfg_path,
                                       "log": _read_csv(cfg_path.parent / "train_log.csv")}
                break
    return record


def schedule_comparison(scheduler) -> dict:
    """gamma_T and L_T (bits per dimension) of the paper's training schedule and the shipped one."""
    from ..schedulers.scheduling_gamma_ddpm import GammaDDPMScheduler

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


def card_context(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None,
                 results_hint: str = "results.csv") -> dict:
    """Everything the card template needs, read from ``folder`` and ``results``; missing parts are None.

    ``results`` is a benchmark table (``results.csv`` of ``benchmarks/run.py``, ``public.csv`` of
    ``benchmarks/public.py``); without it the card's how-to names ``results_hint``.
    """
    from ..schedulers.scheduling_gamma_ddpm import GammaDDPMScheduler

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
    data = next((flat_camera(r["config"]["data"]) for r in (record.get("ddpm"), record.get("deepstorm"))
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
            dense = _read_csv(results_path.parent / "dense.csv") if not evaluation["public"] else None
            if dense is not None and len(dense):
                evaluation["tables"].append(dense_table(dense))
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
        "results_path": (results_path.as_posix() if results_path else results_hint),
        "condition_on_frame": bool(unet_cfg and layout.uses_frame(unet_cfg)),
        "layout": layout.layout_of(unet_cfg) if unet_cfg else None,
        "layout_factor": math.isqrt(int(unet_cfg["out_channels"])) if unet_cfg else None,
    }


def render_model_card(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None,
                      template: str | Path | None = None, results_hint: str = "results.csv"):
    """The model card (a ``huggingface_hub.ModelCard``) of the pipeline folder ``folder``."""
    from huggingface_hub import ModelCard, ModelCardData

    from .card3d import CARD_TAGS_3D, CARD_TEMPLATE_3D, card_context_3d, is_3d_folder

    if is_3d_folder(folder):  # a 3D DeepSTORM and its optics, no DDPM
        default, tags, context = CARD_TEMPLATE_3D, CARD_TAGS_3D, card_context_3d(folder, results, repo_id)
    else:
        default, tags = CARD_TEMPLATE, CARD_TAGS
        context = card_context(folder, results=results, repo_id=repo_id, results_hint=results_hint)
    template = Path(template) if template else default
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found (pass --template)")
    data = ModelCardData(library_name="diffusers", license="apache-2.0", pipeline_tag="image-to-image",
                         tags=list(tags), inference=False)
    return ModelCard.from_template(data, template_path=str(template), **context)


def write_model_card(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None,
                     template: str | Path | None = None, out: str | Path | None = None,
                     results_hint: str = "results.csv") -> Path:
    """Render the card and write it to ``out`` (default ``<folder>/README.md``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    card = render_model_card(folder, results=results, repo_id=repo_id, template=template,
                             results_hint=results_hint)
    out = Path(out) if out else folder / "README.md"
    card.save(out)
    return out
