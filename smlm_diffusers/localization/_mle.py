"""Batched Poisson maximum-likelihood fits of clusters of molecules on camera windows (the engine of
:mod:`smlm_diffusers.localization.refine`; the model and its equations are in that module's docstring).

Layout: clusters with the same number of members K form a group, fitted in windows of one size; window
tensors are [Rh, Rw, G] and per-member tensors [K, G], with the cluster axis G last so that every
elementwise product runs along one long contiguous axis. Parameters are ordered (x_1..x_K, y_1..y_K,
N_1..N_K, b), P = 3K + 1; positions in window pixels, photons and background in photo-electrons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..optics.gaussian import integrated_gaussian
from ..simulation.psf import integrated_gaussian_1d, render_psfs

_MAX_STEP_PX = 1.0  # per-iteration trust region of a position


@dataclass
class _Group:
    """Clusters with K members each, in windows of one size [Rh, Rw]."""

    cids: np.ndarray  # [G] cluster labels
    idx: torch.Tensor  # [K, G] molecule rows (padding repeats the first member)
    real: torch.Tensor  # [K, G] bool
    frame: torch.Tensor  # [G]
    r0: torch.Tensor  # [G] window origin, rows (pixels)
    c0: torch.Tensor  # [G] window origin, columns
    data: torch.Tensor  # [Rh, Rw, G] d' = electrons + r^2, >= 0
    mask: torch.Tensor  # [Rh, Rw, G] 1 inside the frame
    fixed: torch.Tensor | None = None  # [Rh, Rw, G] L + r^2

    def subset(self, cols) -> "_Group":
        fixed = None if self.fixed is None else self.fixed[..., cols]
        cids = self.cids[cols.cpu().numpy()] if isinstance(cols, torch.Tensor) else self.cids[cols]
        return _Group(cids, self.idx[:, cols], self.real[:, cols], self.frame[cols], self.r0[cols], self.c0[cols],
                      self.data[..., cols], self.mask[..., cols], fixed)


@dataclass
class _State:
    """Per molecule, global pixels and photo-electrons."""

    x: torch.Tensor
    y: torch.Tensor
    n: torch.Tensor
    b: torch.Tensor
    x0: torch.Tensor  # seeds
    y0: torch.Tensor
    frame: torch.Tensor
    ok: torch.Tensor
    frozen: torch.Tensor  # position held at the seed (a fallback)

    def extend(self, **new):
        for k, v in new.items():
            setattr(self, k, torch.cat([getattr(self, k), v]))


def _profiles(c, n_pix, sigma, derivative=True):
    """Pixel fractions [K, n_pix, G] (and their derivatives) of positions ``c`` [K, G]: the simulator's PSF."""
    if not derivative:
        return integrated_gaussian_1d(c, n_pix, sigma).transpose(-1, -2).contiguous()
    e, de, _ = integrated_gaussian(c, n_pix, sigma, derivatives=True)
    return e.transpose(-1, -2).contiguous(), de.transpose(-1, -2).contiguous()


