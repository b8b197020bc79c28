"""Emitter samplers: where fluorophores are and how bright, for a batch of frames.

All positions are in camera pixels with the edge convention of :mod:`.psf` (the field's
outer top-left corner is (0, 0), x is the column). Each sampler returns :class:`Emitters`,
padded to the largest emitter count in the batch; padding rows have ``mask == False`` and
zero photons so they render as nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Range = float | tuple[float, float]


@dataclass
class Emitters:
    """A padded batch of emitters, tensors of shape [B, E]."""

    x_px: torch.Tensor
    y_px: torch.Tensor
    photons: torch.Tensor
    mask: torch.Tensor
    z_nm: torch.Tensor | None = None  # axial positions of a 3D simulation (nm), else None

    @property
    def batch_size(self) -> int:
        return self.x_px.shape[0]

    def counts(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def inside(self, shape: tuple[int, int]) -> torch.Tensor:
        """Mask of real emitters whose centre lies in the field ``[0, W) x [0, H)``."""
        h, w = shape
        return self.mask & (self.x_px >= 0) & (self.x_px < w) & (self.y_px >= 0) & (self.y_px < h)


def _uniform(lo_hi: Range, size, generator, device) -> torch.Tensor:
    """Draw from U(lo, hi); a plain number gives a constant."""
    if isinstance(lo_hi, (tuple, list)):
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        if hi < lo:
            raise ValueError(f"range must be (low, high) with low <= high, got {lo_hi}")
        return lo + (hi - lo) * torch.rand(size, generator=generator, device=device)
    return torch.full(size, float(lo_hi), device=device)


def _pad(counts: torch.Tensor, device):
    """Mask [B, E_max] with the first ``counts[b]`` entries of row b set."""
    e_max = max(int(counts.max()), 1) if counts.numel() else 1
    mask = torch.arange(e_max, device=device).unsqueeze(0) < counts.unsqueeze(1)
    return e_max, mask


def _finish(x, y, mask, photons: Range, generator, device) -> Emitters:
    ph = _uniform(photons, x.shape, generator, device) * mask
    x = torch.where(mask, x, torch.zeros_like(x))
    y = torch.where(mask, y, torch.zeros_like(y))
    return Emitters(x_px=x, y_px=y, photons=ph, mask=mask)


def density_to_mean_count(density_per_um2, shape_px, pixel_size_nm: float, margin_px: float = 0.0):
    """Expected emitter count in a field of ``shape_px`` (plus a margin) at a density in 1/um^2."""
    h, w = shape_px
    area_um2 = (h + 2 * margin_px) * (w + 2 * margin_px) * (pixel_size_nm / 1000.0) ** 2
    return density_per_um2 * area_um2


def sample_uniform(
    batch: int,
    shape: tuple[int, int],
    density: Range,
    pixel_size_nm: float,
    photons: Range = 2000.0,
    margin_px: float = 0.0,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Emitters:
    """Emitters uniformly over the field (plus ``margin_px`` on each side).

    The count per frame is Poisson with mean ``density * area``; ``density`` (emitters per
    square micrometre) may be a ``(low, high)`` range drawn uniformly per frame.
    """
    h, w = shape
    dens = _uniform(density, (batch,), generator, device)
    mean = density_to_mean_count(dens, shape, pixel_size_nm, margin_px)
    counts = torch.poisson(mean, generator=generator).long()
    e_max, mask = _pad(counts, device)
    x = -margin_px + (w + 2 * margin_px) * torch.rand((batch, e_max), generator=generator, device=device)
    y = -margin_px + (h + 2 * margin_px) * torch.rand((batch, e_max), generator=generator, device=device)
    return _finish(x, y, mask, photons, generator, device)


def sample_disc(
    batch: int,
    shape: tuple[int, int],
    n_emitters: int | tuple[int, int] | torch.Tensor,
    photons: Range = 2000.0,
    radius_px: float | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Emitters:
    """Emitters uniform in a disc centred on the field (the paper's training distribution).

    ``n_emitters`` is a count, an inclusive ``(low, high)`` range drawn per frame, or a
    tensor [B] of per-frame counts;
    ``radius_px`` defaults to half the shorter side.
    """
    h, w = shape
    r_max = min(h, w) / 2.0 if radius_px is None else float(radius_px)
    if isinstance(n_emitters, torch.Tensor):
        counts = n_emitters.long().to(device)
    elif isinstance(n_emitters, (tuple, list)):
        counts = torch.randint(int(n_emitters[0]), int(n_emitters[1]) + 1, (batch,), generator=generator, device=device)
    else:
        counts = torch.full((batch,), int(n_emitters), device=device)
    e_max, mask = _pad(counts, device)
    r = r_max * torch.sqrt(torch.rand((batch, e_max), generator=generator, device=device))
    theta = 2 * math.pi * torch.rand((batch, e_max), generator=generator, device=device)
    x = w / 2.0 + r * torch.cos(theta)
    y = h / 2.0 + r * torch.sin(theta)
    return _finish(x, y, mask, photons, generator, device)


def sample_grid(
    batch: int,
    shape: tuple[int, int],
    spacing_px: float = 16.0,
    jitter_px: float = 3.0,
    photons: Range = 2000.0,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Emitters:
    """Isolated emitters: one per ``spacing_px`` grid cell, uniform within +-``jitter_px`` of its centre.

    Neighbours stay at least ``spacing_px - 2 jitter_px`` pixels apart (10 PSF sigmas by
    default), which makes RMSE against the single-emitter CRLB meaningful.
    """
    if spacing_px - 2 * jitter_px <= 0:
        raise ValueError("spacing_px must exceed 2 * jitter_px")
    h, w = shape
    cy = (torch.arange(int(h // spacing_px), device=device) + 0.5) * spacing_px
    cx = (torch.arange(int(w // spacing_px), device=device) + 0.5) * spacing_px
    gy, gx = torch.meshgrid(cy, cx, indexing="ij")
    e = gx.numel()
    jitter = (2 * torch.rand((2, batch, e), generator=generator, device=device) - 1) * jitter_px
    mask = torch.ones((batch, e), dtype=torch.bool, device=device)
    return _finish(gx.reshape(1, -1) + jitter[0], gy.reshape(1, -1) + jitter[1], mask, photons, generator, device)


def filament_paths(
    shape: tuple[int, int],
    n_filaments: int = 6,
    persistence_px: float = 30.0,
    step_px: float = 0.25,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Smooth random curves (worm-like chains) crossing the field, like microtubules.

    Each filament starts on a random point and heading, and its heading diffuses with
    variance ``step / persistence`` per step. It grows both ways until it leaves the field
    (with a 2-pixel margin). Returns a list of [N, 2] tensors of (x, y) vertices.
    """
    h, w = shape
    n_steps = int(4 * (h + w) / step_px)
    paths = []
    for _ in range(n_filaments):
        start = torch.rand(2, generator=generator) * torch.tensor([w, h], dtype=torch.float32)
        heading = 2 * math.pi * float(torch.rand(1, generator=generator))
        halves = []
        for direction in (1.0, -1.0):
            dtheta = torch.randn(n_steps, generator=generator) * math.sqrt(step_px / persistence_px)
            theta = heading + (0.0 if direction > 0 else math.pi) + torch.cumsum(dtheta, 0)
            steps = step_px * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
            pts = start + torch.cumsum(steps, 0)
            outside = (pts[:, 0] < -2) | (pts[:, 0] > w + 2) | (pts[:, 1] < -2) | (pts[:, 1] > h + 2)
            stop = int(torch.nonzero(outside)[0]) if outside.any() else n_steps
            halves.append(pts[:stop])
        paths.append(torch.cat([halves[1].flip(0), start.unsqueeze(0), halves[0]], dim=0))
    return paths


def sample_on_filaments(
    batch: int,
    shape: tuple[int, int],
    density: Range,
    pixel_size_nm: float,
    paths: list[torch.Tensor],
    photons: Range = 2000.0,
    width_nm: float = 25.0,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Emitters:
    """Emitters drawn uniformly along given filaments, with Gaussian lateral spread.

    The count per frame is Poisson with mean ``density * field area`` (so densities are
    comparable with :func:`sample_uniform`); ``width_nm`` is the standard deviation of the
    label's distance from the filament axis (about 25 nm for antibody-labelled microtubules).
    """
    seg_start = torch.cat([p[:-1] for p in paths], dim=0)
    seg_end = torch.cat([p[1:] for p in paths], dim=0)
    seg_len = (seg_end - seg_start).norm(dim=1)
    dens = _uniform(density, (batch,), generator, "cpu")
    counts = torch.poisson(density_to_mean_count(dens, shape, pixel_size_nm), generator=generator).long()
    e_max, mask = _pad(counts, "cpu")
    seg = torch.multinomial(seg_len, batch * e_max, replacement=True, generator=generator).view(batch, e_max)
    t = torch.rand((batch, e_max), generator=generator)
    a, b = seg_start[seg], seg_end[seg]
    pts = a + t.unsqueeze(-1) * (b - a)
    pts = pts + torch.randn((batch, e_max, 2), generator=generator) * (width_nm / pixel_size_nm)
    x, y = pts[..., 0].to(device), pts[..., 1].to(device)
    return _finish(x, y, mask.to(device), photons, generator if str(device) == "cpu" else None, device)
