"""Localization tables written chunk by chunk: a movie's table never has to fit in memory.

The files are those of :func:`smlm_diffusers.io.write_localizations` (the format chosen by the
suffix), byte for byte for a CSV: ThunderSTORM CSV, or Picasso's HDF5 + YAML pair with the
``locs`` dataset grown chunk by chunk. They are written under temporary names and renamed
by :meth:`LocalizationWriter.close`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.localizations import localization_format, thunderstorm_extra_columns
from ..io.picasso import PICASSO_FIELDS, picasso_info, picasso_locs
from ..io.tables import write_thunderstorm_csv


class LocalizationWriter:
    """Stream localizations (frame-ordered chunks) into ``path``; use as a context manager.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (ThunderSTORM) or ``.hdf5`` / ``.h5`` (Picasso, with ``.yaml`` beside it).
    pixel_size_nm : float
        Camera pixel size, nm.
    shape : (frames, height, width)
        The movie (Picasso's metadata).
    psf_sigma_px : float
        PSF sigma, camera pixels: ThunderSTORM's ``sigma [nm]``, Picasso's ``sx``/``sy``.
    samples : bool
        Whether the localizations came from DDPM samples (probability and n_samples apply).
    camera, source, extra_info
        Picasso metadata, as :func:`~smlm_diffusers.io.picasso.write_picasso_hdf5`.
    """

    def __init__(self, path, *, pixel_size_nm: float, shape: tuple[int, int, int], psf_sigma_px: float,
                 samples: bool, camera=None, source: str | None = None, extra_info: dict | None = None):
        self.path = Path(path)
        self.format = localization_format(self.path)
        self.pixel_size_nm = float(pixel_size_nm)
        self.psf_sigma_px = float(psf_sigma_px)
        self.samples = bool(samples)
        self.info = (shape, camera, source, extra_info)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.rows = 0
        self.bad_values = 0
        self._header_written = False
        if self.format == "picasso":
            import h5py

            self._h5 = h5py.File(self.tmp, "w")
            self._locs = None
        else:
            self._fh = open(self.tmp, "w", newline="")

    def write(self, locs: pd.DataFrame) -> None:
        """Append one chunk of localizations (frames after those already written)."""
        if len(locs) == 0 and (self._header_written or self.format == "picasso"):
            return
        if self.format == "picasso":
            table = picasso_locs(locs, self.pixel_size_nm, self.psf_sigma_px)
            self.bad_values += int(sum(np.count_nonzero(~np.isfinite(table[f])) for f, t in PICASSO_FIELDS
                                       if t == "f4"))
            if self._locs is None:
                self._locs = self._h5.create_dataset("locs", shape=(0,), maxshape=(None,), dtype=table.dtype,
                                                     chunks=(65536,))
            self._locs.resize((self.rows + len(table),))
            self._locs[self.rows:] = table
        else:
            table = locs.assign(sigma_nm=self.psf_sigma_px * self.pixel_size_nm)
            write_thunderstorm_csv(table, self._fh, extra_columns=thunderstorm_extra_columns(locs, self.samples),
                                   id_start=self.rows + 1, header=not self._header_written)
            self._header_written = True
        self.rows += len(locs)

    def close(self) -> list[Path]:
        """Finish the files and move them into place; returns the paths written."""
        if self.format == "picasso":
            import yaml

            if self._locs is None:  # no molecules at all: an empty dataset of Picasso's fields
                self._h5.create_dataset("locs", shape=(0,), dtype=PICASSO_FIELDS)
            shape, camera, source, extra = self.info
            info = picasso_info(shape[0], shape[1], shape[2], self.pixel_size_nm, camera=camera, source=source,
                                extra=extra)
            self._h5.create_dataset("metadata", data=json.dumps(info))
            self._h5.close()
            if self.bad_values:
                warnings.warn(f"{self.path.name}: {self.bad_values} NaN/inf values; Picasso drops those "
                              "localizations when it loads the file", stacklevel=2)
            yaml_path = self.path.with_suffix(".yaml")
            tmp_yaml = yaml_path.with_name(yaml_path.name + ".tmp")
            with open(tmp_yaml, "w") as fh:
                yaml.safe_dump_all(info, fh, default_flow_style=False, sort_keys=False)
            os.replace(self.tmp, self.path)
            os.replace(tmp_yaml, yaml_path)
            return [self.path, yaml_path]
        if not self._header_written:
            raise ValueError("no localizations were written, not even an empty table with its columns")
        self._fh.close()
        os.replace(self.tmp, self.path)
        return [self.path]

    def abort(self) -> None:
        """Drop the temporary files."""
        if self.format == "picasso":
            self._h5.close()
        else:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> LocalizationWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
