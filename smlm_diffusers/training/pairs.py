"""DDPM training pairs: (true KDE, DeepSTORM KDE, normalized frame) patches, pooled.

Each pair is simulated on the fly and passed through the frozen DeepSTORM with the same
calls the pipeline makes (:meth:`DeepSTORM.predict` and :meth:`DeepSTORM.normalize`, both
on the whole simulated patch, as the pipeline does on the whole frame). DeepSTORM costs
about as much as a UNet step, so pairs are kept in a pool that is partly renewed every step
(``refresh`` new patches replace the oldest): with a pool of a few thousand patches and a
few new ones a step, a run of 30,000 steps of batch 8 sees each patch a handful of times.

Training crops may reach up to ``edge_px`` camera pixels past the simulated patch, filled
with the pad values the pipeline uses outside the frame (empty KDE, frame median), so the
UNet learns the frame edges it meets at inference. Crops are drawn on the camera grid, so
a crop is a whole number of camera pixels in either layout. ``augment`` applies one of the
8 symmetries of the square to each crop (the physics and the pixel grid have them).

Mining (``mine_share``): the pool keeps, per patch, where DeepSTORM disagrees with the truth
most (:func:`disagreement`: the L1 of ``y - y_hat`` over a window of camera pixels, its maximum
and where it is). That share of each batch is drawn with probability proportional to the
score and cropped so that the crop holds the place of largest disagreement; the rest is drawn
uniformly and cropped at random, as without mining.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .data import SimulationRanges, make_training_batch


def simulate_pairs(ranges: SimulationRanges, kde_net, n: int, generator: torch.Generator):
    """``n`` simulated patches -> (y, y_hat, frame_norm): true KDE and DeepSTORM KDE
    [n, 1, fP, fP] in [-1, 1] units, and DeepSTORM's normalized frame [n, 1, P, P]."""
    batch = make_training_batch(ranges, n, generator)  # the DeepSTORM training data, drawn the same way
    frames, y = batch.frames_adu, batch.kde_unit
    device = kde_net.device
    y_hat = kde_net.predict(frames, batch_size=max(n, 1)).to(device)
    frame_norm = kde_net.normalize(frames.to(device))
    return y.to(device).float(), y_hat.float(), frame_norm.float()


