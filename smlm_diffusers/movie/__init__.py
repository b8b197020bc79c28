"""Whole movies through the pipeline: streamed, tiled, checkpointed, multi-process.

The command line (``smlm-diffusers localize``) and the web demo share this runner.

- :func:`localize_movie` runs a TIFF movie (or an array) batch by batch in bounded memory:
  the stack is read page by page, localizations are appended per batch to a checkpoint CSV
  and the render is accumulated, an interrupted run resumes where it stopped (with the same
  results as an uninterrupted one), batches are split between the processes of
  ``accelerate launch`` / ``torchrun``, and a progress bar shows frames/s and the time left.
  Its :class:`MovieRun` streams the merged table into a file (:meth:`MovieRun.write_table`).
- :func:`localize_frames` is one batch: frames larger than ``tile_size`` camera pixels are cut
  into tiles with a margin (:mod:`~smlm_diffusers.movie.tiles`), the pipeline runs in calls of
  bounded size, and the tiles' cores are put back together without seams.
- :mod:`~smlm_diffusers.movie.outputs`: the edges of a run: the input check, the output paths, the
  table and the calibrated renders, the summary.
"""

from .chunks import ChunkResult, localize_frames
from .resume import MovieError, WorkFolder, batch_seed
from .runner import MovieRun, SingleProcess, localize_movie
from .sink import LocalizationWriter
from .tiles import Tile, keep_core, tile_frame

__all__ = [
    "ChunkResult",
    "LocalizationWriter",
    "MovieError",
    "MovieRun",
    "SingleProcess",
    "Tile",
    "WorkFolder",
    "batch_seed",
    "keep_core",
    "localize_frames",
    "localize_movie",
    "tile_frame",
]
