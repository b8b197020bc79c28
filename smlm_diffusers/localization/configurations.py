"""Configurations of molecules proposed by the DDPM samples and weighed by the frame's likelihood.

Each posterior KDE sample, localized on its own, is a guess at *which* molecules a frame holds; DeepSTORM's
refined molecules are one more. Per cluster of nearby molecules the candidate configurations are the sets
of molecules each source puts there (deduplicated; a sample that puts nothing there proposes the empty
set), each doubtful DeepSTORM molecule tried as a pair (from several seed separations), and then, beside
the cluster's best configuration, each sample's molecule on its own: added to it (a *birth*) or, near one
of its members, in that member's place (a *move*), so that one good proposal wins without the rest of its
sample's configuration. Every distinct configuration is fitted on the frame by the batched Poisson
maximum-likelihood engine of :mod:`.refine` (positions, photons, one local background; the light of the
other clusters held at DeepSTORM's fit), all configurations of a cluster on the same pixels, and weighed by
its Laplace evidence; proposals whose fits converge to the same molecules count once.

Evidence. With ``n`` emitters, parameters ``theta`` = (x, y, N) of each and the background b, the prior is a
Poisson number of emitters of mean ``rho A`` (``rho`` emitters per pixel^2, ``A`` the field), positions
uniform over the field, photons from ``p_N`` and b flat (the same in every configuration of a cluster, so
it cancels). The emitters are exchangeable: the posterior has ``n!`` equivalent modes (relabellings), and
Laplace's approximation around one of them gives

    log Z = log L(theta^) + log Poisson(n; rho A) + log n! - n log A + sum_m log p_N(N^_m)
            + (d / 2) log 2 pi - 1/2 log det I(theta^)

with ``d = 3 n + 1`` and ``I`` the Fisher matrix at the fit (eq. 14; it replaces the observed Hessian, as
in the fit itself). ``log Poisson + log n! - n log A = n log rho - rho A``: the field's area cancels and
each emitter costs

    log rho + (3 / 2) log 2 pi + log p_N(N^_m) - (its share of) 1/2 log det I,

an Occam factor (prior volume against posterior volume) that a configuration's better fit must pay for.
``rho`` is the call's own density (DeepSTORM's molecules per pixel^2 over all frames, at least one per
frame) and ``p_N`` a log-normal fitted to the photons of DeepSTORM's refined molecules (its width at least
``photon_prior_width``), so the prior follows the data rather than a training range. Weights are the
normalised evidences of a cluster's configurations (a configuration whose fit runs away, a member more
than ``max_shift_px`` from its seed or with ``min_photons`` or fewer, gets none).

``I`` is the whole Fisher matrix (``coupling`` 1): on four simulated pairs 0.8 px apart (2000 photons each,
background 20) importance sampling of the pair-against-single log-odds agreed with it to 0.6-1.4, where each
emitter's own block alone (``coupling`` 0, the earlier choice) understated the pair by 2.3-3.6. Where two
members are closer than half a PSF sigma (``min_separation_px``) the likelihood is flat in their
separation and the approximation fails (it rewards two emitters on one spot): such a configuration gets no
weight, and the single it cannot be told from stands for it.

Molecules are the union of the configurations' members, linked within ``merge_radius_nm`` (one-to-one per
configuration, in descending weight). A molecule's ``probability`` is the total weight of the
configurations that contain it, its position the weighted mean of its fits, and its sigma per axis
``sqrt(E_w[bound^2] + Var_w[position])`` over those configurations (the bound: sqrt(CRLB) of that
configuration's fit). A molecule under the probability from which tables are read (0.5) is the
unresolved neighbour of the nearest molecule over it: that molecule may stand for two emitters, and its
variance gains the neighbour's probability times their offset squared. Clusters where every source agrees
keep DeepSTORM's refined molecules (probability 1, sigma its bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ..optics.psf import PSF, as_psf
from ..simulation.camera import Camera
from . import mle
from .mle import camera_electrons  # noqa: F401 (API: frames to eq. 6's d')
from .weighing import (_finish, _merge_all, concat_fits, dedupe_fits, fit_configurations,  # noqa: F401 (API)
                       merge_cluster, split_seeds)

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class Priors:
    """Prior of the evidence, in the fit's units: emitters per pixel^2 and photo-electrons."""

    density_px: float  # rho, emitters per camera pixel^2
    log_photons_mean: float  # log-normal p_N of photo-electrons: mean and sd of log N
    log_photons_sd: float

    @classmethod
    def from_molecules(cls, base: pd.DataFrame, n_pixels: int, qe: float, min_width: float = 0.5) -> Priors:
        """The call's own priors: DeepSTORM's molecule count over the frames' pixels (at least one molecule
        per call) and a log-normal of their fitted photons (median and MAD, width at least ``min_width``)."""
        n = base["photons"].to_numpy(np.float64) * qe if "photons" in base else np.zeros(0)
        n = n[np.isfinite(n) & (n > 0)]
        mu = float(np.median(np.log(n))) if len(n) else math.log(1000.0)
        sd = 1.4826 * float(np.median(np.abs(np.log(n) - mu))) if len(n) >= 5 else 1.0
        return cls(max(len(base), 1) / float(n_pixels), mu, max(sd, float(min_width)))

    def per_emitter(self, photons_e: torch.Tensor) -> torch.Tensor:
        """``log rho + 3/2 log 2 pi + log p_N(N)`` of each emitter (photo-electrons)."""
        ln = torch.log(photons_e.clamp_min(1e-3))
        log_pn = -ln - math.log(self.log_photons_sd) - 0.5 * LOG_2PI - 0.5 * ((ln - self.log_photons_mean)
                                                                             / self.log_photons_sd) ** 2
        return math.log(self.density_px) + 1.5 * LOG_2PI + log_pn


