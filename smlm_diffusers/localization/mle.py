"""The Poisson maximum-likelihood engine of every fit on camera frames: one Levenberg-Marquardt core
(:func:`levenberg_marquardt`, serving the batched frame fit of clusters below, the configurations of
:mod:`.weighing` and the one-emitter 2D / 3D spot fits of :mod:`.spot_fit`), the frame fit's clusters,
windows and starts, and the conversions its callers share (frames to d', the seeds of a pair).

Frame fit (the model and its equations are in :mod:`.refine`'s docstring). Clusters with the same number
of members K form a group, fitted in windows of one size; window tensors are [Rh, Rw, G] and per-member
tensors [K, G], with the cluster axis G last so that every elementwise product runs along one long
contiguous axis. Parameters are ordered (x_1..x_K, y_1..y_K, N_1..N_K, b), P = 3K + 1; positions in window
pixels, photons and background in photo-electrons. The PSF is a :class:`~smlm_diffusers.optics.PSF`: a
separable one (the Gaussians) through its 1D profiles, any other through its pixel fractions and their
derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..fisher import inverse_diagonal
from ..optics.psf import PSF, as_psf
from ..simulation.camera import Camera

MAX_STEP_PX = 1.0  # per-iteration trust region of a position


# -- the Levenberg-Marquardt core ---------------------------------------------------------------------------
def solve_damped(hess, rhs, lam=None):
    """Solutions [P, G] of (H + lam diag H) z = rhs, Marquardt-scaled (unit diagonal), for H [P, P, G]."""
    h = hess.permute(2, 0, 1)
    s = torch.diagonal(h, dim1=-2, dim2=-1).clamp_min(1e-12).rsqrt()
    a = h * s.unsqueeze(-1) * s.unsqueeze(-2)
    if lam is not None:
        a = a + torch.diag_embed(lam.unsqueeze(-1).expand_as(s))
    z = torch.linalg.solve_ex(a, (rhs.T * s).unsqueeze(-1))[0].squeeze(-1) * s
    return torch.nan_to_num(z).T


def levenberg_marquardt(problem, theta, n_iter: int):
    """Levenberg-Marquardt on the Fisher-scoring Hessian for a batch of independent problems at once.

    ``theta`` [P, G]: parameters of G problems (the batch axis last). ``problem`` gives
    ``evaluate(theta)`` -> (NLL [G], gradient [P, G], Fisher matrix [P, P, G], a model [..., G] or None),
    ``propose(theta, step)`` -> the trial parameters (trust region, bounds), ``free`` ([P, G] 1 where a
    parameter moves, or None), ``converged(theta, step)`` -> [G] bool or None, and ``subset(keep)`` -> the
    problem on the columns ``keep`` (a converged problem leaves the working set). A trial is taken where its
    NLL is not above the current one (the damping falls fivefold), else the damping grows fivefold.
    Returns theta, NLL, Fisher matrices and models at the result.
    """
    nll, grad, hess, model = problem.evaluate(theta)
    theta = theta.clone()
    out_hess = hess.clone()
    out_model = None if model is None else model.clone()
    act = torch.arange(theta.shape[-1], device=theta.device)
    sub, ta, lam = problem, theta, torch.full_like(nll, 1e-3)
    for _ in range(n_iter):
        step = -solve_damped(hess, grad, lam)
        if sub.free is not None:
            step = step * sub.free
        small = sub.converged(ta, step)
        if small is not None and bool(small.any()):  # converged problems leave the working set
            done = act[small]
            theta[:, done], out_hess[..., done] = ta[:, small], hess[..., small]
            if model is not None:
                out_model[..., done] = model[..., small]
            keep = ~small
            act, sub, ta, lam = act[keep], sub.subset(keep), ta[:, keep], lam[keep]
            grad, hess, step = grad[:, keep], hess[..., keep], step[:, keep]
            model = None if model is None else model[..., keep]
            if len(act) == 0:
                break
        trial = sub.propose(ta, step)
        nll_n, grad_n, hess_n, model_n = sub.evaluate(trial)
        cur = nll[act]
        better = nll_n <= cur  # NaN is never better
        ta, nll[act] = torch.where(better, trial, ta), torch.where(better, nll_n, cur)
        grad, hess = torch.where(better, grad_n, grad), torch.where(better, hess_n, hess)
        if model is not None:
            model = torch.where(better, model_n, model)
        lam = torch.where(better, lam * 0.2, lam * 5.0).clamp(1e-7, 1e7)
    theta[:, act], out_hess[..., act] = ta, hess
    if model is not None:
        out_model[..., act] = model
    return theta, nll, out_hess, out_model


def crlb_diag(hess):
    """Diagonal [P, G] of the inverse Fisher matrices [P, P, G] (:func:`smlm_diffusers.fisher.inverse_diagonal`)."""
    return inverse_diagonal(hess.permute(2, 0, 1)).T


# -- the frame fit's clusters ---------------------------------------------------------------------------------
@dataclass
class Group:
    """Clusters with K members each, in windows of one size [Rh, Rw]."""

    cids: np.ndarray  # [G] cluster labels
    idx: torch.Tensor  # [K, G] molecule rows (padding repeats the first member)
    real: torch.Tensor  # [K, G] bool
    frame: torch.Tensor  # [G]
    r0: torch.Tensor  # [G] window origin, rows (pixels)
    c0: torch.Tensor  # [G] window origin, columns
    data: torch.Tensor  # [Rh, Rw, G] d' = electrons + r^2 (each pixel's r^2 = sigma_k^2 / g_k^2), >= 0
    mask: torch.Tensor  # [Rh, Rw, G] 1 inside the frame
    fixed: torch.Tensor | None = None  # [Rh, Rw, G] L + r^2

    def subset(self, cols) -> Group:
        fixed = None if self.fixed is None else self.fixed[..., cols]
        cids = self.cids[cols.cpu().numpy()] if isinstance(cols, torch.Tensor) else self.cids[cols]
        return Group(cids, self.idx[:, cols], self.real[:, cols], self.frame[cols], self.r0[cols], self.c0[cols],
                     self.data[..., cols], self.mask[..., cols], fixed)


@dataclass
class State:
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


def window_fractions(psf: PSF, x, y, rh: int, rw: int, derivatives: bool = False):
    """PSF pixel fractions [K, Rh, Rw, G] of members at window positions ``x, y`` [K, G] (with
    ``derivatives`` also d/dx, d/dy, each [K, Rh, Rw, G]); the separable fast path multiplies 1D profiles."""
    if psf.separable:
        if not derivatives:
            ex, ey = (v.transpose(-1, -2).contiguous() for v in psf.profiles(x, y, (rh, rw)))
            return ey.unsqueeze(2) * ex.unsqueeze(1)  # contiguous [K, Rh, Rw, G]: G the inner axis
        (ex, dex), (ey, dey) = psf.profiles(x, y, (rh, rw), derivatives=True)
        ex, dex, ey, dey = (v.transpose(-1, -2).contiguous() for v in (ex, dex, ey, dey))
        return ey.unsqueeze(2) * ex.unsqueeze(1), (ex, dex, ey, dey)
    if not derivatives:
        return psf.fractions(x, y, (rh, rw)).permute(0, 2, 3, 1).contiguous()
    frac, d = psf.fractions(x, y, (rh, rw), derivatives=True)
    return tuple(v.permute(0, 2, 3, 1).contiguous() for v in (frac, d["x"], d["y"]))


def objective(g: Group, x, y, n, b, ff, psf: PSF, grad=True):
    """NLL [G] of eq. 7; with ``grad`` also its gradient [P, G] and Fisher-scoring Hessian [P, P, G] (eq. 14)
    in the parameters (x_1..x_K, y_1..y_K, N_1..N_K, b); ``ff`` [P, G] is 1 where a parameter is free.
    Returns nll, grad, hess, mu' [Rh, Rw, G], member PSFs [K, Rh, Rw, G]."""
    k, n_g = x.shape
    rh, rw = g.data.shape[:2]
    if not grad:
        psf_k = window_fractions(psf, x, y, rh, rw)
    else:
        psf_k, *parts = window_fractions(psf, x, y, rh, rw, derivatives=True)
    mu = (n[:, None, None] * psf_k).sum(0).add_(b).add_(g.fixed).clamp_min_(1e-6)
    nll = (g.mask * (mu - g.data * torch.log(mu))).sum((0, 1))
    if not grad:
        return nll, None, None, mu, psf_k
    p = 3 * k + 1
    jac = torch.empty((p, rh, rw, n_g), dtype=mu.dtype, device=mu.device)
    if psf.separable:  # the products of profiles, never the [K, Rh, Rw, G] derivatives themselves
        (ex, dex, ey, dey), = parts
        torch.mul(((n * ff[:k]).unsqueeze(1) * ey).unsqueeze(2), dex.unsqueeze(1), out=jac[:k])
        torch.mul(((n * ff[k:2 * k]).unsqueeze(1) * dey).unsqueeze(2), ex.unsqueeze(1), out=jac[k:2 * k])
    else:
        dx, dy = parts
        torch.mul((n * ff[:k])[:, None, None], dx, out=jac[:k])
        torch.mul((n * ff[k:2 * k])[:, None, None], dy, out=jac[k:2 * k])
    torch.mul(psf_k, ff[2 * k:3 * k, None, None], out=jac[2 * k:3 * k])
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
    return nll, gradient, hess, mu, psf_k


