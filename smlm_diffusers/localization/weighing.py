"""Fitting, weighing and merging the candidate configurations of :mod:`.configurations`.

:func:`fit_configurations` fits every distinct configuration on the frame with the batched
maximum-likelihood engine and gives its Laplace evidence (the derivation is in
:mod:`.configurations`); :func:`merge_cluster` turns a cluster's weighted configurations into
molecules (probability, weighted position, sigma from the bounds and the spread between
configurations); :func:`split_seeds` proposes a molecule as a pair along its own light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from ..optics.psf import PSF, as_psf
from . import mle
from .mle import host
from .molecules import SPREAD_COLUMNS

if TYPE_CHECKING:  # the priors live with the proposals (no import cycle at run time)
    from .configurations import Priors


def split_seeds(electrons, fixed_full, frame, x, y, n, b, psf: PSF | float, read_var, half: int = 2):
    """Seeds of each molecule tried as a pair: +-h along the principal axis of its own light (the frame
    less the other molecules' model and the background, in a (2 half + 1)^2 window), ``h`` from the excess
    of its second moment over the PSF's (:meth:`~smlm_diffusers.optics.PSF.pixel_variance`; the refinement's
    formula, :func:`.mle.pair_offsets`). Pixels and electrons; ``psf`` the PSF (a float: the Gaussian's
    sigma, px); ``read_var`` the read-noise variance (e-^2), a float or each pixel's [H, W]."""
    psf = as_psf(psf)
    dev, dtype = electrons.device, electrons.dtype
    t = lambda v: torch.as_tensor(v, dtype=dtype, device=dev)  # noqa: E731
    size = 2 * half + 1
    r0 = torch.as_tensor(np.floor(y).astype(np.int64) - half, device=dev)
    c0 = torch.as_tensor(np.floor(x).astype(np.int64) - half, device=dev)
    fr = torch.as_tensor(frame, device=dev)
    data, mask = mle.gather(electrons, fr, r0, c0, size, size)
    light, _ = mle.gather(fixed_full, fr, r0, c0, size, size)
    lx, ly = t(x) - c0.to(dtype), t(y) - r0.to(dtype)
    if psf.separable:
        ex, ey = psf.profiles(lx, ly, (size, size))
        own = torch.einsum("gh,gw->hwg", ey * t(n)[:, None], ex)
    else:
        own = (t(n)[:, None, None] * psf.fractions(lx, ly, (size, size))).permute(1, 2, 0)
    noise = read_var if not isinstance(read_var, torch.Tensor) else mle.gather(read_var[None], torch.zeros_like(fr),
                                                                                r0, c0, size, size)[0]
    mine = ((data - noise - t(b)) - (light - own)).clamp_min(0.0) * mask
    u = torch.arange(size, dtype=dtype, device=dev)[None, :, None] + 0.5
    v = torch.arange(size, dtype=dtype, device=dev)[:, None, None] + 0.5
    mass = mine.sum((0, 1)).clamp_min(1e-9)
    mx, my = (mine * u).sum((0, 1)) / mass, (mine * v).sum((0, 1)) / mass
    du, dv = u - mx, v - my
    hx, hy = mle.pair_offsets(*((mine * q).sum((0, 1)) / mass for q in (du * du, dv * dv, du * dv)),
                              psf.pixel_variance())
    hx, hy = host(hx).astype(np.float64), host(hy).astype(np.float64)
    return (x + hx, y + hy), (x - hx, y - hy)


# -- fitting -------------------------------------------------------------------------------------------------
@dataclass
class _Fitted:
    """Per configuration: evidence and validity; per member row: position, photons, bounds (fit units)."""

    log_z: np.ndarray
    valid: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n: np.ndarray
    b: np.ndarray
    var_x: np.ndarray
    var_y: np.ndarray
    deviance: np.ndarray  # Poisson deviance per pixel in the member's 2 sigma window (about 1 for a good fit)