# -- proposals -----------------------------------------------------------------------------------------------
def ambiguous(base: pd.DataFrame, deviance: float = 1.66, photons: float = 1.6) -> np.ndarray:
    """Which of DeepSTORM's refined molecules [bool per row] leave their configuration in doubt: a fit
    worse than Poisson noise (``fit_deviance`` above ``deviance``), more light than one emitter usually
    gives (photons above ``photons`` times the median of the call), or a fit that did not converge.
    These are the clusters that get split proposals and DDPM samples; the rest keep their fit.

    ``deviance`` 1.66 is about the 97.5th percentile of a good fit's deviance per pixel over its 5 x 5
    window (chi^2 with 25 degrees of freedom, over 25). On validation frames (seeds 9100+, 2000 and 1000
    photons, densities 1 and 4) the gate at (1.66, 1.6) passes 4-14% of the molecules and keeps the
    Jaccard index of the gate at (1.2, 1.4), which passes 10-25%, within 0.002; at (1.66, 2.0) it loses
    0.003-0.02 (unresolved pairs show in their photons)."""
    if len(base) == 0:
        return np.zeros(0, bool)
    ph = base["photons"].to_numpy(np.float64)
    med = np.nanmedian(ph) if np.isfinite(ph).any() else np.inf
    out = ph > photons * med
    if "fit_deviance" in base:
        out |= base["fit_deviance"].to_numpy(np.float64) > deviance
    if "refine_ok" in base:
        out |= ~base["refine_ok"].to_numpy(bool)
    return out


def undecided(molecules: pd.DataFrame, low: float = 0.02, high: float = 0.98) -> np.ndarray:
    """Which molecules [bool per row] a weighing left in doubt: detection probability strictly between
    ``low`` and ``high`` (the DDPM samples go around these)."""
    if len(molecules) == 0 or "probability" not in molecules:
        return np.zeros(len(molecules), bool)
    p = molecules["probability"].to_numpy(np.float64)
    return (p > low) & (p < high)


