"""Refinement of localizations on the camera frames: joint Poisson maximum likelihood, CRLB, splitting.

Model (paper eqs. 2-7). A pixel k in photo-electrons, ``d_k = (ADU_k - o_k) / g_k``, is Poisson signal
plus Gaussian read noise of variance ``r_k^2 = sigma_k^2 / g_k^2`` (eqs. 3-4: offset o_k, gain g_k and
read-noise variance sigma_k^2 in ADU^2 are each pixel's own on an sCMOS camera with per-pixel maps, one value
for every pixel otherwise; :class:`~smlm_diffusers.simulation.camera.Camera`). The Poisson-normal
approximation (eqs. 5-6) treats ``d'_k = d_k + r_k^2`` as Poisson with mean

    mu'_k = qe * (sum_m N_m PSF_m(k) + b) + L_k + r_k^2,

where ``PSF_m`` is the PSF's pixel fractions at (x_m, y_m) (a :class:`~smlm_diffusers.optics.PSF`, the
simulator's own: eq. 2's pixel-integrated Gaussian of ``sigma_px`` by default, so the fit is unbiased on
simulated data),
``N_m`` the incident photons of molecule m, ``b`` a constant local background (photons per pixel) and
``L_k`` the light of molecules outside the cluster, held fixed. The fit minimises the negative
log-likelihood of eq. 7, ``sum_k mu'_k - d'_k log mu'_k``, over (x, y, N) of every molecule of a cluster
and the cluster's b, by Levenberg-Marquardt steps on the Fisher-scoring Hessian
``I = sum_k (1 / mu'_k) grad mu'_k grad mu'_k^T`` (eq. 14), batched over all clusters of all frames (as
Picasso's gaussmle and Gpufit batch theirs; the same torch code runs on CPU and GPU). The inverse of the
same matrix at the fit is the bound: each molecule's CRLB has its neighbours in the cluster and the
background as nuisance parameters.

Clusters are the connected components of molecules closer than ``link_px`` (at most ``max_cluster``
molecules, else the links are shortened inside that component), each fitted in a window ``roi_half_px``
beyond its molecules' pixels (masked outside the frame). Fit quality is the Poisson deviance per pixel,
``2 sum [d' log(d' / mu') - (d' - mu')] / n``, over the 2-sigma window of each molecule: about 1 where the
model explains the data. A molecule that fits badly is tried as two, seeded along the principal axis of
its light; the pair is kept where the likelihood ratio beats a BIC-style penalty (as in ThunderSTORM's
multi-emitter fitting). Batched engine: :mod:`smlm_diffusers.localization.mle`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..columns import FIT_FLAGS, REFINE_COLUMNS  # noqa: F401 (the table's columns; re-exported)
from ..optics.psf import PSF, as_psf
from ..simulation.camera import Camera
from . import mle
from .mle import host, local


def _split_round(groups, results, state, labels, cand, psf, n_iter, penalty, max_shift, min_photons_e):
    """Try every candidate as a pair in its cluster; keep the best pair per cluster that beats the penalty.
    Updates ``state`` in place; returns the new molecules' parents (rows of ``state``) and the new labels."""
    parents, new_labels = [], []
    for g, res in zip(groups, results):
        q_slot, q_col = torch.nonzero(cand[g.idx] & g.real, as_tuple=True)
        if len(q_col) == 0:
            continue
        sub = g.subset(q_col)
        x, y, n, b = local(sub, state)
        q = torch.arange(len(q_col), device=x.device)
        hx, hy = mle.pair_offsets(*(c[q_slot, q_col] for c in res["cov"]), res["var_model"][q_slot, q_col])
        cx, cy = res["mx"][q_slot, q_col] - sub.c0, res["my"][q_slot, q_col] - sub.r0
        xp, yp, np_ = x.clone(), y.clone(), n.clone()
        xp[q_slot, q], yp[q_slot, q], np_[q_slot, q] = cx + hx, cy + hy, 0.5 * n[q_slot, q]
        xp, yp = torch.cat([xp, (cx - hx)[None]]), torch.cat([yp, (cy - hy)[None]])
        np_ = torch.cat([np_, 0.5 * n[q_slot, q][None]])
        real = torch.cat([sub.real, torch.ones_like(sub.real[:1])])
        frozen = torch.cat([state.frozen[sub.idx], torch.zeros_like(sub.real[:1])])
        nll_single = mle.objective(sub, x, y, n, b, None, psf, grad=False)[0]
        xp, yp, np_, bp, nll = mle.fit_group(sub, xp, yp, np_, b, mle.free_mask(real, frozen), psf, n_iter)[:5]
        # valid: every member near its seed (a pair may straddle its parent's), both halves bright enough
        parent = sub.idx[q_slot, q]
        sx = torch.cat([state.x0[sub.idx], state.x0[parent][None]]) - sub.c0
        sy = torch.cat([state.y0[sub.idx], state.y0[parent][None]]) - sub.r0
        reach = torch.full_like(xp, max_shift)
        reach[q_slot, q], reach[-1] = max_shift + 1.0, max_shift + 1.0
        near = (((xp - sx).abs() <= reach) & ((yp - sy).abs() <= reach)) | ~real
        pair_n = torch.stack([np_[q_slot, q], np_[-1]])
        bright = pair_n.amin(0) >= torch.clamp(0.1 * pair_n.sum(0), min=min_photons_e)
        score = 2.0 * (nll_single - nll) - 3.0 * penalty(res["mask_pixels"][q_col])
        good = near.all(0) & bright & torch.isfinite(score) & (score > 0)
        if not bool(good.any()):
            continue
        score = host(torch.where(good, score, torch.full_like(score, -math.inf)))
        best = pd.Series(score).groupby(sub.cids).idxmax().to_numpy()
        best = torch.as_tensor(best[np.isfinite(score[best])], device=x.device)
        par = parent[best]
        new_rows = torch.arange(len(state.x), len(state.x) + len(best), device=x.device)
        state.extend(x=state.x0[par], y=state.y0[par], n=state.n[par], b=state.b[par], x0=state.x0[par],
                     y0=state.y0[par], frame=state.frame[par], ok=state.ok[par], frozen=torch.zeros_like(state.ok[par]))
        acc = sub.subset(best)
        acc.idx, acc.real = torch.cat([acc.idx, new_rows[None]]), real[:, best]
        mle.store(acc, state, xp[:, best], yp[:, best], np_[:, best], bp[best])
        parents.append(par)
        new_labels.append(acc.cids)
    if parents:
        return torch.cat(parents), np.r_[labels, np.concatenate(new_labels)]
    return torch.zeros(0, dtype=torch.long, device=state.x.device), labels