@dataclass
class _GroupProblem:
    """A group's clusters as :func:`levenberg_marquardt` problems; theta = (x [K], y [K], N [K], b)."""

    g: Group
    free: torch.Tensor  # [P, G] float
    psf: PSF
    k: int
    tol_px: float

    def evaluate(self, theta):
        k = self.k
        nll, grad, hess, mu, _ = objective(self.g, theta[:k], theta[k:2 * k], theta[2 * k:3 * k], theta[-1],
                                           self.free, self.psf)
        return nll, grad, hess, mu

    def converged(self, theta, step):
        k = self.k
        dpos = step[:2 * k].clamp(-MAX_STEP_PX, MAX_STEP_PX)
        return (dpos.abs().amax(0) < self.tol_px) & ((step[2 * k:3 * k].abs() - 1e-3 * theta[2 * k:3 * k]).amax(0)
                                                     < 1e-3)

    def propose(self, theta, step):
        k = self.k
        rh, rw = self.g.data.shape[:2]
        dpos = step[:2 * k].clamp(-MAX_STEP_PX, MAX_STEP_PX)
        n = theta[2 * k:3 * k]
        return torch.cat([(theta[:k] + dpos[:k]).clamp(-0.5, rw + 0.5),
                          (theta[k:2 * k] + dpos[k:]).clamp(-0.5, rh + 0.5),
                          torch.maximum(n + step[2 * k:3 * k], 0.1 * n),  # photons and background stay positive
                          torch.maximum(theta[-1:] + step[-1:], 0.1 * theta[-1:])])

    def subset(self, keep):
        return _GroupProblem(self.g.subset(keep), self.free[:, keep], self.psf, self.k, self.tol_px)