def link_proposals(base: pd.DataFrame, detections: pd.DataFrame, radius_nm: float):
    """Slots (distinct molecules proposed anywhere) and which source proposes which.

    Slots ``0..len(base)-1`` are DeepSTORM's refined molecules (source -1); each sample's detections are
    assigned one-to-one to the slots of their frame within ``radius_nm`` (Hungarian), the rest open new
    slots (seeded at the detection, later detections of the slot average in). Returns the slots' frame,
    x, y (nm) and the membership pairs (slot, source)."""
    fr = [base["frame"].to_numpy(np.int64)]
    xs, ys = [base["x_nm"].to_numpy(np.float64)], [base["y_nm"].to_numpy(np.float64)]
    mem_slot, mem_src = [np.arange(len(base))], [np.full(len(base), -1)]
    n_slots = len(base)
    base_by_frame = {f: np.flatnonzero(fr[0] == f) for f in np.unique(fr[0])}
    for f, det_f in detections.groupby("frame", sort=True):
        slots = list(base_by_frame.get(f, np.zeros(0, np.int64)))
        sx, sy = list(xs[0][slots]), list(ys[0][slots])
        cnt = [1] * len(slots)
        n_base_f = len(slots)
        for k, det in det_f.groupby("sample", sort=True):
            dxy = det[["x_nm", "y_nm"]].to_numpy(np.float64)
            matched = np.full(len(dxy), -1)
            if slots:
                sxy = np.c_[sx, sy]
                tree = cKDTree(sxy)
                dist = tree.sparse_distance_matrix(cKDTree(dxy), radius_nm, output_type="coo_matrix")
                if dist.nnz:
                    cost = np.full((len(sxy), len(dxy)), 1e9)
                    cost[dist.row, dist.col] = dist.data
                    r, c = linear_sum_assignment(cost)
                    ok = cost[r, c] <= radius_nm
                    matched[c[ok]] = r[ok]
            for j in np.flatnonzero(matched >= 0):
                i = matched[j]
                if slots[i] >= len(base):  # a sample's own slot: the seed averages its detections
                    cnt[i] += 1
                    sx[i] += (dxy[j, 0] - sx[i]) / cnt[i]
                    sy[i] += (dxy[j, 1] - sy[i]) / cnt[i]
            for j in np.flatnonzero(matched < 0):
                slots.append(n_slots)
                sx.append(dxy[j, 0]), sy.append(dxy[j, 1]), cnt.append(1)
                matched[j] = len(slots) - 1
                n_slots += 1
            mem_slot.append(np.asarray(slots)[matched]), mem_src.append(np.full(len(dxy), int(k)))
        if len(slots) > n_base_f:
            fr.append(np.full(len(slots) - n_base_f, f))
            xs.append(np.asarray(sx[n_base_f:])), ys.append(np.asarray(sy[n_base_f:]))
    # new slots were numbered in the order they were opened, frame by frame: the concatenation keeps it
    return (np.concatenate(fr), np.concatenate(xs), np.concatenate(ys), np.concatenate(mem_slot),
            np.concatenate(mem_src))


def distinct_configurations(pair_cluster: np.ndarray, mem_slot: np.ndarray, mem_pair: np.ndarray, seed: int = 0):
    """The distinct configurations of every cluster (Zobrist hashing of each proposal's set of slots).

    A proposal (pair id ``p``) is one source's set of slots in cluster ``pair_cluster[p]``; its members are
    the memberships ``mem_slot[mem_pair == p]`` (none: the empty configuration). Returns one row per
    distinct configuration: its cluster, a representative proposal (``rep``) and the number of proposals
    that make it (``n_sources``)."""
    n_slots = int(mem_slot.max()) + 1 if len(mem_slot) else 0
    keys = np.random.default_rng(seed).integers(1, np.iinfo(np.int64).max, n_slots, dtype=np.int64)
    hashes = np.zeros(len(pair_cluster), np.int64)
    np.bitwise_xor.at(hashes, mem_pair, keys[mem_slot])
    table = pd.DataFrame({"cluster": pair_cluster, "hash": hashes, "pair": np.arange(len(hashes))})
    grouped = table.groupby(["cluster", "hash"], sort=True)
    return grouped.agg(rep=("pair", "first"), n_sources=("pair", "size")).reset_index()