@dataclass(frozen=True)
class RefineSettings:
    """The fit's settings (keywords of :func:`refine_frames`).

    n_iter : most Levenberg-Marquardt iterations per pass; every cluster of a batch steps at once and
        leaves the batch once its step is below 0.005 px.
    n_passes : passes over all clusters; each holds the light of the other clusters at the previous
        pass's fit (the first, at the starts: two rounds of weighted least squares at the seeds).
    refit_tol : in passes after the first, only clusters where that light moved by more than this many
        noise sigmas in some pixel are refitted.
    link_px : molecules closer than this (pixels) are fitted jointly. Default ``3 sigma_px``.
    max_cluster : largest cluster; a larger component is cut with shorter links.
    roi_half_px : window margin around a cluster's seed pixels. Default ``ceil(3 sigma_px)`` (7 x 7
        pixels for an isolated molecule at sigma 1 px: its x, y bound equals that of the 9 x 9
        :func:`smlm_diffusers.fisher.default_roi_size` to 0.1%).
    max_shift_px : a fit moving a molecule farther than this from its seed (per axis, pixels), or leaving
        it with ``min_photons`` or fewer photons, or non-finite, is a runaway: its position falls back to
        the seed (``refine_ok = False``), its cluster is refitted with that position held.
    min_photons : incident photons at or below which a fit is a runaway (a seed on background fits
        about +-20).
    split_deviance : deviance per pixel above which a molecule is tried as a pair.
    split_penalty : penalty per added parameter (3 per pair) on twice the log-likelihood gain. Default
        twice the BIC's, ``2 log(pixels in the window)``: with the BIC's own, 4 of 2560 isolated emitters
        (500 and 2000 photons) were split, with twice none, at the same Jaccard at densities 2 and 4
        (within 0.004).
    split_rounds : rounds of splitting (at most one split per cluster per round; a split molecule is not
        split again).
    seed_consistency : a fit that moves its molecule from the seed by more than this many
        ``sqrt(crlb_x^2 + crlb_y^2 + 2 s^2)`` keeps the seed's position (``fit_flag = "seed_kept"``): the
        frame model then lacks light (an undetected neighbour, an unresolved pair), and there the seed was
        the better estimate on the benchmark (``python -m benchmarks.refinement``). ``s`` is the seeds' own
        error beyond the fit's, estimated from the median seed-fit distance of the call (0 with fewer than
        20 molecules; about 0 for DeepSTORM's seeds). None turns it off.
    """

    n_iter: int = 8
    n_passes: int = 1
    link_px: float | None = None
    max_cluster: int = 6
    roi_half_px: int | None = None
    max_shift_px: float = 1.5
    min_photons: float = 50.0
    split_deviance: float = 1.5
    split_penalty: float | None = None
    split_rounds: int = 2
    seed_consistency: float | None = 2.0
    refit_tol: float = 0.05

    def penalty(self):
        """Penalty per added parameter as a function of the window's pixel count."""
        if self.split_penalty is None:
            return lambda n_pix: 2.0 * torch.log(n_pix.clamp_min(2.0))
        return lambda n_pix: torch.full_like(n_pix, float(self.split_penalty))


