"""Frames larger than the network's comfortable size, cut into overlapping tiles.

Each frame axis longer than ``tile_size`` camera pixels is split into the fewest equal
*cores* of at most ``tile_size`` pixels; every core is processed inside a *window* that adds
``margin`` pixels of context on each side (shifted inwards at the frame's edges, so all
windows of a frame have one shape and can be batched). The cores partition the frame: each
KDE pixel of the render comes from exactly one tile, one where it has the margin's context.

Localizations are kept in the tile whose core holds them. Two tiles see a molecule near
their seam with slightly different context (DeepSTORM normalizes each window by its own
median), so their two estimates of one molecule may fall on either side of the seam: both
kept, or both dropped. :func:`keep_core` therefore keeps each tile's localizations up to
``band_px`` beyond its inner core edges and removes cross-tile pairs closer than
``radius_px``, keeping the estimate that lies in its own tile's core: every molecule is
found once, at the position of the tile that owns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Tile:
    """One tile of a frame, in camera pixels: half-open ranges (row0, row1, col0, col1).

    ``core`` is the part whose results are kept, ``window`` the part the pipeline sees.
    """

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def offset(self) -> tuple[int, int]:
        """Row and column of the window's top-left pixel in the frame."""
        return self.window[0], self.window[2]

    def core_in_window(self) -> tuple[slice, slice]:
        """The core as slices of the window (camera pixels)."""
        r0, r1, c0, c1 = self.core
        return slice(r0 - self.window[0], r1 - self.window[0]), slice(c0 - self.window[2], c1 - self.window[2])


def _axis(n: int, tile_size: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(core0, core1, window0, window1) along one axis of ``n`` pixels."""
    if n <= tile_size:
        return [(0, n, 0, n)]
    count = math.ceil(n / tile_size)
    edges = [round(k * n / count) for k in range(count + 1)]
    size = min(n, max(b - a for a, b in zip(edges, edges[1:])) + 2 * margin)
    out = []
    for a, b in zip(edges, edges[1:]):
        start = min(max(a - margin, 0), n - size)
        out.append((a, b, start, start + size))
    return out


def tile_frame(height: int, width: int, tile_size: int = 256, margin: int = 16) -> list[Tile]:
    """Tiles of a ``height x width`` frame, in raster order.

    Parameters
    ----------
    height, width : int
        Frame size, camera pixels.
    tile_size : int
        Largest core side, camera pixels; a frame no larger than this is one tile.
    margin : int
        Context added on each side of a core, camera pixels (DeepSTORM's receptive field:
        beyond about 12 pixels a tile's KDE matches the whole frame's to the per-window
        median normalization, about 1% of a peak).

    Returns
    -------
    list of Tile, all windows of one shape.
    """
    if tile_size < 1 or margin < 0:
        raise ValueError(f"need tile_size >= 1 and margin >= 0, got {tile_size}, {margin}")
    rows, cols = _axis(int(height), int(tile_size), int(margin)), _axis(int(width), int(tile_size), int(margin))
    return [Tile(core=(r[0], r[1], c[0], c[1]), window=(r[2], r[3], c[2], c[3])) for r in rows for c in cols]


def keep_core(
    locs: pd.DataFrame,
    tile_index: np.ndarray,
    tiles: list[Tile],
    pixel_size_nm: float,
    band_px: float = 1.0,
    radius_px: float = 0.25,
) -> np.ndarray:
    """Which localizations to keep after tiling: boolean mask over ``locs``' rows.

    A row is kept when it lies in its tile's core, or up to ``band_px`` beyond an inner edge
    of it, unless another tile reports the same molecule (closer than ``radius_px``) with a
    better claim: its estimate in its own core, or as good a claim and a lower tile index.
    Each molecule is then reported once, by one tile.

    Parameters
    ----------
    locs : DataFrame
        frame, x_nm, y_nm in *frame* coordinates, from all tiles of the same frames.
    tile_index : int array
        The tile (index into ``tiles``) each row came from.
    tiles : list of Tile
    pixel_size_nm : float
    band_px : float
        How far beyond its inner core edges a tile's localizations are considered, camera px.
    radius_px : float
        Cross-tile pairs closer than this are one molecule (KDE peaks of distinct molecules
        are at least two KDE pixels, half a camera pixel, apart).
    """
    n = len(locs)
    if n == 0 or len(tiles) == 1:
        return np.ones(n, dtype=bool)
    x = locs["x_nm"].to_numpy(np.float64) / pixel_size_nm
    y = locs["y_nm"].to_numpy(np.float64) / pixel_size_nm
    frame = locs["frame"].to_numpy(np.int64)
    tile_index = np.asarray(tile_index, dtype=np.int64)
    height = max(t.core[1] for t in tiles)
    width = max(t.core[3] for t in tiles)
    # each tile's core, open to infinity at the frame's outer edges
    core = np.array([t.core for t in tiles], dtype=np.float64)
    lo_r = np.where(core[:, 0] == 0, -np.inf, core[:, 0])
    hi_r = np.where(core[:, 1] == height, np.inf, core[:, 1])
    lo_c = np.where(core[:, 2] == 0, -np.inf, core[:, 2])
    hi_c = np.where(core[:, 3] == width, np.inf, core[:, 3])
    t = tile_index
    inside = (y >= lo_r[t]) & (y < hi_r[t]) & (x >= lo_c[t]) & (x < hi_c[t])
    near = (y >= lo_r[t] - band_px) & (y < hi_r[t] + band_px) & (x >= lo_c[t] - band_px) & (x < hi_c[t] + band_px)
    # candidates near seams: rows in a band, and rows of a core within band_px of an inner edge
    deep = (y >= lo_r[t] + band_px) & (y < hi_r[t] - band_px) & (x >= lo_c[t] + band_px) & (x < hi_c[t] - band_px)
    cand = np.flatnonzero(near & ~deep)
    if cand.size < 2:
        return near
    stride = height + 4 * band_px + 4.0  # frames far apart along rows: one tree, no cross-frame pairs
    pts = np.column_stack([frame[cand] * stride + y[cand], x[cand]])
    pairs = cKDTree(pts).query_pairs(radius_px, output_type="ndarray")
    pairs = cand[pairs] if len(pairs) else np.empty((0, 2), dtype=np.int64)
    pairs = pairs[t[pairs[:, 0]] != t[pairs[:, 1]]]
    # one molecule seen by several tiles: the estimate in its own tile's core wins, then the
    # lower tile index; a row is dropped when a partner ranks higher
    rank = inside.astype(np.int64) * (len(tiles) + 1) - t
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    keep = near.copy()
    keep[i[rank[j] > rank[i]]] = False
    return keep