def arbitrate(
    frames_adu,
    base: pd.DataFrame,
    detections: pd.DataFrame,
    n_samples: int,
    camera: Camera,
    sigma_px: float | PSF,
    *,
    link_radius_nm: float = 60.0,
    merge_radius_nm: float | None = None,
    link_px: float | None = None,
    max_cluster: int = 6,
    split: bool = True,
    split_mask: np.ndarray | None = None,
    split_scales: tuple[float, ...] = (1.0, 0.6, 0.35),
    dispersion: bool = True,
    coupling: float = 1.0,
    min_separation_px: float = 0.5,
    births: bool = True,
    unresolved_below: float | None = 0.5,
    probability_floor: float = 0.1,
    photon_prior_width: float = 0.5,
    n_iter: int = 12,
    max_shift_px: float = 1.5,
    min_photons: float = 50.0,
    dtype: torch.dtype = torch.float64,
) -> pd.DataFrame:
    """Molecules of the frames from DeepSTORM's refined molecules and the samples' detections (module docstring).

    Parameters
    ----------
    frames_adu : array [F, H, W], the camera frames (ADU)
    base : DataFrame
        DeepSTORM's molecules refined on the frames (:func:`~smlm_diffusers.localization.refine.refine_frames`
        with ``write_sigma``): frame, x_nm, y_nm, sigma_x_nm, sigma_y_nm, photons, background, ...
    detections : DataFrame
        Localizations of every sample: frame, sample (0..n_samples-1), x_nm, y_nm.
    n_samples : int
        Samples per frame (a sample without detections in a cluster proposes the empty configuration there).
    camera, sigma_px : Camera, float or PSF
        The frames' camera; the Gaussian PSF's standard deviation, camera pixels, or the PSF (its ``sigma_px``
        sizes the windows, links and merge radius).
    link_radius_nm : float
        A sample's detection within this distance of a molecule proposes that molecule.
    merge_radius_nm : float, optional
        Members of different configurations within this distance are one molecule. Default the PSF sigma.
    link_px, max_cluster : clusters: molecules closer than ``link_px`` (3 sigma_px), at most ``max_cluster``
    split : bool
        Also propose each DeepSTORM molecule as a pair (seeded along the principal axis of its light).
    split_scales : tuple of float
        The pair proposals' seed separations, as multiples of the one from the molecule's second moments
        (several starts: the fit of a close pair finds a lopsided optimum from one start alone).
    births : bool
        Also propose, beside each cluster's best configuration without samples, each molecule that only
        samples propose (a birth; a move where it lies within ``link_radius_nm`` of a member),
        :func:`_birth_proposals`.
    coupling, min_separation_px : float
        The evidence's log det of the Fisher matrix: 1 the full matrix (Laplace's approximation itself), 0
        each emitter's own block; a configuration with two members closer than ``min_separation_px`` gets
        no weight (there the likelihood is flat in their separation and Laplace's approximation fails).
    unresolved_below : float, optional
        A molecule below this probability widens the sigma of the nearest molecule at or above it (within the
        merge radius) by its probability times its offset squared: the hypothesis that that molecule is an
        unresolved pair (:func:`~.weighing.merge_cluster`). None: no such term.
    probability_floor : float
        Molecules below this probability are left out of the table.
    photon_prior_width : float
        Least standard deviation of log photons of the photon prior.
    n_iter, max_shift_px, min_photons, dtype :
        Fit iterations; a configuration whose fit moves a member farther than ``max_shift_px`` (per axis) from
        its seed or leaves it with ``min_photons`` or fewer photons gets no weight; the fits' floating type
        (float64: evidences differ by a few units of log-likelihood out of thousands).

    Returns
    -------
    DataFrame
        ``base``'s columns (molecules of clusters where all sources agree are ``base``'s rows), with
        ``probability`` (total weight of the configurations holding the molecule), ``n_samples`` (samples
        proposing it), ``bound_x_nm`` / ``bound_y_nm`` (weighted mean bound) and ``spread_x_nm`` /
        ``spread_y_nm`` (standard deviation of its position between configurations); ``sigma_x_nm`` =
        hypot(bound, spread). Sorted by frame, then y, x.
    """
    psf = as_psf(sigma_px)
    sigma_px, a, qe = psf.sigma_px, float(camera.pixel_size_nm), float(camera.qe)
    electrons = camera_electrons(frames_adu, camera, dtype)
    read_var = camera.read_variance(electrons)  # e-^2: the camera's, or each pixel's [H, W]
    base = base.reset_index(drop=True)
    out = base.assign(probability=1.0, n_samples=int(n_samples), bound_x_nm=base["sigma_x_nm"],
                      bound_y_nm=base["sigma_y_nm"], spread_x_nm=0.0, spread_y_nm=0.0)
    if len(detections) == 0 and len(base) == 0:
        return out
    s_frame, s_x, s_y, mem_slot, mem_src = link_proposals(base, detections, link_radius_nm)
    n_linked = len(s_frame)  # slots n_base..n_linked-1: molecules that only samples propose
    xp, yp = s_x / a, s_y / a
    cluster = mle.clusters(s_frame, xp, yp, 3.0 * sigma_px if link_px is None else float(link_px), max_cluster)
    n_cl, n_src, n_base = int(cluster.max()) + 1, int(n_samples) + 1, len(base)
    bx, by, bn = (base[c].to_numpy(np.float64) * f for c, f in (("x_nm", 1 / a), ("y_nm", 1 / a), ("photons", qe)))
    fixed_full = _render(electrons.shape, base["frame"].to_numpy(np.int64), bx, by, bn, psf, dtype)
    pair_cluster = np.repeat(np.arange(n_cl), n_src)  # proposals: DeepSTORM's and each sample's slots per cluster
    mem_pair = cluster[mem_slot] * n_src + (mem_src + 1)
    if split:  # ... and each DeepSTORM molecule as a pair, beside the others of its cluster
        xp, yp, s_frame, cluster, pair_cluster, mem_slot, mem_pair = _split_proposals(
            electrons, fixed_full, base, split_mask, (xp, yp, s_frame, cluster, pair_cluster, mem_slot, mem_pair,
                                                      mem_src), (bx, by, bn), qe, psf, read_var, split_scales)
    configs = distinct_configurations(pair_cluster, mem_slot, mem_pair)
    amb = np.bincount(configs["cluster"].to_numpy(), minlength=n_cl) > 1  # clusters whose proposals differ
    if not amb.any():
        return _finish(out, [], base.columns)
    configs = configs[amb[configs["cluster"].to_numpy()]].reset_index(drop=True)
    members, cfg_cluster = _members(configs, mem_slot, mem_pair)
    windows, frame_of = _cluster_windows(cluster, xp, yp, s_frame, n_cl, psf)
    base_light = _cluster_light(cluster[:n_base], bx, by, bn, psf, dtype, n_cl)
    priors = Priors.from_molecules(base, electrons.numel(), qe, photon_prior_width)

    def fit(members, cfg_cluster, seeds):
        return fit_configurations(electrons, members, cfg_cluster, windows, seeds, frame_of, fixed_full,
                                  base_light, priors, psf, read_var, n_iter=n_iter, max_shift_px=max_shift_px,
                                  min_photons_e=float(min_photons) * qe, coupling=coupling,
                                  min_separation_px=min_separation_px)

    fits, rows_of = fit(members, cfg_cluster, (xp, yp))
    n_sources = configs["n_sources"].to_numpy()
    if births:  # one molecule at a time beside each cluster's best configuration
        born, born_cluster = _birth_proposals(cfg_cluster, fits, rows_of, members, cluster,
                                              np.arange(n_base, n_linked), (xp, yp), link_radius_nm / a)
        if born:
            fits, rows_of = concat_fits(fits, rows_of, *fit(born, born_cluster, (xp, yp)))
            members, cfg_cluster = members + born, np.r_[cfg_cluster, born_cluster]
            n_sources = np.r_[n_sources, np.zeros(len(born), np.int64)]
    n_sources = dedupe_fits(cfg_cluster, fits, rows_of, members, n_sources)
    configs = pd.DataFrame({"cluster": cfg_cluster, "n_sources": n_sources})
    if dispersion:  # quasi-likelihood: a fit worse than Poisson noise widens its bound by its dispersion
        widen = np.maximum(np.nan_to_num(fits.deviance, nan=1.0), 1.0)
        fits.var_x, fits.var_y = fits.var_x * widen, fits.var_y * widen
    merge_px = sigma_px if merge_radius_nm is None else merge_radius_nm / a
    merged, failed = _merge_all(configs, fits, rows_of, members, merge_px, frame_of, unresolved_below)
    keep = ~amb[cluster[:n_base]] | np.isin(cluster[:n_base], failed)  # unanimous clusters, failed fits
    return _finish(out[keep], merged, base.columns, a, qe, probability_floor, n_samples)