def _objective(g: _Group, x, y, n, b, ff, sigma, grad=True):
    """NLL [G] of eq. 7; with ``grad`` also its gradient [P, G] and Fisher-scoring Hessian [P, P, G] (eq. 14)
    in the parameters (x_1..x_K, y_1..y_K, N_1..N_K, b); ``ff`` [P, G] is 1 where a parameter is free.
    Returns nll, grad, hess, mu' [Rh, Rw, G], member PSFs [K, Rh, Rw, G]."""
    k, n_g = x.shape
    rh, rw = g.data.shape[:2]
    (ex, dex), (ey, dey) = _profiles(x, rw, sigma), _profiles(y, rh, sigma)
    psf = ey.unsqueeze(2) * ex.unsqueeze(1)
    mu = (n[:, None, None] * psf).sum(0).add_(b).add_(g.fixed).clamp_min_(1e-6)
    nll = (g.mask * (mu - g.data * torch.log(mu))).sum((0, 1))
    if not grad:
        return nll, None, None, mu, psf
    p = 3 * k + 1
    jac = torch.empty((p, rh, rw, n_g), dtype=mu.dtype, device=mu.device)
    torch.mul(((n * ff[:k]).unsqueeze(1) * ey).unsqueeze(2), dex.unsqueeze(1), out=jac[:k])
    torch.mul(((n * ff[k:2 * k]).unsqueeze(1) * dey).unsqueeze(2), ex.unsqueeze(1), out=jac[k:2 * k])
    torch.mul(psf, ff[2 * k:3 * k, None, None], out=jac[2 * k:3 * k])
    jac[-1] = ff[-1]
    w = g.mask / mu
    gradient = (jac * (g.mask - g.data * w)).sum((1, 2))
    jw = jac * w
    if n_g <= 128:  # few clusters: one batched matrix product
        jg = jac.flatten(1, 2).permute(2, 0, 1).contiguous()
        hess = torch.bmm(jw.flatten(1, 2).permute(2, 0, 1).contiguous(), jg.transpose(1, 2)).permute(1, 2, 0)
    else:  # many: products over the long cluster axis, one row of the symmetric matrix at a time
        hess = torch.empty((p, p, n_g), dtype=mu.dtype, device=mu.device)
        for i in range(p):
            hess[i, i:] = (jw[i] * jac[i:]).sum((1, 2))
            hess[i + 1:, i] = hess[i, i + 1:]
    idx = torch.arange(p, device=mu.device)
    hess[idx, idx] += 1.0 - ff  # frozen parameters: unit diagonal, zero step
    return nll, gradient, hess, mu, psf


def _solve(hess, rhs, lam=None):
    """Solutions [P, G] of (H + lam diag H) z = rhs, Marquardt-scaled (unit diagonal), for H [P, P, G]."""
    h = hess.permute(2, 0, 1)
    s = torch.diagonal(h, dim1=-2, dim2=-1).clamp_min(1e-12).rsqrt()
    a = h * s.unsqueeze(-1) * s.unsqueeze(-2)
    if lam is not None:
        a = a + torch.diag_embed(lam.unsqueeze(-1).expand_as(s))
    z = torch.linalg.solve_ex(a, (rhs.T * s).unsqueeze(-1))[0].squeeze(-1) * s
    return torch.nan_to_num(z).T


def _crlb_diag(hess):
    """Diagonal [P, G] of the inverse Fisher matrices [P, P, G] (unit-diagonal scaling, as fisher.crlb)."""
    h = hess.permute(2, 0, 1)
    s = torch.diagonal(h, dim1=-2, dim2=-1).clamp_min(1e-12).rsqrt()
    inv = torch.linalg.inv_ex(h * s.unsqueeze(-1) * s.unsqueeze(-2))[0]
    return (torch.diagonal(inv, dim1=-2, dim2=-1) * s * s).T