def disagreement(y: torch.Tensor, y_hat: torch.Tensor, factor: int, window_px: int = 3):
    """Where DeepSTORM disagrees with the truth most, per patch.

    Returns ``(score [n], peak [n, 2])``: the largest L1 of ``y - y_hat`` (summed over channels
    and KDE pixels) in a ``window_px`` square of camera pixels, and that window's centre
    (row, column) in camera pixels of the patch.
    """
    l1 = (y - y_hat).abs().sum(dim=1, keepdim=True)
    per_px = F.avg_pool2d(l1, factor) * factor**2
    local = F.avg_pool2d(per_px, window_px, stride=1, padding=window_px // 2, count_include_pad=True) * window_px**2
    arg = (local + per_px).flatten(1).argmax(dim=1)  # the window's own pixel breaks ties between windows
    score = local.flatten(1).gather(1, arg.unsqueeze(1)).squeeze(1)
    w = local.shape[-1]
    return score.cpu(), torch.stack([arg // w, arg % w], dim=1).cpu()


class PairPool:
    """A renewing pool of training pairs (module docstring).

    Parameters
    ----------
    ranges : SimulationRanges
        What the simulator draws (``patch_size`` camera pixels per patch).
    kde_net : DeepSTORM
        The frozen estimator the DDPM is conditioned on.
    size : int
        Patches held; 0 draws a fresh batch every step (no pool).
    refresh : int
        Patches replaced per :meth:`batch` call.
    generator : torch.Generator
        Seeds everything the pool draws.
    mine_share : float
        Share of each batch drawn in proportion to the disagreement score and cropped around
        its peak (0: uniform, as without mining). Needs a pool (``size > 0``).
    mine_window_px : int
        Side of the window (camera pixels) the disagreement is summed over.
    """

    def __init__(self, ranges: SimulationRanges, kde_net, size: int, refresh: int, generator: torch.Generator,
                 fill_chunk: int = 256, mine_share: float = 0.0, mine_window_px: int = 3):
        if size < 0 or refresh < 0:
            raise ValueError(f"pool size and refresh must be >= 0, got {size}, {refresh}")
        if not 0 <= mine_share <= 1 or (mine_share and not size):
            raise ValueError(f"mine_share must be in [0, 1] and needs a pool (pool_size > 0), got {mine_share}")
        self.ranges, self.kde_net, self.size, self.refresh, self.gen = ranges, kde_net, size, refresh, generator
        self.mine_share, self.mine_window_px = mine_share, mine_window_px
        self._next = 0
        self.y = self.y_hat = self.frame = self.score = self.peak = None
        if size:
            parts = [simulate_pairs(ranges, kde_net, min(fill_chunk, size - s), generator)
                     for s in range(0, size, fill_chunk)]
            self.y, self.y_hat, self.frame = (torch.cat(p) for p in zip(*parts))
            self.score, self.peak = disagreement(self.y, self.y_hat, ranges.upsampling, mine_window_px)

    def _renew(self):
        if not self.refresh:
            return
        y, y_hat, frame = simulate_pairs(self.ranges, self.kde_net, self.refresh, self.gen)
        idx = (self._next + torch.arange(self.refresh)) % self.size
        self.y[idx], self.y_hat[idx], self.frame[idx] = y, y_hat, frame
        self.score[idx], self.peak[idx] = disagreement(y, y_hat, self.ranges.upsampling, self.mine_window_px)
        self._next = int(idx[-1] + 1) % self.size

    def mined(self, n: int) -> torch.Tensor:
        """``n`` pool indices drawn with probability proportional to the disagreement score."""
        weights = self.score.clamp(min=0).double()
        if float(weights.sum()) <= 0:
            return torch.randint(0, self.size, (n,), generator=self.gen)
        return torch.multinomial(weights, n, replacement=True, generator=self.gen)

    def batch(self, batch_size: int, crop_px: int, edge_px: int = 0, augment: bool = False):
        """A batch of crops of ``crop_px`` camera pixels: (y, y_hat, frame_norm) as in
        :func:`simulate_pairs`, renewing ``refresh`` patches of the pool first."""
        if not self.size:
            y, y_hat, frame = simulate_pairs(self.ranges, self.kde_net, batch_size, self.gen)
            return crop_pairs(y, y_hat, frame, crop_px, self.ranges.upsampling, edge_px, self.gen, augment)
        self._renew()
        n_mined = int(round(self.mine_share * batch_size))
        pick = torch.randint(0, self.size, (batch_size - n_mined,), generator=self.gen)
        offsets = None
        if n_mined:
            mined = self.mined(n_mined)
            p = self.frame.shape[-1]
            random = torch.randint(0, p + 2 * edge_px - crop_px + 1, (len(pick), 2), generator=self.gen)
            held = offsets_holding(self.peak[mined], crop_px, p, edge_px, self.mine_window_px // 2, self.gen)
            pick, offsets = torch.cat([pick, mined]), torch.cat([random, held])
        y, y_hat, frame = self.y[pick], self.y_hat[pick], self.frame[pick]
        return crop_pairs(y, y_hat, frame, crop_px, self.ranges.upsampling, edge_px, self.gen, augment, offsets)


def offsets_holding(peak: torch.Tensor, crop_px: int, p: int, edge_px: int, margin_px: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Crop offsets [n, 2] (in :func:`crop_pairs`' padded coordinates) drawn uniformly among those whose
    crop holds camera pixel ``peak`` [n, 2] of a ``p``-pixel patch at least ``margin_px`` from its border."""
    hi_all = p + 2 * edge_px - crop_px
    at = peak + edge_px
    m = min(margin_px, (crop_px - 1) // 2)
    lo = (at - (crop_px - 1 - m)).clamp(0, hi_all)
    hi = (at - m).clamp(0, hi_all)
    hi = torch.maximum(hi, lo)
    u = torch.rand(peak.shape, generator=generator)
    return (lo + (u * (hi - lo + 1)).long().clamp(max=(hi - lo))).long()


def crop_pairs(y, y_hat, frame, crop_px: int, factor: int, edge_px: int, generator: torch.Generator,
               augment: bool = False, offsets: torch.Tensor | None = None):
    """Random crops (one offset per item) of ``crop_px`` camera pixels, reaching at most
    ``edge_px`` past the patch, padded as the pipeline pads outside the frame. ``offsets`` [n, 2]
    (row, column of the crop's corner in the patch padded by ``edge_px``) replaces the random ones."""
    n, p = frame.shape[0], frame.shape[-1]
    if crop_px > p + 2 * edge_px:
        raise ValueError(f"crop of {crop_px} px does not fit a {p} px patch with {edge_px} px of edge")
    e = edge_px
    y = F.pad(y, (factor * e,) * 4, value=-1.0)
    y_hat = F.pad(y_hat, (factor * e,) * 4, value=-1.0)
    frame = F.pad(frame, (e,) * 4, value=0.0)
    hi = p + 2 * e - crop_px
    offs = torch.randint(0, hi + 1, (n, 2), generator=generator) if offsets is None else offsets
    sym = torch.randint(0, 8, (n,), generator=generator) if augment else torch.zeros(n, dtype=torch.long)
    out = ([], [], [])
    for k in range(n):
        i, j = int(offs[k, 0]), int(offs[k, 1])
        fi, fj, fc = factor * i, factor * j, factor * crop_px
        items = (y[k, :, fi:fi + fc, fj:fj + fc], y_hat[k, :, fi:fi + fc, fj:fj + fc],
                 frame[k, :, i:i + crop_px, j:j + crop_px])
        for dst, t in zip(out, items):
            dst.append(_dihedral(t, int(sym[k])))
    return tuple(torch.stack(o) for o in out)


def _dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 symmetries of the square on the last two axes."""
    if k >= 4:
        t = t.flip(-1)
    return torch.rot90(t, k % 4, dims=(-2, -1))