def _birth_proposals(cfg_cluster, fits, rows_of, members, cluster, sample_slots, seeds, link_px):
    """Births and moves beside each cluster's best configuration without samples (the highest valid evidence of
    DeepSTORM's and its pair proposals), so that one good proposal is weighed on its own rather than with the
    rest of its sample's configuration.

    Every sample slot of the cluster that is not one of the configuration's members is added to it (a birth),
    or, within ``link_px`` of a member's fit, takes that member's place (a move). The members keep their seeds
    (the fit of the configuration without the birth may have drifted into the birth's light). Returns the new
    configurations' members (slot ids) and clusters; they count no sources of their own (their samples count
    in their own configurations)."""
    xs, ys = seeds
    sampled = np.array([np.isin(m, sample_slots).any() for m in members], bool)
    lz = np.where(fits.valid & ~sampled, fits.log_z, -np.inf)
    order = np.lexsort((-lz, cfg_cluster))
    head = order[np.r_[True, cfg_cluster[order][1:] != cfg_cluster[order][:-1]]] if len(order) else order
    head = head[np.isfinite(lz[head])]
    by_cluster = {} if len(sample_slots) == 0 else \
        pd.Series(sample_slots).groupby(cluster[sample_slots]).apply(np.asarray).to_dict()
    born, born_cluster = [], []
    for c in head:
        rows = rows_of[c] if len(members[c]) else np.zeros(0, np.int64)
        for s in by_cluster.get(cfg_cluster[c], ()):
            d = np.hypot(fits.x[rows] - xs[s], fits.y[rows] - ys[s])
            keep = members[c] if len(d) == 0 or d.min() > link_px else np.delete(members[c], np.argmin(d))
            born.append(np.r_[keep, s].astype(np.int64)), born_cluster.append(cfg_cluster[c])
    return born, np.asarray(born_cluster, np.int64)


