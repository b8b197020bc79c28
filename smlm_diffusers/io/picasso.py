"""Localization tables as Picasso HDF5 + YAML files (Render, undrift, clustering, picking).

Picasso (jungmannlab/picasso) stores localizations as one compound HDF5 dataset ``locs``
and their metadata as a list of dictionaries, in a YAML file of the same name beside it
(``locs.hdf5`` + ``locs.yaml``, one YAML document per dictionary) and, since Picasso 0.11,
also embedded as JSON in the dataset ``metadata``. Its conventions differ from this
package's tables (docs/conventions.md):

- frames are 0-based (as in this package's DataFrames);
- ``x``, ``y`` are in camera pixels with pixel *centres* at integers: camera pixel
  (row i, column j) is centred on (x, y) = (j, i), so ``x_px = x_nm / a - 0.5``;
- ``lpx``, ``lpy`` (localization precision) and ``sx``, ``sy`` (PSF width) are in camera
  pixels; ``photons`` per emitter and ``bg`` photons per pixel.

Picasso's loader drops rows with NaN or negative values, and those with ``x < 0`` or
``y < 0``: molecules within half a pixel of the image's top or left edge. Note that
``picasso.io.import_ts`` divides ThunderSTORM nm by the pixel size without the half-pixel
shift, so a ThunderSTORM CSV imported there lands half a pixel right of and below these files.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

PICASSO_FIELDS = [("frame", "u4"), ("x", "f4"), ("y", "f4"), ("photons", "f4"), ("sx", "f4"), ("sy", "f4"),
                  ("bg", "f4"), ("lpx", "f4"), ("lpy", "f4")]
# further columns of this package's tables carried along (Picasso keeps and filters by any column)
_EXTRA_FIELDS = {"kde_mass": "f4", "probability": "f4", "n_samples": "i4", "len": "i4", "n": "i4"}
# (``len`` / ``n`` of linked blinks: frames first to last, localizations merged; Picasso's ``link``)
# 3D tables: Picasso keeps z and its precision lpz in nm (not camera pixels, unlike x, y, lpx, lpy)
_FIELDS_3D = {"z_nm": ("z", "f4"), "sigma_z_nm": ("lpz", "f4")}


def picasso_locs(df: pd.DataFrame, pixel_size_nm: float, psf_sigma_px: float) -> np.ndarray:
    """This package's localizations as Picasso's structured array.

    Parameters
    ----------
    df : DataFrame
        ``frame`` (0-based), ``x_nm``, ``y_nm`` (package convention: outer top-left corner of
        the image at (0, 0) nm), ``photons`` (per emitter), ``background`` (photons per pixel),
        ``sigma_x_nm``, ``sigma_y_nm`` (1-sigma localization uncertainty, nm); optionally
        ``kde_mass``, ``probability``, ``n_samples`` (copied as such; a NaN ``kde_mass``, a molecule with no
        KDE peak of its own, as 0: Picasso's loader drops rows with a NaN). Missing photometry or
        uncertainty columns are written as NaN.
    pixel_size_nm : float
        Camera pixel size ``a``, nm.
    psf_sigma_px : float
        Gaussian PSF standard deviation, camera pixels (written as ``sx`` and ``sy``).

    Returns
    -------
    numpy structured array with the fields of :data:`PICASSO_FIELDS` (+ extras), sorted by frame.
    """
    missing = [c for c in ("frame", "x_nm", "y_nm") if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing columns {missing}; it has {list(df.columns)}")
    a = float(pixel_size_nm)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    df = df.sort_values("frame", kind="stable")
    n = len(df)

    def col(name, scale=1.0):
        if name not in df.columns:
            return np.full(n, np.nan, np.float32)
        return (df[name].to_numpy(np.float64) / scale).astype(np.float32)

    frame = df["frame"].to_numpy()
    if n and (frame.min() < 0 or not np.all(frame == np.round(frame))):
        raise ValueError("frame must hold 0-based integer frame numbers")
    extras = [(c, t) for c, t in _EXTRA_FIELDS.items() if c in df.columns]
    fields_3d = [(c, f) for c, f in _FIELDS_3D.items() if c in df.columns]
    out = np.zeros(n, dtype=PICASSO_FIELDS + [f for _, f in fields_3d] + extras)
    out["frame"] = frame.astype(np.uint32)
    # pixel centres at integers (Picasso) vs the outer corner at 0 (this package, ThunderSTORM)
    out["x"] = (df["x_nm"].to_numpy(np.float64) / a - 0.5).astype(np.float32)
    out["y"] = (df["y_nm"].to_numpy(np.float64) / a - 0.5).astype(np.float32)
    out["photons"] = col("photons")
    out["sx"] = out["sy"] = np.float32(psf_sigma_px)
    out["bg"] = col("background")
    out["lpx"] = col("sigma_x_nm", a)
    out["lpy"] = col("sigma_y_nm", a)
    for c, (name, _) in fields_3d:
        out[name] = col(c)
    for c, t in extras:
        values = df[c].to_numpy()
        if c == "kde_mass":  # NaN for a molecule the weighing added (a pair member: no KDE peak of its own), and
            values = np.nan_to_num(values.astype(np.float64), nan=0.0)  # Picasso drops rows with a NaN anywhere
        out[c] = values.astype(t)
    return out


def picasso_info(
    n_frames: int,
    height: int,
    width: int,
    pixel_size_nm: float,
    camera=None,
    source: str | None = None,
    generated_by: str | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Picasso metadata: the movie's dictionary, then the localization step's.

    ``Frames``, ``Width``, ``Height`` (camera pixels) describe the movie, as Picasso's
    loaders write them; ``Pixelsize`` (nm) and the camera (``Baseline`` ADU, ``Sensitivity``
    e- per ADU, ``Gain`` the EM gain, 1, ``Qe``) the localization, as Picasso Localize does.
    ``extra`` entries (plain numbers and strings) are added to the second dictionary.
    """
    from .. import __version__

    movie = {"Byte Order": "<", "Data Type": "float32", "Frames": int(n_frames), "Height": int(height),
             "Width": int(width)}
    if source:
        movie["File"] = str(source)
    loc = {"Generated by": generated_by or f"smlm-diffusers v{__version__} localize", "Pixelsize": float(pixel_size_nm)}
    if camera is not None:
        loc |= {"Baseline": float(camera.offset), "Sensitivity": 1.0 / float(camera.gain), "Gain": 1,
                "Qe": float(camera.qe), "Read noise (e- rms)": float(camera.read_noise)}
    loc |= {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in (extra or {}).items()}
    return [movie, loc]


def write_picasso_hdf5(
    df: pd.DataFrame,
    path: str | os.PathLike,
    n_frames: int,
    height: int,
    width: int,
    pixel_size_nm: float,
    psf_sigma_px: float,
    camera=None,
    source: str | None = None,
    extra_info: dict | None = None,
) -> tuple[Path, Path]:
    """Write localizations as Picasso's ``.hdf5`` + ``.yaml`` pair; returns both paths.

    Parameters
    ----------
    df : DataFrame
        As :func:`picasso_locs` (nm, 0-based frames, this package's pixel geometry).
    path : str or path-like
        The ``.hdf5`` file; the metadata goes to the same name with ``.yaml``.
    n_frames, height, width : int
        The movie: frames, and its size in camera pixels (Picasso's ``Frames``, ``Height``,
        ``Width``).
    pixel_size_nm : float
        Camera pixel size, nm (``Pixelsize``).
    psf_sigma_px : float
        PSF sigma, camera pixels (``sx``, ``sy``).
    camera : Camera, optional
        Written as Picasso's camera entries.
    source : str, optional
        The movie's file name (``File``).
    extra_info : dict, optional
        More metadata for the localization step (mode, model, ...).

    Notes
    -----
    The files are written next to each other under temporary names and then renamed, so an
    interrupted write leaves no half file. Rows with NaN are kept, with a warning: Picasso's
    loader would drop them.
    """
    import h5py
    import yaml

    path = Path(path)
    yaml_path = path.with_suffix(".yaml")
    locs = picasso_locs(df, pixel_size_nm, psf_sigma_px)
    info = picasso_info(n_frames, height, width, pixel_size_nm, camera=camera, source=source, extra=extra_info)
    bad = int(sum(np.count_nonzero(~np.isfinite(locs[f])) for f, t in PICASSO_FIELDS if t == "f4"))
    if bad:
        warnings.warn(f"{path.name}: {bad} NaN/inf values; Picasso drops those localizations when it loads the file",
                      stacklevel=2)
    tmp_h5, tmp_yaml = path.with_name(path.name + ".tmp"), yaml_path.with_name(yaml_path.name + ".tmp")
    with h5py.File(tmp_h5, "w") as f:
        f.create_dataset("locs", data=locs)
        f.create_dataset("metadata", data=json.dumps(info))
    with open(tmp_yaml, "w") as fh:
        yaml.safe_dump_all(info, fh, default_flow_style=False, sort_keys=False)
    os.replace(tmp_h5, path)
    os.replace(tmp_yaml, yaml_path)
    return path, yaml_path


def read_picasso_hdf5(path: str | os.PathLike, pixel_size_nm: float | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Read a Picasso ``.hdf5`` (+ ``.yaml``) back into this package's convention.

    Returns the localizations with ``frame``, ``x_nm``, ``y_nm``, ``sigma_x_nm``,
    ``sigma_y_nm`` (from ``lpx``, ``lpy``), ``photons``, ``background`` and any other
    columns as they are, and the metadata list. ``pixel_size_nm`` defaults to the metadata's
    ``Pixelsize``.
    """
    import h5py
    import yaml

    path = Path(path)
    with h5py.File(path, "r") as f:
        locs = f["locs"][...]
        embedded = f["metadata"][()] if "metadata" in f else None
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        info = list(yaml.safe_load_all(yaml_path.read_text()))
    elif embedded is not None:
        info = list(json.loads(embedded.decode() if isinstance(embedded, bytes) else embedded))
    else:
        info = []
    if pixel_size_nm is None:
        sizes = [d["Pixelsize"] for d in info if isinstance(d, dict) and "Pixelsize" in d]
        if not sizes:
            raise ValueError(f"{path}: no Pixelsize in the metadata; pass pixel_size_nm")
        pixel_size_nm = sizes[-1]
    a = float(pixel_size_nm)
    df = pd.DataFrame({name: locs[name] for name in locs.dtype.names})
    out = pd.DataFrame({"frame": df.pop("frame").astype(np.int64),
                        "x_nm": (df.pop("x").astype(np.float64) + 0.5) * a,
                        "y_nm": (df.pop("y").astype(np.float64) + 0.5) * a})
    renames = {"lpx": "sigma_x_nm", "lpy": "sigma_y_nm"}
    for c in list(df.columns):
        v = df[c].to_numpy()
        if c in renames:
            out[renames[c]] = v.astype(np.float64) * a
        elif c in ("z", "lpz"):  # already nm in Picasso
            out["z_nm" if c == "z" else "sigma_z_nm"] = v.astype(np.float64)
        elif c == "bg":
            out["background"] = v.astype(np.float64)
        else:
            out[c] = v
    return out, info
