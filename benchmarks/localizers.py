"""Registry of localizers the benchmark can run, and the Picasso baseline.

Interface
---------
A *localizer* is any callable

    localizer(frames_adu, camera, sigma_px, **tuned) -> pandas.DataFrame

- ``frames_adu``: float32 numpy array [F, H, W] in ADU (raw camera counts).
- ``camera``: :class:`smlm_diffusers.Camera` (pixel size, offset, gain, read noise, qe).
- ``sigma_px``: the PSF standard deviation of the simulation, in camera pixels.
- ``**tuned``: the parameters returned by the localizer's tuning hook (none if it has none).
- Returns one row per localization with columns ``frame`` (int, 0-based), ``x_nm``,
  ``y_nm`` (nm, docs/conventions.md pixel geometry: pixel j covers [j, j+1) * pixel size, the field's
  top-left corner is (0, 0)), optionally ``sigma_x_nm``, ``sigma_y_nm`` (predicted 1-sigma
  error, nm; enables the calibration metrics) and ``photons``; extra columns are kept.

It may have an optional *tuning hook*, an attribute

    localizer.tune(frames_adu, gt, camera, sigma_px) -> dict

which selects parameters on a tuning movie (a separate simulation with another seed, never
the scored frames) given its ground truth ``gt`` (frame, x_nm, y_nm, photons, background).
The harness calls it once per scenario and passes the dict as ``**tuned``.

The registry maps a name to a *factory* (called once per benchmark run, so expensive setup
such as loading a model happens there, lazily)::

    from benchmarks.localizers import register_localizer

    @register_localizer("DeepSTORM")
    def make_deepstorm(**options):
        model = load_model(...)                     # once
        def localize(frames_adu, camera, sigma_px, **tuned):
            ...
            return pd.DataFrame({"frame": ..., "x_nm": ..., "y_nm": ...})
        return localize                             # optionally with localize.tune = ...

``python -m benchmarks.run --methods DeepSTORM`` finds it once the module defining it has
been imported: pass ``--plugins package.module`` (see :func:`load_plugins`), or import that
module at the end of this file.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import pandas as pd

import smlm_diffusers as sd

Localizer = Callable[..., pd.DataFrame]
LocalizerFactory = Callable[..., Localizer]

#: name -> factory(**options) -> localizer
LOCALIZERS: dict[str, LocalizerFactory] = {}

OUTPUT_COLUMNS = ("frame", "x_nm", "y_nm")


def register_localizer(name: str, *, overwrite: bool = False) -> Callable[[LocalizerFactory], LocalizerFactory]:
    """Decorator registering ``factory(**options) -> localizer`` under ``name``.

    Raises ``ValueError`` if the name is taken (unless ``overwrite``). Returns the factory
    unchanged.
    """

    def decorator(factory: LocalizerFactory) -> LocalizerFactory:
        if not callable(factory):
            raise TypeError(f"localizer factory for {name!r} must be callable")
        if name in LOCALIZERS and not overwrite and LOCALIZERS[name] is not factory:
            raise ValueError(f"a localizer named {name!r} is already registered")
        LOCALIZERS[name] = factory
        return factory

    return decorator


def unregister_localizer(name: str) -> None:
    """Remove ``name`` from the registry (no error if absent)."""
    LOCALIZERS.pop(name, None)


def get_localizer(name: str, **options) -> Localizer:
    """Build the registered localizer ``name`` with factory ``options``."""
    if name not in LOCALIZERS:
        raise KeyError(f"unknown localizer {name!r}; registered: {sorted(LOCALIZERS)}")
    return LOCALIZERS[name](**options)


def empty_localizations() -> pd.DataFrame:
    return pd.DataFrame(
        {"frame": pd.Series(dtype=np.int64), "x_nm": pd.Series(dtype=np.float64), "y_nm": pd.Series(dtype=np.float64)}
    )


def check_localizations(df: pd.DataFrame, name: str = "localizer") -> pd.DataFrame:
    """Validate and normalise a localizer's output (int64 frames, float64 nm coordinates)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must return a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        out = empty_localizations()
        for c in df.columns:
            if c not in out:
                out[c] = pd.Series(dtype=np.float64)
        return out
    missing = [c for c in OUTPUT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{name} output lacks columns {missing}; it has {list(df.columns)}")
    df = df.reset_index(drop=True).copy()
    frame = df["frame"].to_numpy()
    if not np.issubdtype(frame.dtype, np.integer):
        f = frame.astype(np.float64)
        if not np.all(np.isfinite(f) & (f == np.round(f))):
            raise ValueError(f"{name} output has non-integer frames")
    df["frame"] = frame.astype(np.int64)
    df["x_nm"] = df["x_nm"].astype(np.float64)
    df["y_nm"] = df["y_nm"].astype(np.float64)
    return df


# --------------------------------------------------------------------------------------
# Picasso
# --------------------------------------------------------------------------------------

#: Default grid of minimum net gradients searched by the Picasso tuning hook.
#: 10 * 2^(k/3), 10 ... 20480 (steps of 26 %).
DEFAULT_NG_GRID = tuple(float(v) for v in np.round(10.0 * 2.0 ** (np.arange(34) / 3.0), 1))


def picasso_camera_info(camera: sd.Camera) -> dict:
    """Picasso's ``camera_info`` for a :class:`smlm_diffusers.Camera`.

    Picasso converts ``photons = (ADU - Baseline) * Sensitivity / Gain``: ``Baseline`` is
    the offset in ADU, ``Sensitivity`` is photo-electrons per ADU (the reciprocal of our
    ``gain`` in ADU per e-), ``Gain`` is the EM gain (1 here). It ignores ``Qe``.
    """
    return {"Baseline": float(camera.offset), "Sensitivity": 1.0 / float(camera.gain), "Gain": 1.0, "Qe": float(camera.qe)}


class PicassoLocalizer:
    """Picasso's standard 2D pipeline: identify -> get_spots -> Gaussian fit.

    ``picasso.localize.identify`` finds local maxima in ``box`` x ``box`` windows whose net
    gradient exceeds ``min_net_gradient``; ``picasso.localize.get_spots`` cuts the boxes and
    converts ADU to photo-electrons; ``picasso.gaussmle.gaussmle`` (``fitter="mle"``,
    isotropic ``"sigma"`` model: x, y, photons, background, sigma) or
    ``picasso.gausslq.fit_spots`` (``fitter="lq"``, least squares, elliptic) fits them.

    Coordinates: Picasso puts pixel centres at integer coordinates (its pixel-integrated
    Gaussian integrates column ``i`` over ``[i - 0.5, i + 0.5]``), so
    ``x_nm = (x_picasso + 0.5) * pixel_size`` (checked in tests/test_benchmarks.py).
    ``sigma_x_nm``/``sigma_y_nm`` are Picasso's ``lpx``/``lpy`` (MLE: the square root of
    its CRLB at the fitted parameters; LQ: Mortensen's formula) times the pixel size.
    ``photons`` are Picasso's photo-electrons divided by ``camera.qe`` (incident photons,
    as in the ground truth).

    ``pad`` (default True): Picasso cannot find maxima within ``box // 2 + 1`` pixels of the
    frame's border, which would lose ~20 % of a 64 x 64 field. Each frame is padded on all
    sides with that many pixels of its median (a background estimate), and coordinates are
    shifted back; localizations may land slightly outside the field.
    """

    def __init__(
        self,
        fitter: str = "mle",
        box: int = 7,
        pad: bool = True,
        eps: float = 1e-3,
        max_it: int = 100,
        min_net_gradient: float = 1000.0,
        ng_grid=DEFAULT_NG_GRID,
        tune_metric: str = "jaccard",
        tolerance_nm: float = 250.0,
    ):
        if fitter not in ("mle", "lq"):
            raise ValueError(f"fitter must be 'mle' or 'lq', got {fitter!r}")
        if box % 2 != 1 or box < 3:
            raise ValueError(f"box must be an odd integer >= 3, got {box}")
        if tune_metric not in ("jaccard", "efficiency"):
            raise ValueError(f"tune_metric must be 'jaccard' or 'efficiency', got {tune_metric!r}")
        self.fitter = fitter
        self.box = int(box)
        self.pad = bool(pad)
        self.eps = float(eps)
        self.max_it = int(max_it)
        self.min_net_gradient = float(min_net_gradient)
        self.ng_grid = tuple(sorted(float(v) for v in ng_grid))
        self.tune_metric = tune_metric
        self.tolerance_nm = float(tolerance_nm)
        self.last_tuning: pd.DataFrame | None = None

    # -- the localizer ------------------------------------------------------------------
    def __call__(self, frames_adu, camera: sd.Camera, sigma_px: float = 1.0, min_net_gradient: float | None = None):
        ng = self.min_net_gradient if min_net_gradient is None else float(min_net_gradient)
        return self._localize(np.asarray(frames_adu), camera, ng)

    def tune(self, frames_adu, gt: pd.DataFrame, camera: sd.Camera, sigma_px: float = 1.0) -> dict:
        """Pick ``min_net_gradient`` from ``ng_grid`` maximising ``tune_metric`` on a tuning movie.

        Identification keeps the maxima above the threshold and nothing else depends on
        it, so the spots are found and fitted once at the grid's lowest value and filtered
        by net gradient for each candidate (identical to re-running). Ties go to the higher
        efficiency, then to the lower threshold. The per-threshold table is kept in
        ``self.last_tuning``.
        """
        locs = self._localize(np.asarray(frames_adu), camera, self.ng_grid[0])
        ng = locs["net_gradient"].to_numpy()
        rows = []
        for thr in self.ng_grid:
            m = sd.evaluate(gt, locs[ng > thr], tolerance_nm=self.tolerance_nm)
            rows.append({"min_net_gradient": thr, "jaccard": m["jaccard"], "efficiency": m["efficiency"]})
        table = pd.DataFrame(rows)
        self.last_tuning = table
        primary = self.tune_metric
        secondary = "efficiency" if primary == "jaccard" else "jaccard"
        score = table[[primary, secondary]].fillna(-np.inf)
        best = score.sort_values([primary, secondary], ascending=False, kind="stable").index[0]
        thr = float(table.loc[best, "min_net_gradient"])
        if len(table) > 1 and best in (0, len(table) - 1):
            inner = 1 if best == 0 else len(table) - 2
            if score.loc[best, primary] > score.loc[inner, primary]:
                warnings.warn(f"Picasso tuning picked min_net_gradient={thr:g} at the edge of the grid; "
                              "widen ng_grid", RuntimeWarning)
        return {"min_net_gradient": thr}

    # -- internals ----------------------------------------------------------------------
    def _localize(self, frames: np.ndarray, camera: sd.Camera, min_net_gradient: float) -> pd.DataFrame:
        from picasso import gausslq, gaussmle, localize

        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3:
            raise ValueError(f"frames must be [F, H, W] or [H, W], got shape {frames.shape}")
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        p = self.box // 2 + 1 if self.pad else 0
        if p:
            med = np.median(frames.reshape(len(frames), -1), axis=1).astype(np.float32)
            padded = np.empty((frames.shape[0], frames.shape[1] + 2 * p, frames.shape[2] + 2 * p), np.float32)
            padded[:] = med[:, None, None]
            padded[:, p:-p, p:-p] = frames
            frames = padded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ids, _ = localize.identify(frames, float(min_net_gradient), self.box, threaded=False)
            if len(ids) == 0:
                out = empty_localizations()
                for c in ("photons", "background", "sigma_x_nm", "sigma_y_nm", "psf_sigma_nm", "net_gradient"):
                    out[c] = pd.Series(dtype=np.float64)
                return out
            ids = ids.reset_index(drop=True)
            spots = localize.get_spots(frames, ids, self.box, picasso_camera_info(camera))
            if self.fitter == "mle":
                theta, crlbs, ll, it = gaussmle.gaussmle(spots, self.eps, self.max_it, method="sigma")
                locs = gaussmle.locs_from_fits(ids, theta, crlbs, ll, it, self.box, spherical=True)
            else:
                theta = gausslq.fit_spots(spots)
                locs = gausslq.locs_from_fits(ids, theta, self.box, em=False)
        a = float(camera.pixel_size_nm)
        out = pd.DataFrame(
            {
                "frame": locs["frame"].to_numpy().astype(np.int64),
                "x_nm": (locs["x"].to_numpy(np.float64) + 0.5 - p) * a,
                "y_nm": (locs["y"].to_numpy(np.float64) + 0.5 - p) * a,
                "photons": locs["photons"].to_numpy(np.float64) / float(camera.qe),
                "background": locs["bg"].to_numpy(np.float64) / float(camera.qe),
                "sigma_x_nm": locs["lpx"].to_numpy(np.float64) * a,
                "sigma_y_nm": locs["lpy"].to_numpy(np.float64) * a,
                "psf_sigma_nm": 0.5 * (locs["sx"].to_numpy(np.float64) + locs["sy"].to_numpy(np.float64)) * a,
                "net_gradient": locs["net_gradient"].to_numpy(np.float64),
            }
        )
        ok = np.isfinite(out["x_nm"].to_numpy()) & np.isfinite(out["y_nm"].to_numpy())
        out = out[ok].sort_values("frame", kind="stable").reset_index(drop=True)
        return out


@register_localizer("picasso")
def make_picasso(**options) -> PicassoLocalizer:
    """Picasso, MLE fit (``gaussmle``, isotropic sigma model). Options: see :class:`PicassoLocalizer`."""
    return PicassoLocalizer(**options)


@register_localizer("picasso-lq")
def make_picasso_lq(**options) -> PicassoLocalizer:
    """Picasso, least-squares fit (``gausslq``)."""
    options.setdefault("fitter", "lq")
    return PicassoLocalizer(**options)


def picasso_available() -> bool:
    try:
        import picasso.localize  # noqa: F401
    except Exception:
        return False
    return True


def load_plugins(modules=()) -> None:
    """Import modules that register more localizers (by their side effect).

    Imports the given module names; unknown ones raise ``ImportError``.
    """
    import importlib

    for m in modules:
        importlib.import_module(m)


def crlb_at_truth(camera: sd.Camera, sigma_px: float, roi_size: int | None = None) -> Callable:
    """Callable for ``evaluate(crlb_nm2=...)``: :func:`smlm_diffusers.fisher.crlb_at_truth` of the matched rows."""
    from smlm_diffusers.fisher import crlb_at_truth as bound

    return lambda gt_rows: bound(gt_rows, sigma_px, camera, roi_size)


__all__ = [
    "LOCALIZERS",
    "DEFAULT_NG_GRID",
    "PicassoLocalizer",
    "check_localizations",
    "crlb_at_truth",
    "empty_localizations",
    "get_localizer",
    "load_plugins",
    "picasso_available",
    "picasso_camera_info",
    "register_localizer",
    "unregister_localizer",
]