def _split_proposals(electrons, fixed_full, base, split_mask, proposals, base_xyn, qe, psf, read_var,
                     scales=(1.0,)):
    """The proposals with each (``split_mask``-chosen, bright) DeepSTORM molecule as a pair added, the other
    DeepSTORM molecules of its cluster beside it: new slots (positions, frames, clusters) and pairs, one pair
    per scale of the seeds' separation."""
    xp, yp, s_frame, cluster, pair_cluster, mem_slot, mem_pair, mem_src = proposals
    bx, by, bn = base_xyn
    ok = base["photons"].to_numpy(np.float64) > 0
    pick = np.flatnonzero(ok if split_mask is None else ok & np.asarray(split_mask, bool))
    (xa, ya), (xb, yb) = split_seeds(electrons, fixed_full, base["frame"].to_numpy(np.int64)[pick], bx[pick],
                                     by[pick], bn[pick], base["background"].to_numpy(np.float64)[pick] * qe,
                                     psf, read_var)
    base_slots = mem_slot[mem_src == -1]  # DeepSTORM's molecules, by cluster: the others beside each pair
    order = base_slots[np.argsort(cluster[base_slots], kind="stable")]
    lo, hi = np.searchsorted(cluster[order], cluster[pick], "left"), np.searchsorted(cluster[order], cluster[pick],
                                                                                      "right")
    others = [order[i:j][order[i:j] != m] for m, i, j in zip(pick, lo, hi)]
    for scale in scales:
        new_a, new_b = len(xp) + np.arange(len(pick)), len(xp) + len(pick) + np.arange(len(pick))
        xp = np.r_[xp, bx[pick] + scale * (xa - bx[pick]), bx[pick] + scale * (xb - bx[pick])]
        yp = np.r_[yp, by[pick] + scale * (ya - by[pick]), by[pick] + scale * (yb - by[pick])]
        s_frame = np.r_[s_frame, s_frame[pick], s_frame[pick]]
        cluster = np.r_[cluster, cluster[pick], cluster[pick]]
        pid = len(pair_cluster) + np.arange(len(pick))
        pair_cluster = np.r_[pair_cluster, cluster[pick]]
        mem_slot = np.concatenate([mem_slot, new_a, new_b] + others)
        mem_pair = np.concatenate([mem_pair, pid, pid] + [np.full(len(o), p) for o, p in zip(others, pid)])
    return xp, yp, s_frame, cluster, pair_cluster, mem_slot, mem_pair