def _lm(g: _Group, x, y, n, b, free, sigma, n_iter, tol_px=5e-3):
    """Levenberg-Marquardt on the Fisher-scoring Hessian for every cluster of a group at once (window pixels).
    A cluster leaves the working set once its proposed step is below ``tol_px`` in position and 1e-3
    relative in photons; the others go on, at most ``n_iter`` iterations. Returns x, y, n, b, the NLL, the
    Fisher matrix and the model mu' at the result."""
    k = x.shape[0]
    rh, rw = g.data.shape[:2]
    x, y, n, b = x.clone(), y.clone(), n.clone(), b.clone()
    ff = free.to(x.dtype)
    nll, grad, hess, mu, _ = _objective(g, x, y, n, b, ff, sigma)
    out_hess, out_mu = hess.clone(), mu.clone()
    act = torch.arange(len(b), device=b.device)
    sub, xa, ya, na, ba, lam = g, x, y, n, b, torch.full_like(b, 1e-3)
    for _ in range(n_iter):
        step = -_solve(hess, grad, lam) * ff
        dpos = step[:2 * k].clamp(-_MAX_STEP_PX, _MAX_STEP_PX)
        small = (dpos.abs().amax(0) < tol_px) & ((step[2 * k:3 * k].abs() - 1e-3 * na).amax(0) < 1e-3)
        if bool(small.any()):  # converged clusters leave the working set
            done = act[small]
            x[:, done], y[:, done], n[:, done], b[done] = xa[:, small], ya[:, small], na[:, small], ba[small]
            out_hess[..., done], out_mu[..., done] = hess[..., small], mu[..., small]
            keep = ~small
            act, sub, ff = act[keep], sub.subset(keep), ff[:, keep]
            xa, ya, na, ba, lam = xa[:, keep], ya[:, keep], na[:, keep], ba[keep], lam[keep]
            grad, hess, mu, step, dpos = grad[:, keep], hess[..., keep], mu[..., keep], step[:, keep], dpos[:, keep]
            if len(act) == 0:
                break
        xn = (xa + dpos[:k]).clamp(-0.5, rw + 0.5)
        yn = (ya + dpos[k:]).clamp(-0.5, rh + 0.5)
        nn = torch.maximum(na + step[2 * k:3 * k], 0.1 * na)  # photons and background stay positive
        bn = torch.maximum(ba + step[-1], 0.1 * ba)
        nll_n, grad_n, hess_n, mu_n, _ = _objective(sub, xn, yn, nn, bn, ff, sigma)
        cur = nll[act]
        better = nll_n <= cur  # NaN is never better
        xa, ya, na = torch.where(better, xn, xa), torch.where(better, yn, ya), torch.where(better, nn, na)
        ba, nll[act] = torch.where(better, bn, ba), torch.where(better, nll_n, cur)
        grad, hess = torch.where(better, grad_n, grad), torch.where(better, hess_n, hess)
        mu = torch.where(better, mu_n, mu)
        lam = torch.where(better, lam * 0.2, lam * 5.0).clamp(1e-7, 1e7)
    x[:, act], y[:, act], n[:, act], b[act] = xa, ya, na, ba
    out_hess[..., act], out_mu[..., act] = hess, mu
    return x, y, n, b, nll, out_hess, out_mu


def _clusters(frame, x, y, link_px, max_cluster) -> np.ndarray:
    """Cluster label per molecule: connected components of links shorter than ``link_px`` within a frame;
    a component over ``max_cluster`` molecules is cut with shorter links (nested, so labels agree)."""
    m = len(x)
    pts = np.c_[x, y, frame * (4.0 * link_px + 10.0)]
    pairs = cKDTree(pts).query_pairs(link_px, output_type="ndarray")
    dist = np.hypot(x[pairs[:, 0]] - x[pairs[:, 1]], y[pairs[:, 0]] - y[pairs[:, 1]])
    labels, done, offset = np.arange(m), np.zeros(m, bool), 0
    for t in link_px * np.array([1.0, 0.8, 0.6, 0.4, 0.2]):
        keep = dist < t
        graph = coo_matrix((np.ones(keep.sum()), (pairs[keep, 0], pairs[keep, 1])), shape=(m, m))
        _, lab = connected_components(graph, directed=False)
        take = ~done & (np.bincount(lab)[lab] <= max_cluster)
        labels[take], done[take] = lab[take] + offset, True
        offset += m
    labels[~done] = offset + np.flatnonzero(~done)
    return np.unique(labels, return_inverse=True)[1]


def _gather(img, frame, r0, c0, rh, rw):
    """Windows [rh, rw, G] of frames [F, H, W] at origins (r0, c0), and their inside-the-frame mask."""
    h, w = img.shape[-2:]
    rows = r0 + torch.arange(rh, device=img.device)[:, None]
    cols = c0 + torch.arange(rw, device=img.device)[:, None]
    mask = ((rows >= 0) & (rows < h)).unsqueeze(1) & ((cols >= 0) & (cols < w)).unsqueeze(0)
    out = img[frame, rows.clamp(0, h - 1).unsqueeze(1), cols.clamp(0, w - 1).unsqueeze(0)]
    return out * mask, mask.to(img.dtype)


