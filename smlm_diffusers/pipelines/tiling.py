"""Tiles of the UNet's working grid (KDE pixels for a v1 UNet, camera pixels for v2).

Frames of any size are sampled in overlapping tiles; each tile keeps only its centre (the
``overlap`` pixels of every edge are dropped), so an emitter on a tile border sees the same
context as one in the middle of a tile. Outside the field the grid is padded with the
conditioning's background level. An axis that one tile covers has no inner seam: there the
margin is only that padding, and ``edge`` (at most ``overlap``) pixels of it suffice when the
UNet was trained on crops that reach that far past the field (``crop_edge_px``): a 64 x 64
frame is then one tile of 72 x 72 instead of 80 x 80, 19% less work per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class TileLayout:
    """How a working grid of ``shape`` pixels is cut: equal tiles of ``tile`` pixels at
    ``corners`` (top-left, on the padded grid of ``padded`` pixels), each keeping its centre,
    without the ``overlap`` pixels (per axis: rows, columns) of each of its edges."""

    shape: tuple[int, int]
    tile: tuple[int, int]
    corners: list[tuple[int, int]]
    padded: tuple[int, int]
    overlap: tuple[int, int]

    @classmethod
    def plan(cls, h: int, w: int, tile_size: int, overlap: int, multiple: int, edge: int | None = None
             ) -> TileLayout:
        """Per axis, the fewest tiles of at most ``tile_size`` pixels whose centres
        (``tile_size - 2 * overlap``) cover the axis, all equal and just large enough (a
        multiple of ``multiple``, the UNet's downsampling factor): a 256-pixel axis gets two
        tiles of 160 with overlap 16, not three of 128. An axis that one tile covers is padded
        by ``edge`` pixels (default and at most ``overlap``) instead (module docstring)."""
        edge = overlap if edge is None else min(int(edge), overlap)
        if edge < 0:
            raise ValueError(f"the tile edge margin must be >= 0, got {edge}")

        def axis(n: int) -> tuple[int, int, int]:
            count = max(1, math.ceil(n / (tile_size - 2 * overlap)))
            o = overlap if count > 1 else edge
            size = int(math.ceil((math.ceil(n / count) + 2 * o) / multiple) * multiple)
            return size, count, o

        (th, ny, oy), (tw, nx, ox) = axis(h), axis(w)
        sy, sx = th - 2 * oy, tw - 2 * ox
        corners = [(i * sy, j * sx) for i in range(ny) for j in range(nx)]
        return cls((h, w), (th, tw), corners, (ny * sy + 2 * oy, nx * sx + 2 * ox), (oy, ox))

    @property
    def core(self) -> tuple[int, int]:
        """Side of the centre each tile keeps."""
        return self.tile[0] - 2 * self.overlap[0], self.tile[1] - 2 * self.overlap[1]

    @property
    def core_grid(self) -> tuple[int, int]:
        """The padded grid without its margin: where the tile centres are placed."""
        return self.padded[0] - 2 * self.overlap[0], self.padded[1] - 2 * self.overlap[1]

    def pad(self, x: torch.Tensor, values) -> torch.Tensor:
        """``x`` [F, C, h, w] on the padded grid, channel ``c`` filled with ``values[c]``."""
        (h, w), (ph, pw), (oy, ox) = self.shape, self.padded, self.overlap
        return torch.cat([F.pad(x[:, c:c + 1], (ox, pw - w - ox, oy, ph - h - oy), value=v)
                          for c, v in enumerate(values)], dim=1)

    def jobs(self, padded_kde: torch.Tensor, num_samples: int, empty_level: float) -> list:
        """``(frame, sample, corner)`` of every tile to sample, frame by frame, sample by sample:
        the tiles whose KDE channels ``padded_kde`` [F, C, ph, pw] rise above ``empty_level``
        somewhere (margin included); the others keep a zero residual."""
        n_frames = padded_kde.shape[0]
        occupied = {(f, c) for f in range(n_frames) for c in self.corners
                    if self.window(padded_kde[f], c).max() > empty_level}
        return [(f, k, c) for f in range(n_frames) for k in range(num_samples) for c in self.corners
                if (f, c) in occupied]

    def jobs_where(self, wanted: torch.Tensor, num_samples: int) -> list:
        """``(frame, sample, corner)`` of the tiles whose kept centre holds a ``True`` of ``wanted``
        [F, h, w] (a mask on the unpadded grid): sampling where it is asked for, nowhere else."""
        core_h, core_w = self.core
        out = []
        for f in range(wanted.shape[0]):
            hit = [c for c in self.corners if wanted[f, c[0]:c[0] + core_h, c[1]:c[1] + core_w].any()]
            out += [(f, k, c) for k in range(num_samples) for c in hit]
        return out

    def covered(self, jobs: list, n_frames: int) -> torch.Tensor:
        """[F, h, w] bool: the pixels of the unpadded grid whose value a job of ``jobs`` sets."""
        (h, w), (sy, sx) = self.shape, self.core
        out = torch.zeros(n_frames, *self.core_grid, dtype=torch.bool)
        for f, _, (i, j) in jobs:
            out[f, i:i + sy, j:j + sx] = True
        return out[:, :h, :w]

    @property
    def work(self) -> int:
        """Pixels of one tile: the cost of a job."""
        return self.tile[0] * self.tile[1]

    def run(self, padded: torch.Tensor, jobs: list, shape: tuple[int, int, int], batch_size: int,
            fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``fn`` (tiles [B, C, th, tw] -> [B, c, th, tw]) to the ``jobs`` in batches and
        stitch the centres: [F, K, c, *core_grid] for ``shape = (F, K, c)``, zero where no job ran."""
        out = torch.zeros(*shape, *self.core_grid, device=padded.device)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            for (f, k, c), tile in zip(chunk, fn(torch.stack([self.window(padded[f], c) for f, _, c in chunk]))):
                self.place(out[f, k], tile, c)
        return out

    def window(self, padded: torch.Tensor, corner: tuple[int, int]) -> torch.Tensor:
        """The tile at ``corner`` of a padded grid [..., ph, pw]."""
        i, j = corner
        return padded[..., i:i + self.tile[0], j:j + self.tile[1]]

    def place(self, out: torch.Tensor, tile: torch.Tensor, corner: tuple[int, int]) -> None:
        """Write a tile's centre into ``out`` [..., ph - 2 o, pw - 2 o] (the grid without the margin)."""
        (i, j), (sy, sx), (oy, ox) = corner, self.core, self.overlap
        out[..., i:i + sy, j:j + sx] = tile[..., oy:oy + sy, ox:ox + sx]