def fit_configurations(electrons, members: list[np.ndarray], cfg_cluster: np.ndarray, windows, seeds, frame_of,
                       fixed_full, base_light, priors: Priors, psf, read_var, *, n_iter=12, max_shift_px=1.5,
                       min_photons_e=50.0, coupling=0.0, min_separation_px=0.0) -> tuple[_Fitted, list[np.ndarray]]:
    """Fit every configuration on its cluster's window and compute its Laplace evidence (module docstring).

    ``members[c]`` are slot ids of configuration c, ``windows`` (r0, c0, rh, rw) per cluster, ``seeds``
    (x, y) of each slot in pixels, ``frame_of`` per cluster, ``fixed_full`` [F, H, W] the light of
    DeepSTORM's molecules (electrons) and ``base_light(cids, r0, c0, rh, rw)`` the part of it that the
    clusters' own DeepSTORM molecules give on their windows; ``psf`` the PSF (a float: the Gaussian's sigma,
    px); ``read_var`` the read-noise variance (e-^2), a float or each pixel's [H, W]. Returns the fits and, per
    configuration, its member rows (into the fit arrays, same order as ``members[c]``)."""
    dev, dtype, psf = electrons.device, electrons.dtype, as_psf(psf)
    sizes = np.array([len(m) for m in members])
    rows_of = []
    total = 0
    for m in members:
        rows_of.append(np.arange(total, total + max(len(m), 1)))
        total += max(len(m), 1)
    slot_rows = np.concatenate([m if len(m) else np.array([-1]) for m in members]).astype(np.int64)
    real_rows = slot_rows >= 0
    cl_rows = np.repeat(cfg_cluster, np.maximum(sizes, 1))
    r0, c0, rh, rw = windows
    sx = np.where(real_rows, seeds[0][np.maximum(slot_rows, 0)], c0[cl_rows] + 0.5 * rw[cl_rows])
    sy = np.where(real_rows, seeds[1][np.maximum(slot_rows, 0)], r0[cl_rows] + 0.5 * rh[cl_rows])
    t = lambda v: torch.as_tensor(v, dtype=dtype, device=dev)  # noqa: E731
    fr = torch.as_tensor(frame_of[cl_rows], device=dev)
    state = mle.State(t(sx), t(sy), t(np.zeros(total)), t(np.zeros(total)), t(sx), t(sy), fr,
                   torch.ones(total, dtype=torch.bool, device=dev), torch.zeros(total, dtype=torch.bool, device=dev))
    log_z, valid = np.zeros(len(members)), np.zeros(len(members), bool)
    var_x, var_y, deviance = np.full(total, np.nan), np.full(total, np.nan), np.full(total, np.nan)
    k_of = np.maximum(sizes, 1)
    for k in np.unique(k_of):
        cfgs = np.flatnonzero(k_of == k)
        cids = cfg_cluster[cfgs]
        idx = np.stack([rows_of[c] for c in cfgs], axis=1)  # [K, G]
        real = torch.as_tensor(real_rows[idx], device=dev)
        big_h, big_w = int(rh[cids].max()), int(rw[cids].max())
        rr0, cc0 = torch.as_tensor(r0[cids], device=dev), torch.as_tensor(c0[cids], device=dev)
        frame = torch.as_tensor(frame_of[cids], device=dev)
        data, mask = mle.gather(electrons, frame, rr0, cc0, big_h, big_w)
        own = (torch.arange(big_h, device=dev)[:, None, None] < torch.as_tensor(rh[cids], device=dev)) & (
            torch.arange(big_w, device=dev)[None, :, None] < torch.as_tensor(rw[cids], device=dev))
        mask = mask * own.to(dtype)
        g = mle.Group(cids, torch.as_tensor(idx, device=dev), real, frame, rr0, cc0, data * mask, mask)
        light, _ = mle.gather(fixed_full, frame, rr0, cc0, big_h, big_w)
        g.fixed = (light - base_light(cids, rr0, cc0, big_h, big_w)).clamp_min(0.0) + mle.window_var(read_var, g)
        n0, b0 = mle.start(g, state, psf, read_var)
        mle.store(g, state, state.x[g.idx] - g.c0, state.y[g.idx] - g.r0, n0 * real, b0)
        x, y, n, b = state.x[g.idx] - g.c0, state.y[g.idx] - g.r0, n0 * real, b0
        free = torch.cat([real, real, real, torch.ones_like(real[:1])], dim=0)
        x, y, n, b, nll, hess, mu = mle.fit_group(g, x, y, n, b, free, psf, n_iter)
        mle.store(g, state, x, y, n, b)
        half_dev = int(math.ceil(2.0 * psf.sigma_px))
        deviance[idx] = host(mle.assess(g, state, (hess, mu), psf, half_dev, False)["deviance"])
        logdet = _mean_field_logdet(hess, k)
        if coupling > 0:  # towards the full Gaussian volume (the Laplace evidence itself at coupling = 1)
            logdet = (1.0 - coupling) * logdet + coupling * _full_logdet(hess)
        occam = (priors.per_emitter(n.double()) * real).sum(0)
        lz = -nll.double() - 0.5 * logdet + occam
        inv = mle.crlb_diag(hess)
        var_x[idx] = host(inv[:k]).astype(np.float64)
        var_y[idx] = host(inv[k:2 * k]).astype(np.float64)
        gx, gy = x + g.c0, y + g.r0
        moved = ((gx - state.x0[g.idx]).abs() > max_shift_px) | ((gy - state.y0[g.idx]).abs() > max_shift_px)
        bad = (moved | (n <= min_photons_e) | ~torch.isfinite(n) | ~torch.isfinite(gx) | ~torch.isfinite(gy)) & real
        bad |= ~((inv[:k] > 0) & (inv[k:2 * k] > 0)) & real  # a degenerate fit (two members on one spot)
        if k > 1 and min_separation_px > 0:  # two members closer than this are one emitter in disguise
            d = torch.hypot(gx[:, None] - gx[None], gy[:, None] - gy[None])
            pair = real[:, None] & real[None] & ~torch.eye(k, dtype=torch.bool, device=dev)[..., None]
            bad |= (torch.where(pair, d, torch.full_like(d, torch.inf)).amin(1) < min_separation_px) & real
        ok = ~bad.any(0) & torch.isfinite(lz)
        log_z[cfgs], valid[cfgs] = host(lz), host(ok)
    fitted = _Fitted(log_z, valid, host(state.x).astype(np.float64), host(state.y).astype(np.float64),
                     host(state.n).astype(np.float64), host(state.b).astype(np.float64), var_x, var_y, deviance)
    return fitted, rows_of


