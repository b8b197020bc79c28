"""Where the physics is unsure: close pairs, faint neighbours and triplets added to the simulation.

Uniform emitters put few molecules closer than two PSF sigmas to each other, so a DDPM trained
on them learns to return DeepSTORM's estimate (issue 32). :class:`HardClusters` (the ``hard:``
block of a config's ``data:``) adds, on top of the uniform density of a share of the patches,
clusters of two or three emitters: a pair at a separation drawn in PSF sigmas, the second
partner possibly faint (its photons a log-uniform ratio of the first's), sometimes a third
emitter at a drawn separation from one of the two. They are ordinary :class:`Emitters`, imaged
by the same simulator as every other emitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..simulation.emitters import Emitters

SLOTS = 3  # emitters per cluster: the pair (slots 0, 1) and the possible third (slot 2)


@dataclass
class HardClusters:
    """Clusters of 2-3 emitters added to the uniform ones (``fraction`` 0: none, the default).

    fraction : share of patches that get clusters.
    clusters_per_patch : clusters in such a patch, a count or an inclusive ``[low, high]`` range.
    separation_sigma : ``[low, high]`` separation of the partners, in PSF sigmas, drawn uniformly.
    faint_ratio : ``[low, high]`` photon ratio of a faint partner to its bright one, drawn log-uniformly.
    faint_share : share of pairs whose second partner is faint (the others draw photons like any emitter).
    triplet_share : share of clusters with a third emitter, at a drawn separation from one of the pair.
    edge_px : cluster centres stay this far inside the patch (camera pixels).
    """

    fraction: float = 0.0
    clusters_per_patch: int | tuple[int, int] = 3
    separation_sigma: tuple[float, float] = (0.5, 2.5)
    faint_ratio: tuple[float, float] = (0.1, 0.5)
    faint_share: float = 0.5
    triplet_share: float = 0.3
    edge_px: float = 1.0

    def __post_init__(self):
        lo, hi = self.separation_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"separation_sigma must be 0 < low <= high, got {self.separation_sigma}")
        lo, hi = self.faint_ratio
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"faint_ratio must be 0 < low <= high <= 1, got {self.faint_ratio}")
        for name in ("fraction", "faint_share", "triplet_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"hard.{name} must be in [0, 1], got {getattr(self, name)}")


def sample_clusters(batch: int, shape: tuple[int, int], hard: HardClusters, sigma_px: float,
                    photons: float | tuple[float, float], generator: torch.Generator) -> Emitters:
    """The cluster emitters of ``batch`` patches, [B, C * 3]: cluster c holds slots 3c, 3c + 1, 3c + 2.

    Slot 0 sits at the cluster centre minus half the separation, slot 1 at plus half (a random
    direction), so their distance is ``separation * sigma_px`` exactly; slot 2 (masked off unless
    the cluster is a triplet) is a separation away from slot 0 or 1 at a random angle. Photons:
    slot 0 uniform in ``photons``; a faint slot 1 is slot 0 times the ratio, slot 0 then drawn from
    the part of the range where that stays within it, so the drawn ratio is exact; otherwise
    uniform. Patches outside ``hard.fraction`` hold no cluster (mask False).
    """
    h, w = shape
    cpp = hard.clusters_per_patch
    lo_n, hi_n = (int(cpp[0]), int(cpp[1])) if isinstance(cpp, (tuple, list)) else (int(cpp), int(cpp))
    c_max = max(hi_n, 1)
    size = (batch, c_max)

    def uniform(lo, hi, sz=size):
        return lo + (hi - lo) * torch.rand(sz, generator=generator)

    has = torch.rand(batch, generator=generator) < hard.fraction
    n = torch.randint(lo_n, hi_n + 1, (batch,), generator=generator)
    live = has.unsqueeze(1) & (torch.arange(c_max).unsqueeze(0) < n.unsqueeze(1))
    e = hard.edge_px
    cx, cy = uniform(e, w - e), uniform(e, h - e)
    sep = uniform(*hard.separation_sigma) * sigma_px
    angle = uniform(0.0, 2 * math.pi)
    dx, dy = 0.5 * sep * torch.cos(angle), 0.5 * sep * torch.sin(angle)
    ph_lo, ph_hi = (float(photons[0]), float(photons[1])) if isinstance(photons, (tuple, list)) \
        else (float(photons),) * 2
    log_lo, log_hi = (math.log(v) for v in hard.faint_ratio)
    ratio = torch.exp(uniform(log_lo, log_hi))
    faint = torch.rand(size, generator=generator) < hard.faint_share
    bright_lo = torch.where(faint, torch.clamp(ph_lo / ratio, max=ph_hi), torch.full(size, ph_lo))
    p0 = bright_lo + (ph_hi - bright_lo) * torch.rand(size, generator=generator)
    p1 = torch.where(faint, p0 * ratio, uniform(ph_lo, ph_hi))
    third = live & (torch.rand(size, generator=generator) < hard.triplet_share)
    sep3 = uniform(*hard.separation_sigma) * sigma_px
    angle3 = uniform(0.0, 2 * math.pi)
    from_1 = torch.rand(size, generator=generator) < 0.5
    ax, ay = torch.where(from_1, cx + dx, cx - dx), torch.where(from_1, cy + dy, cy - dy)
    p2 = uniform(ph_lo, ph_hi)
    x = torch.stack([cx - dx, cx + dx, ax + sep3 * torch.cos(angle3)], dim=2).reshape(batch, -1)
    y = torch.stack([cy - dy, cy + dy, ay + sep3 * torch.sin(angle3)], dim=2).reshape(batch, -1)
    mask = torch.stack([live, live, third], dim=2).reshape(batch, -1)
    ph = torch.stack([p0, p1, p2], dim=2).reshape(batch, -1) * mask
    return Emitters(x_px=torch.where(mask, x, 0.0), y_px=torch.where(mask, y, 0.0), photons=ph, mask=mask)


def merge_emitters(a: Emitters, b: Emitters) -> Emitters:
    """The emitters of ``a`` and ``b`` in one padded batch (``b``'s after ``a``'s)."""
    if (a.z_nm is None) != (b.z_nm is None):
        raise ValueError("merge 2D with 2D and 3D with 3D emitters")
    z = None if a.z_nm is None else torch.cat([a.z_nm, b.z_nm], dim=1)
    return Emitters(x_px=torch.cat([a.x_px, b.x_px], 1), y_px=torch.cat([a.y_px, b.y_px], 1),
                    photons=torch.cat([a.photons, b.photons], 1), mask=torch.cat([a.mask, b.mask], 1), z_nm=z)
