"""TIFF stacks in, localization tables out."""

from .tables import read_thunderstorm_csv, write_thunderstorm_csv
from .tiff import iter_tiff_frames, read_tiff_stack, write_tiff

__all__ = ["iter_tiff_frames", "read_thunderstorm_csv", "read_tiff_stack", "write_thunderstorm_csv", "write_tiff"]