def refine_frames(frames_adu, locs: pd.DataFrame, camera: Camera, sigma_px: float | PSF, *, split: bool = True,
                  write_sigma: bool = False, dtype: torch.dtype = torch.float32, **settings) -> pd.DataFrame:
    """Refine localizations by a joint Poisson maximum-likelihood fit on the frames (module docstring).

    Parameters
    ----------
    frames_adu : array or tensor [F, H, W] or [H, W]
        Raw frames in ADU. A torch tensor is fitted on its device (CPU or GPU).
    locs : DataFrame
        Molecules with ``frame`` (0-based), ``x_nm``, ``y_nm`` (nm, docs/conventions.md's pixel geometry: the image's
        outer top-left corner is (0, 0)); optional ``photons`` (incident photons) and ``background``
        (incident photons per pixel) start the fit, otherwise a weighted least-squares fit at the seeds does.
    camera : Camera
        Offset, gain, read noise (e- rms), quantum efficiency and pixel size of the frames; its per-pixel maps,
        if any, must have the frames' rows and columns.
    sigma_px : float or PSF
        Gaussian PSF standard deviation, camera pixels, or the PSF (a :class:`~smlm_diffusers.optics.PSF`; a 3D
        PSF is fitted in focus). Windows, links and deviance windows scale with its ``sigma_px``.
    split : bool
        Try badly fitting molecules (``fit_deviance > split_deviance``) as two emitters.
    write_sigma : bool
        Also write ``sigma_x_nm`` / ``sigma_y_nm`` (replacing any given): the CRLB, widened where the seed was
        kept by the distance between seed and fit (``sqrt(crlb^2 + move^2)``).
    dtype : torch.dtype
        Floating type of the fit.
    **settings
        The fit's settings, :class:`RefineSettings` (``n_iter``, ``n_passes``, ``seed_consistency`` ...).

    Returns
    -------
    DataFrame
        Every input column, with ``x_nm``, ``y_nm``, ``photons`` and ``background`` replaced by the fit,
        and ``crlb_x_nm``, ``crlb_y_nm`` (square root of the CRLB of x and y, nm, from the Fisher
        information of the fitted cluster: neighbours and background as nuisance parameters, eq. 14),
        ``fit_deviance`` (Poisson deviance per pixel in the molecule's ``2 sigma`` window; about 1 for a good
        fit), ``fit_flag`` (``"ok"``; ``"runaway"``: the fit ran away and the position is the seed's;
        ``"seed_kept"``: see ``seed_consistency``), ``refine_ok`` (``fit_flag == "ok"``), ``split`` (True
        for both molecules of a split pair; the second is a new row after the first, its other columns
        copied) and ``cluster_size`` (molecules fitted jointly). Photons and background are incident
        photons (photo-electrons / qe). The index is reset.
    """
    opts = RefineSettings(**settings)
    frames, locs = _checked(frames_adu, locs, sigma_px)
    psf = as_psf(sigma_px)
    out_cols = list(locs.columns) + [c for c in ["photons", "background"] + REFINE_COLUMNS if c not in locs.columns]
    if write_sigma:
        out_cols += [c for c in ("sigma_x_nm", "sigma_y_nm") if c not in out_cols]
    if len(locs) == 0:
        return locs.reindex(columns=out_cols)
    f_np = locs["frame"].to_numpy(np.int64)
    a, qe = float(camera.pixel_size_nm), float(camera.qe)
    x_np, y_np = locs["x_nm"].to_numpy(np.float64) / a, locs["y_nm"].to_numpy(np.float64) / a
    sigma, dev, m = psf.sigma_px, frames.device, len(locs)
    camera.check_shape(frames.shape)
    run = _Run(psf, camera.read_variance(frames.to(dtype)), tuple(frames.shape[-2:]), opts.n_iter,
               mle.fit_window(psf) if opts.roi_half_px is None else int(opts.roi_half_px),
               mle.camera_electrons(frames, camera, dtype))  # d' of eq. 6, each pixel's own
    t = lambda v: torch.as_tensor(v, dtype=dtype, device=dev)  # noqa: E731
    state = mle.State(t(x_np), t(y_np), t(np.zeros(m)), t(np.zeros(m)), t(x_np), t(y_np),
                   torch.as_tensor(f_np, device=dev), torch.ones(m, dtype=torch.bool, device=dev),
                   torch.zeros(m, dtype=torch.bool, device=dev))
    labels = mle.clusters(f_np, x_np, y_np, 3.0 * sigma if opts.link_px is None else float(opts.link_px),
                       opts.max_cluster)
    roi = (np.floor(y_np).astype(np.int64), np.floor(x_np).astype(np.int64))
    groups = mle.groups_of(labels, state, run.electrons, roi, run.half)
    given = None
    if {"photons", "background"} <= set(locs.columns):
        given = tuple(t(locs[c].to_numpy(np.float64)) * qe for c in ("photons", "background"))
    fits = run.fit(groups, state, opts.n_passes, opts.refit_tol, given)
    min_e = float(opts.min_photons) * qe
    run.fallback(groups, fits, state, opts.max_shift_px, min_e)
    half_dev = int(math.ceil(2.0 * sigma))
    results = [mle.assess(g, state, fit, psf, half_dev, split) for g, fit in zip(groups, fits)]
    groups, results, labels, split_flag, parent = _split_rounds(
        run, opts, groups, results, state, labels, roi, split, min_e, half_dev)
    crlb_x, crlb_y, deviance = (mle.per_molecule(groups, results, k, len(state.x), state.x)
                                for k in ("crlb_x", "crlb_y", "deviance"))
    flag, move = _keep_seeds(state, crlb_x + crlb_y, split_flag, opts.seed_consistency)
    par = host(parent)
    nm = lambda v: host(v).astype(np.float64) * a  # noqa: E731
    out = locs.iloc[par].reset_index(drop=True)
    out["x_nm"], out["y_nm"] = nm(state.x), nm(state.y)
    out["photons"], out["background"] = nm(state.n) / (a * qe), nm(state.b) / (a * qe)
    out["crlb_x_nm"], out["crlb_y_nm"] = nm(crlb_x.clamp_min(0.0).sqrt()), nm(crlb_y.clamp_min(0.0).sqrt())
    out["fit_deviance"] = host(deviance).astype(np.float64)
    out["refine_ok"], out["fit_flag"] = flag == "ok", flag
    out["split"], out["cluster_size"] = host(split_flag), np.bincount(labels)[labels]
    if write_sigma:  # where the seed was kept, its disagreement with the fit widens the bound
        out["sigma_x_nm"] = np.hypot(out["crlb_x_nm"], nm(move))
        out["sigma_y_nm"] = np.hypot(out["crlb_y_nm"], nm(move))
    key = np.where(np.arange(len(par)) < m, np.arange(len(par)) * 2, par * 2 + 1)  # a pair's second row after its first
    return out.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)[out_cols]