def concat_fits(a: _Fitted, rows_a: list[np.ndarray], b: _Fitted, rows_b: list[np.ndarray]):
    """Two sets of fitted configurations as one (``b``'s member rows after ``a``'s)."""
    n = len(a.x)
    cat = {f: np.concatenate([getattr(a, f), getattr(b, f)]) for f in a.__dataclass_fields__}
    return _Fitted(**cat), list(rows_a) + [r + n for r in rows_b]


def dedupe_fits(cfg_cluster: np.ndarray, fits: _Fitted, rows_of, members, n_sources: np.ndarray,
                tol_px: float = 0.05) -> np.ndarray:
    """Configurations of a cluster whose fits converged to the same molecules (as many members, each within
    ``tol_px`` of one of the other's, one-to-one) are one configuration: all but the highest evidence lose
    their validity (in place), the kept one gets their sources. Returns the updated ``n_sources``; without
    this, two proposals that converge to one fit would weigh it twice."""
    n_sources = np.asarray(n_sources).copy()
    lz = np.where(fits.valid, fits.log_z, -np.inf)
    sizes = np.array([len(m) for m in members])
    cand = np.flatnonzero(np.isfinite(lz))
    cand = cand[np.lexsort((-lz[cand], sizes[cand], cfg_cluster[cand]))]  # by cluster and size, best first
    key = np.c_[cfg_cluster[cand], sizes[cand]]
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(1)]) if len(cand) else np.zeros(0, np.int64)
    for cfgs in np.split(cand, starts[1:]):
        if len(cfgs) < 2:
            continue
        kept: list[int] = []
        for c in cfgs:
            pts = np.c_[fits.x[rows_of[c]], fits.y[rows_of[c]]] if len(members[c]) else np.zeros((0, 2))
            for k in kept:
                ref = np.c_[fits.x[rows_of[k]], fits.y[rows_of[k]]] if len(members[k]) else np.zeros((0, 2))
                d = np.hypot(ref[:, None, 0] - pts[None, :, 0], ref[:, None, 1] - pts[None, :, 1])
                i, j = linear_sum_assignment(d)
                if len(pts) == 0 or d[i, j].max() <= tol_px:
                    fits.valid[c] = False
                    n_sources[k] += n_sources[c]
                    break
            else:
                kept.append(c)
    return n_sources


