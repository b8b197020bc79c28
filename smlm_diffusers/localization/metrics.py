"""The benchmark metrics, written once (docs/conventions.md, "Metrics").

- Jaccard = TP / (TP + FP + FN) after per-frame Hungarian matching (:func:`match`).
- RMSE_lateral = sqrt(mean(dx^2 + dy^2)) over matched pairs (nm).
- Efficiency (2D) = 100 - sqrt((100 - 100 Jaccard)^2 + (1 nm^-1 RMSE_lateral)^2).
- RMSE/CRLB = sqrt((RMSE_x^2 + RMSE_y^2) / (CRLB_x + CRLB_y)), CRLB at the true parameters.
- Calibration of a predicted sigma: z = error / sigma per axis; fraction |z| <= 1 (ideal
  0.683) and std(z) (ideal 1).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from .matching import check_table, match


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def evaluate(
    gt: pd.DataFrame,
    pred: pd.DataFrame,
    tolerance_nm: float = 250.0,
    crlb_nm2: tuple | Callable | None = None,
    min_probability: float | None = 0.5,
) -> dict:
    """Detection and localization metrics of ``pred`` against ``gt``.

    Parameters
    ----------
    gt : pandas.DataFrame
        Ground truth with columns ``frame`` (integer, 0-based), ``x_nm``, ``y_nm`` (nm).
    pred : pandas.DataFrame
        Predictions with the same columns; with ``sigma_x_nm`` and ``sigma_y_nm`` (predicted
        1-sigma uncertainty per axis, nm) the calibration metrics are added.
    tolerance_nm : float
        Matching radius in nm (inclusive).
    crlb_nm2 : (cx, cy) or callable, optional
        Cramer-Rao bounds (variances, nm^2) per ground-truth row: two arrays aligned with
        the rows of ``gt`` (or scalars, broadcast), or a callable taking the DataFrame of the
        matched ``gt`` rows and returning such ``(cx, cy)`` for them. Adds
        ``rmse_crlb_ratio``; meaningful on isolated emitters.
    min_probability : float, optional
        Where ``pred`` has a ``probability`` column (the pipeline's detection probability), only
        molecules with at least this probability are scored (default 0.5, the pipeline's
        ``min_probability``); None scores every row.

    Returns
    -------
    dict
        ``n_gt``, ``n_pred``, ``tp``, ``fp``, ``fn`` (ints); ``jaccard``, ``precision``,
        ``recall`` (fractions in [0, 1]); ``rmse_nm``, ``rmse_x_nm``, ``rmse_y_nm`` (nm);
        ``efficiency`` (percent-like score, 100 is perfect); with sigmas ``coverage_1sigma``,
        ``z_std``, ``z_mean``; with CRLBs ``rmse_crlb_ratio``. A ratio whose denominator is
        zero (no ground truth, no predictions, no matches) is NaN, never an exception; with
        no matched pair the RMSEs, and so ``efficiency``, are NaN.
    """
    gt = check_table(gt, "gt")
    pred = check_table(pred, "pred")
    if min_probability is not None and "probability" in pred.columns:
        pred = pred[pred["probability"].to_numpy() >= min_probability]
    pairs = match(gt, pred, tolerance_nm)
    n_gt, n_pred, tp = len(gt), len(pred), len(pairs)
    fp, fn = n_pred - tp, n_gt - tp
    dx, dy = pairs["dx"].to_numpy(), pairs["dy"].to_numpy()
    jaccard = _ratio(tp, tp + fp + fn)
    mse_x = float(np.mean(dx**2)) if tp else math.nan
    mse_y = float(np.mean(dy**2)) if tp else math.nan
    rmse = math.sqrt(mse_x + mse_y)
    out = {
        "n_gt": n_gt,
        "n_pred": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "jaccard": jaccard,
        "precision": _ratio(tp, n_pred),
        "recall": _ratio(tp, n_gt),
        "rmse_nm": rmse,
        "rmse_x_nm": math.sqrt(mse_x),
        "rmse_y_nm": math.sqrt(mse_y),
        # 1 nm^-1 makes the RMSE term dimensionless (2016 SMLM challenge)
        "efficiency": 100.0 - math.sqrt((100.0 - 100.0 * jaccard) ** 2 + rmse**2),
    }
    if {"sigma_x_nm", "sigma_y_nm"} <= set(pred.columns):
        out.update(calibration(pairs, pred))
    if crlb_nm2 is not None:
        out["rmse_crlb_ratio"] = _crlb_ratio(pairs, gt, crlb_nm2, mse_x, mse_y)
    return out


def calibration(pairs: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """Calibration of predicted sigmas over matched pairs.

    Parameters
    ----------
    pairs : DataFrame from :func:`match`
    pred : DataFrame with ``sigma_x_nm``, ``sigma_y_nm`` (nm)

    Returns
    -------
    dict with ``coverage_1sigma`` (fraction of |z| <= 1 over both axes, ideal 0.683),
    ``z_std`` (ideal 1) and ``z_mean`` (ideal 0), where z = (pred - gt) / sigma. Pairs
    with a non-positive or non-finite sigma are left out.
    """
    idx = pairs["pred_index"].to_numpy()
    sx = pred["sigma_x_nm"].to_numpy(dtype=np.float64)[idx]
    sy = pred["sigma_y_nm"].to_numpy(dtype=np.float64)[idx]
    err = np.concatenate([pairs["dx"].to_numpy(), pairs["dy"].to_numpy()])
    sigma = np.concatenate([sx, sy])
    ok = np.isfinite(sigma) & (sigma > 0) & np.isfinite(err)
    z = err[ok] / sigma[ok]
    if z.size == 0:
        return {"coverage_1sigma": math.nan, "z_std": math.nan, "z_mean": math.nan}
    return {
        "coverage_1sigma": float(np.mean(np.abs(z) <= 1.0)),
        "z_std": float(np.std(z)),
        "z_mean": float(np.mean(z)),
    }


def _crlb_ratio(pairs, gt, crlb_nm2, mse_x: float, mse_y: float) -> float:
    """sqrt((RMSE_x^2 + RMSE_y^2) / (mean CRLB_x + mean CRLB_y)) over matched pairs."""
    if len(pairs) == 0:
        return math.nan
    idx = pairs["gt_index"].to_numpy()
    if callable(crlb_nm2):
        cx, cy = crlb_nm2(gt.iloc[idx].reset_index(drop=True))
        cx = np.broadcast_to(np.asarray(cx, dtype=np.float64), idx.shape)
        cy = np.broadcast_to(np.asarray(cy, dtype=np.float64), idx.shape)
    else:
        cx, cy = crlb_nm2
        cx = np.broadcast_to(np.asarray(cx, dtype=np.float64), (len(gt),))[idx]
        cy = np.broadcast_to(np.asarray(cy, dtype=np.float64), (len(gt),))[idx]
    return math.sqrt((mse_x + mse_y) / (float(np.mean(cx)) + float(np.mean(cy))))