def _members(configs: pd.DataFrame, mem_slot, mem_pair):
    """Each configuration's slots (sorted) and its cluster."""
    order = np.lexsort((mem_slot, mem_pair))
    slots, pairs = mem_slot[order], mem_pair[order]
    rep = configs["rep"].to_numpy()
    lo, hi = np.searchsorted(pairs, rep, "left"), np.searchsorted(pairs, rep, "right")
    members = [slots[i:j].astype(np.int64) for i, j in zip(lo, hi)]
    return members, configs["cluster"].to_numpy()


def _cluster_windows(cluster, xp, yp, s_frame, n_cl: int, psf: PSF):
    """One window (row0, col0, height, width) per cluster, every slot's pixel plus the fit's margin (as the
    frame fit's, :func:`.mle.groups_of`), and each cluster's frame."""
    half = mle.fit_window(psf)
    rmin, rmax, cmin, cmax = mle.cluster_boxes(cluster, np.floor(yp).astype(np.int64), np.floor(xp).astype(np.int64),
                                               n_cl)
    windows = (rmin - half, cmin - half, rmax - rmin + 1 + 2 * half, cmax - cmin + 1 + 2 * half)
    frame_of = np.zeros(n_cl, np.int64)
    frame_of[cluster] = s_frame
    return windows, frame_of


def _render(shape, frame, x, y, n, psf, dtype):
    """Light (photo-electrons) of molecules on full frames [F, H, W]."""
    t = lambda v: torch.as_tensor(v, dtype=dtype)  # noqa: E731
    return mle.render_frames(psf, shape[-2:], torch.as_tensor(frame), t(x), t(y), t(n), n_frames=shape[0])


def _cluster_light(cluster_of_base, x, y, n, psf, dtype, n_clusters):
    """A function (cluster ids, window origins, window size) -> the light of those clusters' own DeepSTORM
    molecules on their windows [Rh, Rw, G]."""
    order = np.argsort(cluster_of_base, kind="stable")
    n_cl = int(n_clusters)
    starts = np.searchsorted(cluster_of_base[order], np.arange(n_cl + 1))

    def light(cids, r0, c0, rh, rw):
        counts = starts[cids + 1] - starts[cids]
        kb = max(int(counts.max()) if len(counts) else 0, 1)
        pick = np.full((kb, len(cids)), -1)
        for j in range(kb):
            has = counts > j
            pick[j, has] = order[starts[cids[has]] + j]
        t = lambda v: torch.as_tensor(v, dtype=dtype)  # noqa: E731
        if len(x) == 0:  # no DeepSTORM molecule anywhere: the samples alone propose
            return torch.zeros(rh, rw, len(cids), dtype=dtype)
        ok = pick >= 0
        px, py = t(np.where(ok, x[pick], 0.0)) - c0.to(dtype), t(np.where(ok, y[pick], 0.0)) - r0.to(dtype)
        pn = t(np.where(ok, n[pick], 0.0))
        if psf.separable:  # products of the 1D profiles [K, G, W], [K, G, H]
            ex, ey = psf.profiles(px, py, (rh, rw))
            return torch.einsum("kgh,kgw->hwg", ey * pn.unsqueeze(-1), ex)
        return (pn[:, None, None] * mle.window_fractions(psf, px, py, rh, rw)).sum(0)

    return light