def _full_logdet(hess: torch.Tensor) -> torch.Tensor:
    """log det of the Fisher matrices [P, P, G] (unit-diagonal scaling first; padding adds 0)."""
    h = hess.permute(2, 0, 1).double()
    d = torch.diagonal(h, dim1=-2, dim2=-1).clamp_min(1e-300)
    return torch.linalg.slogdet(h / torch.sqrt(d.unsqueeze(-1) * d.unsqueeze(-2)))[1] + torch.log(d).sum(-1)


def _mean_field_logdet(hess: torch.Tensor, k: int) -> torch.Tensor:
    """log det of the Fisher matrices [P, P, G] with the coupling between emitters dropped: the sum over
    members of log det of their own (x, y, N) block, plus log I_bb. Padding members (unit diagonal) add 0."""
    h = hess.double()
    j = torch.arange(k, device=h.device)
    trip = torch.stack([j, k + j, 2 * k + j], dim=1)  # [K, 3] parameter indices of each member
    blocks = h[trip[:, :, None], trip[:, None, :]]  # [K, 3, 3, G]
    blocks = blocks.permute(0, 3, 1, 2)  # [K, G, 3, 3]
    d = torch.diagonal(blocks, dim1=-2, dim2=-1).clamp_min(1e-300)
    scaled = blocks / torch.sqrt(d.unsqueeze(-1) * d.unsqueeze(-2))
    logdet = torch.linalg.slogdet(scaled)[1] + torch.log(d).sum(-1)  # [K, G]
    return logdet.sum(0) + torch.log(h[-1, -1].clamp_min(1e-300))


# -- molecules -----------------------------------------------------------------------------------------------
def merge_cluster(weights, xs, ys, var_x, var_y, ns, bs, n_src, radius_px, shown: float | None = 0.5):
    """Molecules of one cluster from its weighted configurations (lists of per-member arrays, px): linked
    one-to-one per configuration within ``radius_px``, in descending weight. Returns rows of (probability,
    x, y, E[var_x] + Var[x], E[var_y] + Var[y], E[var_x], E[var_y], photons, background, n_sources).

    A molecule below ``shown`` (the probability from which tables are read, renders drawn and matches
    scored) is an unresolved neighbour of the nearest shown molecule within ``radius_px``: with its
    probability p that molecule stands for two emitters, so its variance gains p (offset)^2 per axis (the
    evidence-weighted spread of an unresolved pair; None: no such term)."""
    mols: list[list] = []  # each: list of (w, x, y, vx, vy, n, b, n_src)
    ref = np.zeros((0, 2))
    for c in np.argsort(-np.asarray(weights), kind="stable"):
        if len(xs[c]) == 0:
            continue
        pts = np.c_[xs[c], ys[c]]
        assign = np.full(len(pts), -1)
        if len(ref):
            d = np.hypot(ref[:, None, 0] - pts[None, :, 0], ref[:, None, 1] - pts[None, :, 1])
            r, j = linear_sum_assignment(np.where(d <= radius_px, d, 1e9))
            ok = d[r, j] <= radius_px
            assign[j[ok]] = r[ok]
        for j in range(len(pts)):
            if assign[j] < 0:
                mols.append([])
                ref = np.vstack([ref, pts[j]])
                assign[j] = len(mols) - 1
            mols[assign[j]].append((weights[c], xs[c][j], ys[c][j], var_x[c][j], var_y[c][j], ns[c][j], bs[c],
                                    n_src[c]))
    rows = []
    for m in mols:
        a = np.asarray(m, dtype=np.float64)
        w = a[:, 0]
        p = w.sum()
        if p <= 0:
            continue
        mx, my = (w * a[:, 1]).sum() / p, (w * a[:, 2]).sum() / p
        ex, ey = (w * a[:, 3]).sum() / p, (w * a[:, 4]).sum() / p
        bx, by = (w * (a[:, 1] - mx) ** 2).sum() / p, (w * (a[:, 2] - my) ** 2).sum() / p
        rows.append([p, mx, my, ex + bx, ey + by, ex, ey, (w * a[:, 5]).sum() / p, (w * a[:, 6]).sum() / p,
                     a[:, 7].sum()])
    if shown is not None and len(rows) > 1:
        t = np.asarray(rows)
        big, small = np.flatnonzero(t[:, 0] >= shown), np.flatnonzero(t[:, 0] < shown)
        if len(big) and len(small):
            d = np.hypot(t[big, None, 1] - t[None, small, 1], t[big, None, 2] - t[None, small, 2])
            host = big[np.argmin(d, axis=0)]
            for j, i in zip(small[d.min(0) <= radius_px], host[d.min(0) <= radius_px]):
                rows[i][3] += t[j, 0] * (t[j, 1] - t[i, 1]) ** 2
                rows[i][4] += t[j, 0] * (t[j, 2] - t[i, 2]) ** 2
    return [tuple(r) for r in rows]


