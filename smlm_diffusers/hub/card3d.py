"""The model card of a 3D pipeline folder: a 3D DeepSTORM (the KDE and its z channel) and its optics, no DDPM.

Rendered from ``templates/smlm_3d.md`` by the same command as a 2D folder's card
(``python -m smlm_diffusers.hub card FOLDER --results benchmarks/results/astig3d.json``); the
numbers come from the folder (its training log, ``optics.yaml`` with its calibration record,
``kde_net/localization_tuning.csv``) and from the 3D benchmark's JSON (``python -m benchmarks.astig3d``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .tables import fmt, markdown_table

CARD_TEMPLATE_3D = Path(__file__).resolve().parent / "templates" / "smlm_3d.md"
CARD_TAGS_3D = ["smlm", "microscopy", "super-resolution", "single-molecule-localization", "3d", "astigmatism",
                "deepstorm"]

_EPFL_COLUMNS = [("method", "localization", "s"), ("n_ground_truth", "ground truth", "g"),
                 ("n_localizations", "found", "g"), ("tp", "TP", "g"), ("fp", "FP", "g"), ("fn", "FN", "g"),
                 ("jaccard", "Jaccard", ".3f"), ("lateral_rmse_nm", "lateral RMSE (nm)", ".1f"),
                 ("axial_rmse_nm", "axial RMSE (nm)", ".1f"), ("coverage_z_1sigma", "sigma_z coverage", ".2f")]
_SIM_COLUMNS = [("photons", "photons", "g"), ("z_bin_nm", "z bin (nm)", "s"), ("n", "n", "g"),
                ("lateral_ratio", "lateral RMSE / sqrt(CRLB)", ".3f"), ("axial_ratio", "axial RMSE / sqrt(CRLB)", ".3f"),
                ("coverage_z_1sigma", "sigma_z coverage", ".3f"), ("recall", "recall", ".3f")]
_TUNING_COLUMNS = [("density", "density (per um^2)", "g"), ("threshold", "KDE threshold", "g"),
                   ("jaccard", "Jaccard", ".3f"), ("rmse_nm", "lateral RMSE (nm)", ".1f"),
                   ("rmse_z_nm", "axial RMSE (nm)", ".1f")]


def is_3d_folder(folder: str | Path) -> bool:
    """True for a pipeline folder whose optics hold a 3D PSF and that has no DDPM (``unet/``)."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    psf = ((index.get("optics") or {}).get("psf") or {})
    return psf.get("type", "gaussian") != "gaussian" and not (folder / "unet").is_dir()


def card_context_3d(folder: str | Path, results: str | Path | None = None, repo_id: str | None = None) -> dict:
    """Everything ``templates/smlm_3d.md`` needs; missing parts are None."""
    import pandas as pd
    import yaml

    from .card import _count_parameters, _find_training_record, simulation_table, training_table

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    optics = index.get("optics") or {}
    psf, camera = optics.get("psf") or {}, optics.get("camera") or {}
    calibration = None
    if (folder / "optics.yaml").is_file():
        calibration = (yaml.safe_load((folder / "optics.yaml").read_text()) or {}).get("calibration")
    tuning = None
    if (folder / "kde_net" / "localization_tuning.csv").is_file():
        tuning = markdown_table(pd.read_csv(folder / "kde_net" / "localization_tuning.csv").to_dict("records"),
                                _TUNING_COLUMNS)
    epfl = simulated = None
    results_path = Path(results) if results else None
    if results_path is not None and results_path.is_file():
        res = json.loads(results_path.read_text())
        rows = [dict(res[k], method=m) for k, m in (("epfl", "detector + 3D MLE"),
                                                    ("epfl_emccd", "detector + 3D MLE, EMCCD camera (F^2 = 2)"),
                                                    ("epfl_model", "this network's seeds + detector + 3D MLE"))
                if k in res]
        epfl = markdown_table(rows, _EPFL_COLUMNS) if rows else None
        simulated = markdown_table(res["simulated"], _SIM_COLUMNS) if res.get("simulated") else None
    record = _find_training_record(folder)
    n = _count_parameters(folder / "kde_net")
    def x_y(key: str, spec: str) -> str:  # "x value / y value" of psf["<key with x or y>"]
        return " / ".join(", ".join(fmt(v, spec) for v in np.atleast_1d(psf.get(key.format(a), [])))
                          for a in ("x", "y"))

    psf_rows = [("sigma0 x / y (px)", x_y("sigma0_{}_px", ".3f")), ("focal plane of x / y (nm)", x_y("focus_{}_nm", ".1f")),
                ("depth of x / y (nm)", x_y("depth_{}_nm", ".1f")),
                ("wobble x / y (px, polynomial in z per um)", x_y("wobble_{}_px", ".3f")),
                ("z range (nm)", " to ".join(fmt(v) for v in psf.get("z_range_nm", [])))]
    return {
        "repo_id": repo_id or f"<your-org>/{folder.resolve().name}", "repo_id_given": repo_id is not None,
        "local_path": folder.as_posix(), "name": folder.resolve().name,
        "camera": [{"name": k, "value": fmt(v)} for k, v in camera.items()],
        "psf_type": psf.get("type"), "psf": [{"name": k, "value": v} for k, v in psf_rows],
        "calibration": calibration, "threshold": fmt(index.get("threshold")), "tuning_table": tuning,
        "training_table": training_table(record), "simulation_table": simulation_table(record),
        "params": None if not n else f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}",
        "epfl_table": epfl, "simulated_table": simulated,
        "results_path": results_path.as_posix() if results_path else "benchmarks/results/astig3d.json",
    }
