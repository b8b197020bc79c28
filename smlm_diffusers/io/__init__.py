"""TIFF stacks in (streamed), localization tables out (ThunderSTORM CSV, Picasso HDF5 + YAML)."""

from .localizations import localization_format, write_localizations
from .picasso import read_picasso_hdf5, write_picasso_hdf5
from .tables import read_thunderstorm_csv, write_thunderstorm_csv
from .tiff import iter_tiff_frames, read_tiff_stack, tiff_pixel_size_nm, tiff_shape, write_tiff

__all__ = [
    "iter_tiff_frames",
    "localization_format",
    "read_picasso_hdf5",
    "read_thunderstorm_csv",
    "read_tiff_stack",
    "tiff_pixel_size_nm",
    "tiff_shape",
    "write_localizations",
    "write_picasso_hdf5",
    "write_thunderstorm_csv",
    "write_tiff",
]