def fit_group(g: Group, x, y, n, b, free, psf, n_iter, tol_px=5e-3):
    """Levenberg-Marquardt for every cluster of a group at once (window pixels). A cluster leaves the working
    set once its proposed step is below ``tol_px`` in position and 1e-3 relative in photons; the others go on,
    at most ``n_iter`` iterations. Returns x, y, n, b, the NLL, the Fisher matrix and the model mu' at the
    result."""
    k = x.shape[0]
    problem = _GroupProblem(g, free.to(x.dtype), as_psf(psf), k, tol_px)
    theta, nll, hess, mu = levenberg_marquardt(problem, torch.cat([x, y, n, b[None]]), n_iter)
    return theta[:k], theta[k:2 * k], theta[2 * k:3 * k], theta[-1], nll, hess, mu


def clusters(frame, x, y, link_px, max_cluster) -> np.ndarray:
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


def gather(img, frame, r0, c0, rh, rw):
    """Windows [rh, rw, G] of frames [F, H, W] at origins (r0, c0), and their inside-the-frame mask."""
    h, w = img.shape[-2:]
    rows = r0 + torch.arange(rh, device=img.device)[:, None]
    cols = c0 + torch.arange(rw, device=img.device)[:, None]
    mask = ((rows >= 0) & (rows < h)).unsqueeze(1) & ((cols >= 0) & (cols < w)).unsqueeze(0)
    out = img[frame, rows.clamp(0, h - 1).unsqueeze(1), cols.clamp(0, w - 1).unsqueeze(0)]
    return out * mask, mask.to(img.dtype)


