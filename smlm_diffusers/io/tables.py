"""Localization tables as ThunderSTORM CSV files.

ThunderSTORM's table convention is the one of this package (docs/conventions.md): ``x`` is the column
axis, ``y`` the row axis (pointing down), both in nm with the origin at the outer top-left
corner of the image, so camera pixel (row i, column j) covers x in [j*a, (j+1)*a) and
y in [i*a, (i+1)*a) and its centre is ((j + 0.5) a, (i + 0.5) a). Frames are 1-based in
the file and 0-based in every DataFrame.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np
import pandas as pd

TS_COLUMNS = ["id", "frame", "x [nm]", "y [nm]", "sigma [nm]", "intensity [photon]", "uncertainty [nm]"]

# ThunderSTORM header -> DataFrame column; anything else goes through _snake_case
_RENAME = {
    "x [nm]": "x_nm",
    "y [nm]": "y_nm",
    "z [nm]": "z_nm",
    "sigma [nm]": "sigma_nm",
    "intensity [photon]": "intensity",
    "uncertainty [nm]": "uncertainty_nm",
    "uncertainty_xy [nm]": "uncertainty_nm",
    "uncertainty_z [nm]": "sigma_z_nm",
}


def _snake_case(name: str) -> str:
    """``'offset [photon]'`` -> ``'offset'``, ``'x [px]'`` -> ``'x_px'``, ``'chi2'`` -> ``'chi2'``.

    Photon units are dropped (photons are the package's default unit for intensities); other
    units become a suffix.
    """
    m = re.fullmatch(r"\s*(.*?)\s*(?:\[(.*?)\])?\s*", name)
    base, unit = m.group(1), (m.group(2) or "").strip().lower()
    base = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()
    if unit and unit not in ("photon", "photons"):
        base = f"{base}_{re.sub(r'[^0-9a-z]+', '', unit)}"
    return base


def write_thunderstorm_csv(df: pd.DataFrame, path, extra_columns: dict | None = None, id_start: int = 1,
                           header: bool = True) -> None:
    """Write localizations as a ThunderSTORM-compatible CSV file.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``frame`` (0-based), ``x_nm``, ``y_nm`` (nm; x = column, origin at the outer
        top-left corner of the image, ThunderSTORM's table convention) and optionally

        - ``sigma_nm``: PSF (or fitted Gaussian) standard deviation, nm -> ``sigma [nm]``;
        - ``photons`` or else ``intensity`` -> ``intensity [photon]``;
        - ``uncertainty_nm``, or else ``sigma_x_nm`` and ``sigma_y_nm`` (1-sigma localization
          uncertainty per axis, nm) combined as sqrt((sx^2 + sy^2) / 2) -> ``uncertainty [nm]``;
        - 3D: ``z_nm`` -> ``z [nm]`` (after ``y [nm]``), ``sigma_z_nm`` -> ``uncertainty_z [nm]``.

        Missing values are written as the bare number ``NaN`` (which ThunderSTORM's Java parser accepts).
    path : str, path-like or text file object
    extra_columns : dict, optional
        Further columns (header -> array of ``len(df)`` values) appended after the standard
        ones, in order, e.g. ``{"offset [photon]": background, "kde_mass": mass}``.
    id_start : int
        ``id`` of the first row. With ``header=False`` and an open file, a long table is
        written chunk by chunk (each chunk's ``id_start`` one past the previous chunk's last
        id): the same bytes as one call on the whole table.
    header : bool
        Write the header line.

    Notes
    -----
    The header is quoted as ThunderSTORM writes it; ``id`` counts from 1 and ``frame`` is
    1-based. Floats are written with full round-trip precision.
    """
    missing = [c for c in ("frame", "x_nm", "y_nm") if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing columns {missing}; it has {list(df.columns)}")
    n = len(df)
    nan = np.full(n, np.nan)

    def col(name):
        return df[name].to_numpy(dtype=np.float64) if name in df.columns else None

    intensity = col("photons") if "photons" in df.columns else col("intensity")
    uncertainty = col("uncertainty_nm")
    if uncertainty is None and {"sigma_x_nm", "sigma_y_nm"} <= set(df.columns):
        uncertainty = np.sqrt((col("sigma_x_nm") ** 2 + col("sigma_y_nm") ** 2) / 2.0)
    sigma = col("sigma_nm")
    out = pd.DataFrame(
        {
            "id": np.arange(id_start, id_start + n, dtype=np.int64),
            "frame": df["frame"].to_numpy().astype(np.int64) + 1,
            "x [nm]": col("x_nm"),
            "y [nm]": col("y_nm"),
            "sigma [nm]": nan if sigma is None else sigma,
            "intensity [photon]": nan if intensity is None else intensity,
            "uncertainty [nm]": nan if uncertainty is None else uncertainty,
        },
        columns=TS_COLUMNS,
    )
    if "z_nm" in df.columns:  # 3D: ThunderSTORM's names for the axial position and its uncertainty
        out.insert(4, "z [nm]", col("z_nm"))
        if "sigma_z_nm" in df.columns:
            out["uncertainty_z [nm]"] = col("sigma_z_nm")
    for name, values in (extra_columns or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"extra column {name!r} has shape {values.shape}, expected ({n},)")
        out[name] = values
    # the header quoted, like ThunderSTORM; the values plain numbers, a missing one the bare token NaN (a number
    # to ThunderSTORM's Java parser and to pandas; QUOTE_NONNUMERIC would write it as the string "NaN")
    if header:
        line = ",".join('"' + str(c).replace('"', '""') + '"' for c in out.columns) + "\n"
        if hasattr(path, "write"):
            path.write(line)
        else:
            with open(path, "w", newline="") as fh:
                fh.write(line)
    if hasattr(path, "write"):
        out.to_csv(path, index=False, header=False, quoting=csv.QUOTE_MINIMAL, na_rep="NaN", lineterminator="\n")
    else:
        out.to_csv(path, mode="a" if header else "w", index=False, header=False, quoting=csv.QUOTE_MINIMAL,
                   na_rep="NaN", lineterminator="\n")


def read_thunderstorm_csv(path: str | os.PathLike, pixel_size_nm: float | None = None) -> pd.DataFrame:
    """Read a ThunderSTORM CSV file (or one written by :func:`write_thunderstorm_csv`).

    Parameters
    ----------
    path : str or path-like
    pixel_size_nm : float, optional
        Needed only for files exported in pixel units (``x [px]``, ``y [px]``): positions
        are converted to nm with ThunderSTORM's convention (``x_nm = x_px * a``).

    Returns
    -------
    pandas.DataFrame
        ``frame`` (int64, 0-based), ``x_nm``, ``y_nm`` first, then every other column
        renamed to snake case: ``sigma [nm]`` -> ``sigma_nm``, ``intensity [photon]`` ->
        ``intensity``, ``uncertainty [nm]`` -> ``uncertainty_nm``, ``offset [photon]`` ->
        ``offset``, ``bkgstd [photon]`` -> ``bkgstd``, ``id`` -> ``id`` ...

    Raises
    ------
    ValueError
        If ``frame`` or the x/y columns are missing, or frames are not integers >= 1.
    """
    # round_trip: pandas' default fast parser can be off by one ulp
    raw = pd.read_csv(path, skipinitialspace=True, float_precision="round_trip")
    raw.columns = [str(c).strip().strip('"').strip() for c in raw.columns]
    df = raw.rename(columns={c: _RENAME.get(c, _snake_case(c)) for c in raw.columns})
    if "x_nm" not in df.columns and {"x_px", "y_px"} <= set(df.columns):
        if pixel_size_nm is None:
            raise ValueError(f"{os.fspath(path)!r} has positions in pixels (x [px]); pass pixel_size_nm")
        df["x_nm"] = df.pop("x_px") * float(pixel_size_nm)
        df["y_nm"] = df.pop("y_px") * float(pixel_size_nm)
    missing = [c for c in ("frame", "x_nm", "y_nm") if c not in df.columns]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is missing columns {missing}; it has {list(raw.columns)}")
    frame = df["frame"].to_numpy(dtype=np.float64)
    if len(frame) and not (np.all(frame == np.round(frame)) and frame.min() >= 1):
        raise ValueError(f"{os.fspath(path)!r}: 'frame' must hold 1-based integer frame numbers")
    df["frame"] = frame.astype(np.int64) - 1
    df["x_nm"] = df["x_nm"].astype(np.float64)
    df["y_nm"] = df["y_nm"].astype(np.float64)
    first = ["frame", "x_nm", "y_nm"]
    return df[first + [c for c in df.columns if c not in first]]