def _groups(labels, state: _State, electrons, roi, half) -> list[_Group]:
    """Pack clusters by member count; window = the seeds' bounding box plus ``half`` (centred in the
    group's largest box). ``roi`` = (rows, cols) of the seeds' floor pixel per molecule."""
    dev = electrons.device
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    ri, ci = roi
    rmin, rmax = np.full(len(counts), 1 << 30), np.full(len(counts), -(1 << 30))
    cmin, cmax = rmin.copy(), rmax.copy()
    np.minimum.at(rmin, labels, ri), np.maximum.at(rmax, labels, ri)
    np.minimum.at(cmin, labels, ci), np.maximum.at(cmax, labels, ci)
    frame_of = np.zeros(len(counts), np.int64)
    frame_of[labels] = _host(state.frame)
    out = []
    for k in np.unique(counts):
        cids = np.flatnonzero(counts == k)
        idx = order[starts[cids][None, :] + np.arange(k)[:, None]]
        hh, ww = rmax[cids] - rmin[cids] + 1 + 2 * half, cmax[cids] - cmin[cids] + 1 + 2 * half
        rh, rw = int(hh.max()), int(ww.max())
        r0 = torch.as_tensor(rmin[cids] - half - (rh - hh) // 2, device=dev)
        c0 = torch.as_tensor(cmin[cids] - half - (rw - ww) // 2, device=dev)
        frame = torch.as_tensor(frame_of[cids], device=dev)
        data, mask = _gather(electrons, frame, r0, c0, rh, rw)
        out.append(_Group(cids, torch.as_tensor(idx, device=dev), torch.ones(idx.shape, dtype=torch.bool, device=dev),
                          frame, r0, c0, data, mask))
    return out


def _local(g: _Group, state: _State):
    """Window-local x, y [K, G], photons [K, G] (0 in padding slots) and background [G] of a group."""
    return (state.x[g.idx] - g.c0, state.y[g.idx] - g.r0, state.n[g.idx] * g.real, state.b[g.idx[0]])


def _store(g: _Group, state: _State, x, y, n, b):
    sel = g.idx[g.real]
    state.x[sel], state.y[sel] = (x + g.c0)[g.real], (y + g.r0)[g.real]
    state.n[sel], state.b[sel] = n[g.real], b.expand_as(x)[g.real]


def _free(real, frozen):
    return torch.cat([real & ~frozen, real & ~frozen, real, torch.ones_like(real[:1])], dim=0)


def _own_light(g: _Group, x, y, n, sigma):
    rh, rw = g.data.shape[:2]
    psf = _profiles(y, rh, sigma, False).unsqueeze(2) * _profiles(x, rw, sigma, False).unsqueeze(1)
    return psf, (n[:, None, None] * psf).sum(0)


def _fixed_light(groups, state: _State, shape, sigma, read_noise):
    """Light of every molecule outside each window's cluster, from the current state (electrons) + r^2."""
    f_all = state.frame
    n_frames = int(f_all.max()) + 1
    order = torch.argsort(f_all, stable=True)
    counts = torch.bincount(f_all, minlength=n_frames)
    rank = torch.arange(len(f_all), device=f_all.device) - (torch.cumsum(counts, 0) - counts)[f_all[order]]
    xs = torch.zeros(n_frames, int(counts.max()), dtype=state.x.dtype, device=state.x.device)
    ys, ns = xs.clone(), xs.clone()
    fo = f_all[order]
    xs[fo, rank], ys[fo, rank], ns[fo, rank] = state.x[order], state.y[order], state.n[order]
    full = render_psfs(xs, ys, ns, shape, sigma)
    for g in groups:
        x, y, n, _ = _local(g, state)
        roi_full, _ = _gather(full, g.frame, g.r0, g.c0, *g.data.shape[:2])
        g.fixed = (roi_full - _own_light(g, x, y, n, sigma)[1]).clamp_min_(0.0) + read_noise**2


def _start(g: _Group, state: _State, sigma, read_noise):
    """Photons [K, G] and background [G] of each cluster by weighted least squares at the seeds, net of the
    light of other clusters where ``g.fixed`` holds it."""
    x, y, _, _ = _local(g, state)
    psf, _ = _own_light(g, x, y, g.real.to(x.dtype), sigma)
    a = torch.cat([psf * g.real[:, None, None], torch.ones_like(psf[:1])], dim=0)
    w = g.mask / g.data.clamp_min(1.0)
    aw = a * w
    lhs = (aw.unsqueeze(1) * a.unsqueeze(0)).sum((2, 3))
    idx = torch.arange(len(a), device=x.device)
    lhs[idx[:-1], idx[:-1]] += (~g.real).to(x.dtype)
    rhs = (aw * (g.data - (read_noise**2 if g.fixed is None else g.fixed))).sum((1, 2))
    sol = torch.nan_to_num(torch.linalg.solve_ex(lhs.permute(2, 0, 1), rhs.T.unsqueeze(-1))[0].squeeze(-1)).T
    return sol[:-1].clamp_min(1.0), sol[-1].clamp_min(0.0)


def _fisher(g: _Group, state: _State, sigma):
    """Fisher matrices [P, P, G] (all members and b free) and models mu' of a group at the current state."""
    x, y, n, b = _local(g, state)
    _, _, hess, mu, _ = _objective(g, x, y, n, b, _free(g.real, torch.zeros_like(g.real)).to(x.dtype), sigma)
    return hess, mu


def _assess(g: _Group, state: _State, fit, sigma, half_dev, moments):
    """Per member [K, G]: CRLB of x, y (px^2) from the Fisher matrices ``fit = (hess, mu)``, deviance per pixel
    of its window and, with ``moments``, the centre and second moments of its light; per cluster: pixels."""
    rh, rw = g.data.shape[:2]
    x, y, n, b = _local(g, state)
    k = x.shape[0]
    hess, mu = fit
    inv = _crlb_diag(hess)
    dev = 2.0 * (torch.special.xlogy(g.data, g.data / mu) - (g.data - mu)) * g.mask
    rows = torch.arange(rh, device=x.device, dtype=x.dtype)[:, None]
    cols = torch.arange(rw, device=x.device, dtype=x.dtype)[:, None]
    win = ((rows - torch.floor(y).unsqueeze(1)).abs() <= half_dev).unsqueeze(2) & (
        (cols - torch.floor(x).unsqueeze(1)).abs() <= half_dev).unsqueeze(1)
    win = win * g.mask
    out = dict(crlb_x=inv[:k], crlb_y=inv[k:2 * k], deviance=(win * dev).sum((1, 2)) / win.sum((1, 2)),
               mask_pixels=g.mask.sum((0, 1)))
    if moments:
        psf, _ = _own_light(g, x, y, n, sigma)
        light = ((g.data - mu) + n[:, None, None] * psf).clamp_min(0.0) * win
        model = n[:, None, None] * psf * win  # the same moments of the fitted single PSF
        u, v = (cols + 0.5).unsqueeze(0), (rows + 0.5).unsqueeze(1)  # pixel centres [1, W, 1], [H, 1, 1]
        mass = light.sum((1, 2)).clamp_min(1e-9)
        mx, my = (light * u).sum((1, 2)) / mass, (light * v).sum((1, 2)) / mass
        du, dv = u - mx[:, None, None], v - my[:, None, None]
        out["cov"] = [(light * q).sum((1, 2)) / mass for q in (du * du, dv * dv, du * dv)]
        out["var_model"] = (model * (du * du + dv * dv)).sum((1, 2)) / model.sum((1, 2)).clamp_min(1e-9) / 2.0
        out["mx"], out["my"] = mx + g.c0, my + g.r0
    return out


def _check(state: _State, max_shift, min_photons_e):
    bad = ~(torch.isfinite(state.x) & torch.isfinite(state.y) & torch.isfinite(state.n) & torch.isfinite(state.b))
    bad |= ((state.x - state.x0).abs() > max_shift) | ((state.y - state.y0).abs() > max_shift)
    return bad | (state.n <= min_photons_e)


def _host(v: torch.Tensor) -> np.ndarray:
    return v.detach().cpu().numpy()


def _per_molecule(groups, results, key, total, like):
    """Scatter a per-member result of every group into one tensor over all molecule rows (NaN elsewhere)."""
    out = torch.full((total,), float("nan"), dtype=like.dtype, device=like.device)
    for g, res in zip(groups, results):
        out[g.idx[g.real]] = res[key][g.real].to(like.dtype)
    return out