def _checked(frames_adu, locs: pd.DataFrame, sigma_px) -> tuple[torch.Tensor, pd.DataFrame]:
    """The frames as a tensor [F, H, W] and the seeds with a fresh index, or a ValueError saying what is wrong."""
    frames = frames_adu if isinstance(frames_adu, torch.Tensor) else torch.as_tensor(np.asarray(frames_adu))
    frames = frames.unsqueeze(0) if frames.ndim == 2 else frames
    if frames.ndim != 3:
        raise ValueError(f"frames_adu must be [F, H, W] or [H, W], got shape {tuple(frames.shape)}")
    if not isinstance(sigma_px, PSF) and not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    missing = {"frame", "x_nm", "y_nm"} - set(locs.columns)
    if missing:
        raise ValueError(f"locs lacks columns {sorted(missing)}")
    locs = locs.reset_index(drop=True)
    if len(locs):
        f = locs["frame"].to_numpy(np.int64)
        if f.min() < 0 or f.max() >= frames.shape[0]:
            raise ValueError(f"frame indices must lie in [0, {frames.shape[0]}), got {f.min()}..{f.max()}")
        if not (np.isfinite(locs["x_nm"].to_numpy(np.float64)).all()
                and np.isfinite(locs["y_nm"].to_numpy(np.float64)).all()):
            raise ValueError("locs x_nm and y_nm must be finite")
    return frames, locs