def fit_window(psf) -> int:
    """Margin (pixels) of a fit window around its molecules' pixels: ``ceil(3 sigma)`` of the PSF."""
    return int(math.ceil(3.0 * as_psf(psf).sigma_px))


def cluster_boxes(labels, rows, cols, n_clusters: int):
    """Each cluster's bounding box of its molecules' pixels: (rmin, rmax, cmin, cmax), each [n_clusters]; a fit
    window is the box plus the margin :func:`fit_window` on every side."""
    rmin, rmax = np.full(n_clusters, 1 << 30), np.full(n_clusters, -(1 << 30))
    cmin, cmax = rmin.copy(), rmax.copy()
    np.minimum.at(rmin, labels, rows), np.maximum.at(rmax, labels, rows)
    np.minimum.at(cmin, labels, cols), np.maximum.at(cmax, labels, cols)
    return rmin, rmax, cmin, cmax


def groups_of(labels, state: State, electrons, roi, half) -> list[Group]:
    """Pack clusters by member count; window = the seeds' bounding box plus ``half`` (centred in the
    group's largest box). ``roi`` = (rows, cols) of the seeds' floor pixel per molecule."""
    dev = electrons.device
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rmin, rmax, cmin, cmax = cluster_boxes(labels, *roi, len(counts))
    frame_of = np.zeros(len(counts), np.int64)
    frame_of[labels] = host(state.frame)
    out = []
    for k in np.unique(counts):
        cids = np.flatnonzero(counts == k)
        idx = order[starts[cids][None, :] + np.arange(k)[:, None]]
        hh, ww = rmax[cids] - rmin[cids] + 1 + 2 * half, cmax[cids] - cmin[cids] + 1 + 2 * half
        rh, rw = int(hh.max()), int(ww.max())
        r0 = torch.as_tensor(rmin[cids] - half - (rh - hh) // 2, device=dev)
        c0 = torch.as_tensor(cmin[cids] - half - (rw - ww) // 2, device=dev)
        frame = torch.as_tensor(frame_of[cids], device=dev)
        data, mask = gather(electrons, frame, r0, c0, rh, rw)
        out.append(Group(cids, torch.as_tensor(idx, device=dev), torch.ones(idx.shape, dtype=torch.bool, device=dev),
                         frame, r0, c0, data, mask))
    return out


def local(g: Group, state: State):
    """Window-local x, y [K, G], photons [K, G] (0 in padding slots) and background [G] of a group."""
    return (state.x[g.idx] - g.c0, state.y[g.idx] - g.r0, state.n[g.idx] * g.real, state.b[g.idx[0]])


def store(g: Group, state: State, x, y, n, b):
    sel = g.idx[g.real]
    state.x[sel], state.y[sel] = (x + g.c0)[g.real], (y + g.r0)[g.real]
    state.n[sel], state.b[sel] = n[g.real], b.expand_as(x)[g.real]


def free_mask(real, frozen):
    """[P, G] bool: which of (x, y, N of each member, b) a fit moves (positions of ``frozen`` members held)."""
    return torch.cat([real & ~frozen, real & ~frozen, real, torch.ones_like(real[:1])], dim=0)


def own_light(g: Group, x, y, n, psf):
    """Member PSFs [K, Rh, Rw, G] and their light ``sum N PSF`` [Rh, Rw, G] on a group's windows."""
    rh, rw = g.data.shape[:2]
    psf_k = window_fractions(as_psf(psf), x, y, rh, rw)
    return psf_k, (n[:, None, None] * psf_k).sum(0)


def window_var(read_var, g: Group):
    """The read-noise variance (photo-electrons^2) on a group's windows: [Rh, Rw, G] cut from a per-pixel map
    [H, W] (an sCMOS camera's ``sigma_k^2 / g_k^2``; 0 outside the frame, where the mask holds), else the float."""
    if not isinstance(read_var, torch.Tensor):
        return read_var
    rh, rw = g.data.shape[:2]
    return gather(read_var[None], torch.zeros_like(g.frame), g.r0, g.c0, rh, rw)[0]


def render_frames(psf, shape, frame, x, y, n, n_frames=None) -> torch.Tensor:
    """Light (photo-electrons) of molecules (tensors: ``frame`` indices, ``x, y`` pixels, ``n`` photons) on
    full frames [F, H, W]; F is ``n_frames`` or the last frame + 1."""
    n_frames = int(frame.max()) + 1 if n_frames is None else int(n_frames)
    order = torch.argsort(frame, stable=True)
    counts = torch.bincount(frame, minlength=n_frames)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    rank = torch.arange(len(frame), device=frame.device) - (torch.cumsum(counts, 0) - counts)[frame[order]]
    xs = torch.zeros(n_frames, width, dtype=x.dtype, device=x.device)
    ys, ns = xs.clone(), xs.clone()
    fo = frame[order]
    xs[fo, rank], ys[fo, rank], ns[fo, rank] = x[order], y[order], n[order]
    return as_psf(psf).render(xs, ys, ns, tuple(shape))


def fixed_light(groups, state: State, shape, psf, read_var):
    """Light of every molecule outside each window's cluster, from the current state (electrons) + r^2
    (``read_var``: the read-noise variance, a float or a per-pixel map [H, W], :func:`window_var`)."""
    full = render_frames(psf, shape, state.frame, state.x, state.y, state.n)
    for g in groups:
        x, y, n, _ = local(g, state)
        roi_full, _ = gather(full, g.frame, g.r0, g.c0, *g.data.shape[:2])
        g.fixed = (roi_full - own_light(g, x, y, n, psf)[1]).clamp_min_(0.0) + window_var(read_var, g)


def start(g: Group, state: State, psf, read_var):
    """Photons [K, G] and background [G] of each cluster by weighted least squares at the seeds, net of the
    light of other clusters where ``g.fixed`` holds it (else of the read-noise variance ``read_var``)."""
    x, y, _, _ = local(g, state)
    psf_k, _ = own_light(g, x, y, g.real.to(x.dtype), psf)
    a = torch.cat([psf_k * g.real[:, None, None], torch.ones_like(psf_k[:1])], dim=0)
    w = g.mask / g.data.clamp_min(1.0)
    aw = a * w
    lhs = (aw.unsqueeze(1) * a.unsqueeze(0)).sum((2, 3))
    idx = torch.arange(len(a), device=x.device)
    lhs[idx[:-1], idx[:-1]] += (~g.real).to(x.dtype)
    rhs = (aw * (g.data - (window_var(read_var, g) if g.fixed is None else g.fixed))).sum((1, 2))
    sol = torch.nan_to_num(torch.linalg.solve_ex(lhs.permute(2, 0, 1), rhs.T.unsqueeze(-1))[0].squeeze(-1)).T
    return sol[:-1].clamp_min(1.0), sol[-1].clamp_min(0.0)


def fisher_at(g: Group, state: State, psf):
    """Fisher matrices [P, P, G] (all members and b free) and models mu' of a group at the current state."""
    x, y, n, b = local(g, state)
    ff = free_mask(g.real, torch.zeros_like(g.real)).to(x.dtype)
    _, _, hess, mu, _ = objective(g, x, y, n, b, ff, as_psf(psf))
    return hess, mu


def assess(g: Group, state: State, fit, psf, half_dev, moments):
    """Per member [K, G]: CRLB of x, y (px^2) from the Fisher matrices ``fit = (hess, mu)``, deviance per pixel
    of its window and, with ``moments``, the centre and second moments of its light; per cluster: pixels."""
    rh, rw = g.data.shape[:2]
    x, y, n, b = local(g, state)
    k = x.shape[0]
    hess, mu = fit
    inv = crlb_diag(hess)
    dev = 2.0 * (torch.special.xlogy(g.data, g.data / mu) - (g.data - mu)) * g.mask
    rows = torch.arange(rh, device=x.device, dtype=x.dtype)[:, None]
    cols = torch.arange(rw, device=x.device, dtype=x.dtype)[:, None]
    win = ((rows - torch.floor(y).unsqueeze(1)).abs() <= half_dev).unsqueeze(2) & (
        (cols - torch.floor(x).unsqueeze(1)).abs() <= half_dev).unsqueeze(1)
    win = win * g.mask
    out = dict(crlb_x=inv[:k], crlb_y=inv[k:2 * k], deviance=(win * dev).sum((1, 2)) / win.sum((1, 2)),
               mask_pixels=g.mask.sum((0, 1)))
    if moments:
        psf_k, _ = own_light(g, x, y, n, psf)
        light = ((g.data - mu) + n[:, None, None] * psf_k).clamp_min(0.0) * win
        model = n[:, None, None] * psf_k * win  # the same moments of the fitted single PSF
        u, v = (cols + 0.5).unsqueeze(0), (rows + 0.5).unsqueeze(1)  # pixel centres [1, W, 1], [H, 1, 1]
        mass = light.sum((1, 2)).clamp_min(1e-9)
        mx, my = (light * u).sum((1, 2)) / mass, (light * v).sum((1, 2)) / mass
        du, dv = u - mx[:, None, None], v - my[:, None, None]
        out["cov"] = [(light * q).sum((1, 2)) / mass for q in (du * du, dv * dv, du * dv)]
        out["var_model"] = (model * (du * du + dv * dv)).sum((1, 2)) / model.sum((1, 2)).clamp_min(1e-9) / 2.0
        out["mx"], out["my"] = mx + g.c0, my + g.r0
    return out


def runaways(state: State, max_shift, min_photons_e):
    """Which molecules ran away: non-finite, farther than ``max_shift`` (px, per axis) from the seed, or dim."""
    bad = ~(torch.isfinite(state.x) & torch.isfinite(state.y) & torch.isfinite(state.n) & torch.isfinite(state.b))
    bad |= ((state.x - state.x0).abs() > max_shift) | ((state.y - state.y0).abs() > max_shift)
    return bad | (state.n <= min_photons_e)


def host(v: torch.Tensor) -> np.ndarray:
    return v.detach().cpu().numpy()


def per_molecule(groups, results, key, total, like):
    """Scatter a per-member result of every group into one tensor over all molecule rows (NaN elsewhere)."""
    out = torch.full((total,), float("nan"), dtype=like.dtype, device=like.device)
    for g, res in zip(groups, results):
        out[g.idx[g.real]] = res[key][g.real].to(like.dtype)
    return out


# -- what the fit's callers share ----------------------------------------------------------------------------
def camera_electrons(frames_adu, camera: Camera, dtype=torch.float64) -> torch.Tensor:
    """d' = photo-electrons + read-noise variance (eq. 6, each pixel's own offset, gain and variance with
    per-pixel maps) of frames [F, H, W] or [H, W] (ADU; a tensor stays on its device) as [F, H, W], >= 0."""
    frames = frames_adu if isinstance(frames_adu, torch.Tensor) else torch.as_tensor(np.asarray(frames_adu))
    frames = frames[None] if frames.ndim == 2 else frames
    return camera.shifted_electrons(frames.to(dtype)).clamp_min(0.0)


def pair_offsets(cxx, cyy, cxy, var_model):
    """Half the separation of a molecule tried as a pair, along the principal axis of its light: from the
    light's second moments (px^2) and a single emitter's (``var_model``), ``h = sqrt(lambda_1 - var_model)``
    (0.25 to 1.25 px). Returns (hx, hy): the pair's seeds are the centre +- (hx, hy)."""
    lam1 = 0.5 * (cxx + cyy) + torch.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    theta = 0.5 * torch.atan2(2.0 * cxy, cxx - cyy)  # principal axis of the molecule's light
    half = torch.sqrt((lam1 - var_model).clamp_min(0.0)).clamp(0.25, 1.25)
    return half * torch.cos(theta), half * torch.sin(theta)