# -- the readout ---------------------------------------------------------------------------------------------


def _merge_all(configs, fits: _Fitted, rows_of, members, radius_px, frame_of, shown: float | None = 0.5):
    """Weights per cluster (normalised evidences of its valid configurations) and the merged molecules
    (:func:`merge_cluster`)."""
    cl = configs["cluster"].to_numpy()
    lz = np.where(fits.valid, fits.log_z, -np.inf)
    out, failed = [], []
    for c in np.unique(cl):
        cfgs = np.flatnonzero(cl == c)
        z = lz[cfgs]
        if not np.isfinite(z).any():
            failed.append(c)  # no configuration fits: DeepSTORM's refined molecules stay
            continue
        w = np.exp(z - z.max())
        w /= w.sum()
        rows = [rows_of[i] if len(members[i]) else np.zeros(0, np.int64) for i in cfgs]
        mols = merge_cluster(w, [fits.x[r] for r in rows], [fits.y[r] for r in rows], [fits.var_x[r] for r in rows],
                             [fits.var_y[r] for r in rows], [fits.n[r] for r in rows],
                             [fits.b[r[0]] if len(r) else np.nan for r in rows],
                             configs["n_sources"].to_numpy()[cfgs], radius_px, shown)
        out += [(frame_of[c], len(mols)) + m for m in mols]
    return out, np.asarray(failed, np.int64)


MERGED = ["frame", "cluster_size", "probability", "x", "y", "var_x", "var_y", "bound_var_x", "bound_var_y",
          "n_e", "b_e", "n_sources"]


def _finish(kept: pd.DataFrame, merged, columns, a=1.0, qe=1.0, floor=0.1, n_samples=0) -> pd.DataFrame:
    """Unanimous clusters' rows plus the merged molecules above ``floor``, in ``columns`` + the readout's."""
    cols = list(columns) + [c for c in ["probability", "n_samples"] + SPREAD_COLUMNS if c not in columns]
    if not merged:
        return kept.reindex(columns=cols).sort_values(["frame", "y_nm", "x_nm"], kind="stable").reset_index(drop=True)
    m = pd.DataFrame(merged, columns=MERGED)
    m = m[m["probability"] >= floor]
    new = pd.DataFrame({
        "frame": m["frame"].to_numpy(np.int64), "x_nm": m["x"] * a, "y_nm": m["y"] * a,
        "sigma_x_nm": np.sqrt(m["var_x"]) * a, "sigma_y_nm": np.sqrt(m["var_y"]) * a,
        "probability": m["probability"].clip(upper=1.0),
        # sources proposing it, less DeepSTORM's (counted in n_sources when it did)
        "n_samples": np.minimum(m["n_sources"].to_numpy(np.int64), int(n_samples)),
        "photons": m["n_e"] / qe, "background": m["b_e"] / qe,
        "crlb_x_nm": np.sqrt(m["bound_var_x"]) * a, "crlb_y_nm": np.sqrt(m["bound_var_y"]) * a,
        "bound_x_nm": np.sqrt(m["bound_var_x"]) * a, "bound_y_nm": np.sqrt(m["bound_var_y"]) * a,
        "spread_x_nm": np.sqrt(np.maximum(m["var_x"] - m["bound_var_x"], 0.0)) * a,
        "spread_y_nm": np.sqrt(np.maximum(m["var_y"] - m["bound_var_y"], 0.0)) * a,
        "refine_ok": True, "fit_flag": "ok", "split": False, "cluster_size": m["cluster_size"].to_numpy(np.int64),
    })
    both = pd.concat([kept.reindex(columns=cols), new.reindex(columns=cols)], ignore_index=True)
    return both.sort_values(["frame", "y_nm", "x_nm"], kind="stable").reset_index(drop=True)