def _split_rounds(run, opts: RefineSettings, groups, results, state, labels, roi, split, min_e, half_dev):
    """Rounds of splitting badly fitting molecules into pairs (``opts.split_rounds``, none unless ``split``).
    Returns the groups, their assessments, the labels, which rows are halves of a split pair, and each
    row's parent (itself for the seeds' rows)."""
    m = len(state.x)
    split_flag = torch.zeros(m, dtype=torch.bool, device=state.x.device)
    parent = torch.arange(m, device=state.x.device)
    for _ in range(opts.split_rounds if split else 0):
        deviance = mle.per_molecule(groups, results, "deviance", len(state.x), state.x)
        cand = (deviance > opts.split_deviance) & state.ok & ~split_flag & ~state.frozen
        if not bool(cand.any()):
            break
        parents, labels = _split_round(groups, results, state, labels, cand, run.psf, opts.n_iter + 4, opts.penalty(),
                                       opts.max_shift_px, min_e)
        if len(parents) == 0:
            break
        split_flag = torch.cat([split_flag, torch.ones_like(parents, dtype=torch.bool)])
        split_flag[parents] = True
        parent = torch.cat([parent, parents])
        roi = (np.r_[roi[0], roi[0][host(parents)]], np.r_[roi[1], roi[1][host(parents)]])
        groups = mle.groups_of(labels, state, run.electrons, roi, run.half)
        mle.fixed_light(groups, state, run.shape, run.psf, run.read_var)
        results = [mle.assess(g, state, mle.fisher_at(g, state, run.psf), run.psf, half_dev, split) for g in groups]
    return groups, results, labels, split_flag, parent


def _keep_seeds(state, bound2, split_flag, seed_consistency):
    """``fit_flag`` per row, and how far (pixels) each fit moved where its seed was kept (``seed_consistency``,
    :class:`RefineSettings`); moves those rows of ``state`` back to their seeds."""
    flag = np.where(host(state.ok), "ok", "runaway").astype(object)
    move = torch.zeros_like(state.x)
    if seed_consistency is None:
        return flag, move
    # A fit that leaves its seed by much more than its own precision explains is pulled by light the
    # model lacks (an undetected neighbour, an unresolved pair): the seed is kept there.
    dx, dy = state.x - state.x0, state.y - state.y0
    move2, ok = dx**2 + dy**2, state.ok & ~split_flag
    # the seeds' own error, where they are less precise than the fit: from the median disagreement
    # (|d|^2 of a 2D Gaussian of variance s^2 per axis has median 2 s^2 ln 2)
    seed2 = 0.0
    if int(ok.sum()) >= 20:
        seed2 = float((move2[ok].median() / (2.0 * math.log(2.0)) - 0.5 * bound2[ok].median()).clamp_min(0.0))
    far = (move2 > float(seed_consistency) ** 2 * (bound2 + 2.0 * seed2)) & ok
    flag[host(far)] = "seed_kept"
    move = torch.where(far, move2.sqrt(), move)
    state.x, state.y = torch.where(far, state.x0, state.x), torch.where(far, state.y0, state.y)
    return flag, move


@dataclass
class _Run:
    """The fixed settings of one call and the starts, passes and fallbacks of the fit."""

    psf: PSF
    read_var: float | torch.Tensor  # read-noise variance, e-^2: the camera's, or each pixel's [H, W]
    shape: tuple[int, int]
    n_iter: int
    half: int
    electrons: torch.Tensor  # d' [F, H, W]

    def refit(self, g, fits, gi, state, cols=None):
        """Fit a group (or the clusters ``cols`` of it) from the current state; store state and Fisher matrices."""
        sub = g if cols is None else g.subset(cols)
        x, y, n, b, _, hess, mu = mle.fit_group(sub, *local(sub, state), mle.free_mask(sub.real, state.frozen[sub.idx]),
                                                self.psf, self.n_iter)
        mle.store(sub, state, x, y, n, b)
        if cols is None:
            fits[gi] = [hess, mu]
        else:
            fits[gi][0][..., cols], fits[gi][1][..., cols] = hess, mu

    def fit(self, groups, state, n_passes, refit_tol, given):
        """Starts (weighted least squares, twice: the second round nets out the first round's neighbouring
        clusters; or the given photons and background), then the passes of Levenberg-Marquardt."""
        for i in range(2):
            if i:
                mle.fixed_light(groups, state, self.shape, self.psf, self.read_var)
            for g in groups:
                mle.store(g, state, *local(g, state)[:2], *mle.start(g, state, self.psf, self.read_var))
        if given is not None:
            n_in, b_in = given
            use = torch.isfinite(n_in) & (n_in > 0) & torch.isfinite(b_in)
            state.n, state.b = torch.where(use, n_in, state.n), torch.where(use, b_in.clamp_min(0.0), state.b)
            for g in groups:  # one background per cluster
                mle.store(g, state, *local(g, state)[:3], (state.b[g.idx] * g.real).sum(0) / g.real.sum(0))
        fits = [None] * len(groups)
        for p in range(max(1, n_passes)):
            before = [g.fixed for g in groups]
            mle.fixed_light(groups, state, self.shape, self.psf, self.read_var)
            for gi, g in enumerate(groups):
                if p == 0:
                    self.refit(g, fits, gi, state)
                    continue
                # refit where the other clusters' light moved by more than refit_tol noise sigmas in a pixel
                moved = ((g.fixed - before[gi]).abs() * fits[gi][1].rsqrt() * g.mask).amax((0, 1)) > refit_tol
                cols = torch.nonzero(moved, as_tuple=True)[0]
                if len(cols):
                    self.refit(g, fits, gi, state, cols)
        return fits

    def fallback(self, groups, fits, state, max_shift, min_e):
        """Runaways back to the seed (flagged), their clusters refitted with those positions held."""
        bad = mle.runaways(state, max_shift, min_e)
        if not bool(bad.any()):
            return
        state.ok &= ~bad
        state.frozen |= bad
        state.x, state.y = torch.where(bad, state.x0, state.x), torch.where(bad, state.y0, state.y)
        lost = bad & ~(torch.isfinite(state.n) & (state.n > min_e))
        state.n = torch.where(lost, torch.full_like(state.n, max(min_e, 1.0)), state.n)
        state.b = torch.nan_to_num(state.b, nan=0.0, posinf=0.0).clamp_min(0.0)
        mle.fixed_light(groups, state, self.shape, self.psf, self.read_var)
        for gi, g in enumerate(groups):
            cols = torch.nonzero((bad[g.idx] & g.real).any(0), as_tuple=True)[0]
            if len(cols):
                self.refit(g, fits, gi, state, cols)
                # the bound treats the held positions as unknown, like every other
                fits[gi][0][..., cols], fits[gi][1][..., cols] = mle.fisher_at(g.subset(cols), state, self.psf)
        again = mle.runaways(state, max_shift, min_e) & ~state.frozen
        state.ok &= ~again
        state.x, state.y = torch.where(again, state.x0, state.x), torch.where(again, state.y0, state.y)
        state.n = torch.nan_to_num(state.n, nan=max(min_e, 1.0)).clamp_min(1e-3)
