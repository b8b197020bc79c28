"""Least-squares fit of pixel-integrated Gaussians to KDE windows, vectorized over windows.

The refinement of :func:`smlm_diffusers.localization.peaks.localize_kde` fits, in every
``w x w`` window around a KDE peak, the model

    M[i, j] = A * Ey[i] * Ex[j] + b,   E[k] = integral over pixel [k, k + 1) of N(centre, s^2),

with parameters theta = (A, b, x, y, s) (upsampled pixels, window coordinates, edge
convention). The model and every column of its Jacobian are sums of outer products of
one-dimensional profiles, and the window's mask (pixels inside the image) is the outer
product of a row and a column mask, so ``J^T J`` comes from sums over rows and columns
(``w`` values) instead of over the ``w * w`` pixels; only the residual and the gradient
touch whole windows. Arrays are laid out with the window index last, so each step of the
Levenberg-Marquardt loop is a few dozen numpy operations on rows of N values, whatever N.
"""

from __future__ import annotations

import numpy as np

from ..optics.gaussian import integrated_gaussian_np

# A fit whose centre leaves the peak pixel's centre by more than this (upsampled pixels, per
# axis) has latched onto a neighbour or the offset; the centroid is then the safer answer.
MAX_SHIFT_PX = 1.0
MIN_WIDTH_PX = 0.1

# Jacobian columns as sums of separable terms: parameter -> [(scaled by A, row profile,
# column profile)], profiles 0 = E, 1 = ones, 2 = dE/dcentre, 3 = dE/dwidth.
_TERMS = {
    0: [(False, 0, 0)],  # dM/dA = Ey Ex
    1: [(False, 1, 1)],  # dM/db = 1
    2: [(True, 0, 2)],  # dM/dx = A Ey dEx/dx
    3: [(True, 2, 0)],  # dM/dy = A dEy/dy Ex
    4: [(True, 3, 0), (True, 0, 3)],  # dM/ds = A (dEy/ds Ex + Ey dEx/ds)
}

_TERM_LIST = [terms[0] for terms in _TERMS.values()] + [_TERMS[4][1]]  # parameters 0-4, then s's second
_TERM_Y = np.array([y for _, y, _ in _TERM_LIST])
_TERM_X = np.array([x for _, _, x in _TERM_LIST])


def _product_table():
    """For each upper entry (p, q) of J^T J, the products of row sums, column sums and A it adds."""
    entries, rows = [], []
    for p in range(5):
        for q in range(p, 5):
            entries.append((p, q, len(rows)))
            rows += [(yp, yq, xp, xq, int(sp) + int(sq)) for sp, yp, xp in _TERMS[p] for sq, yq, xq in _TERMS[q]]
    stops = [e[2] for e in entries[1:]] + [len(rows)]
    return [(p, q, first, stop) for (p, q, first), stop in zip(entries, stops)], np.array(rows).T


_ENTRIES, (_PY0, _PY1, _PX0, _PX1, _POW) = _product_table()


def erf_profile(centre: np.ndarray, width: np.ndarray, w: int):
    """Integrated unit Gaussian over pixels [k, k+1), k < w, and its derivatives.

    Returns (E, dE/dcentre, dE/dwidth), each [N, w]. ``g(d) = exp(-d^2 / 2s^2) / (sqrt(2 pi) s)``
    gives dE/dc = g(k - c) - g(k + 1 - c) and dE/ds = (d0 g(d0) - d1 g(d1)) / s.
    """
    e, de_dc, de_ds = _profiles(np.asarray(centre, np.float64), np.asarray(width, np.float64), w)
    return e.T, de_dc.T, de_ds.T


def _profiles(centre: np.ndarray, width: np.ndarray, w: int):
    """:func:`erf_profile` with the pixel index first: three [w, N] arrays (:mod:`smlm_diffusers.optics.gaussian`)."""
    return integrated_gaussian_np(centre, width, w)


def _axis_profiles(theta: np.ndarray, w: int):
    """Row and column profiles [4, w, N] (E, ones, dE/dcentre, dE/dwidth) for theta [5, N]."""
    n = theta.shape[1]
    e, dc, ds = _profiles(np.concatenate([theta[3], theta[2]]), np.concatenate([theta[4], theta[4]]), w)
    one = np.ones_like(e)
    both = np.stack([e, one, dc, ds])
    return both[:, :, :n], both[:, :, n:]


def _residual(theta, py, px, data, mask):
    """Masked residual [w, w, N] of the model at theta [5, N] and its cost [N]."""
    model = theta[0] * (py[0][:, None] * px[0][None]) + theta[1]
    res = (data - model) * mask
    return res, (res * res).sum((0, 1))


def solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a x = b`` for stacks a [k, k, N], b [k, N] of symmetric positive definite systems.

    Gaussian elimination without pivoting (safe for such matrices), vectorized over N: a
    5 x 5 system costs a few operations on rows of N values instead of one LAPACK call each.
    """
    a, b = a.copy(), b.copy()
    k = a.shape[0]
    for i in range(k - 1):
        f = a[i + 1:, i] / a[i, i]
        a[i + 1:, i:] -= f[:, None] * a[i, None, i:]
        b[i + 1:] -= f * b[i]
    x = np.empty_like(b)
    for i in range(k - 1, -1, -1):
        x[i] = (b[i] - (a[i, i + 1:] * x[i + 1:]).sum(0)) / a[i, i]
    return x


def _normal_equations(theta, py, px, my, mx, res):
    """``J^T J`` [5, 5, N] and ``J^T r`` [5, N] of the masked model from separable sums.

    (``einsum`` without ``optimize`` runs its own loops; a BLAS call per tiny product would
    cost more than the product, and a threaded BLAS competes with torch for the cores.)
    """
    gram_y = np.einsum("ain,bin,in->abn", py, py, my)  # sum_i m[i] P[i] Q[i], [4, 4, N]
    gram_x = np.einsum("ain,bin,in->abn", px, px, mx)
    amp = theta[0]
    power = np.stack([np.ones_like(amp), amp, amp * amp])
    products = gram_y[_PY0, _PY1] * gram_x[_PX0, _PX1] * power[_POW]  # [terms of p x terms of q, N]
    jtj = np.empty((5, 5, theta.shape[1]))
    for p, q, first, stop in _ENTRIES:  # (np.add.reduceat is slower for these few long rows)
        jtj[p, q] = jtj[q, p] = products[first] if stop == first + 1 else products[first:stop].sum(0)
    # the residual is masked already: sum_ij r[i, j] P[i] Q[j] per term
    by_column = np.einsum("ijn,cjn->cin", res, px)  # [4, w, N]
    grad = np.einsum("tin,tin->tn", by_column[_TERM_X], py[_TERM_Y])  # one row per term
    grad[2:] *= amp  # the terms of x, y and s are scaled by A
    grad[4] += grad[5]  # dM/ds has two terms
    return jtj, grad[:5]


def fit_gaussian(patches, valid, theta, n_iter: int, tol: float = 1e-8):
    """Levenberg-Marquardt fit of the module's model to every window, vectorized.

    Parameters
    ----------
    patches : array [N, w, w]
        KDE windows (density units).
    valid : bool array [N, w, w]
        Pixels inside the image. Rows and columns wholly outside it carry no weight; the
        mask used is the outer product of its row and column masks (the inside of the image
        always is one), other excluded pixels count as zeros.
    theta : array [N, 5]
        Starting (A, b, x, y, s).
    n_iter : int
        Most iterations per fit.
    tol : float
        A fit stops when its step falls below ``tol`` (window pixels / emitters), accepted or
        not (a smaller step changes nothing reported), or when its damping saturates; only
        unconverged fits are computed.

    Returns
    -------
    theta : array [N, 5]
        Fitted parameters.
    good : bool array [N]
        Whether each fit is trustworthy: finite, centre within ``MAX_SHIFT_PX`` of the peak
        pixel's centre per axis.
    """
    n, w, _ = patches.shape
    theta = np.array(theta, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(theta).all(1))
    my = valid.any(2).T.astype(np.float64)[:, idx]  # [w, n]: rows inside the image
    mx = valid.any(1).T.astype(np.float64)[:, idx]
    mask = my[:, None] * mx[None]
    data = np.where(valid[idx].transpose(1, 2, 0), patches[idx].transpose(1, 2, 0), 0.0)
    th = theta[idx].T.copy()  # [5, n]
    py, px = _axis_profiles(th, w)
    res, cost = _residual(th, py, px, data, mask)
    lam = np.full(idx.size, 1e-3)
    diag = np.arange(5)
    for _ in range(n_iter):
        if idx.size == 0:
            break
        a, grad = _normal_equations(th, py, px, my, mx, res)
        # Marquardt scaling by diag(J^T J); the tiny identity keeps flat directions solvable
        a[diag, diag] = a[diag, diag] * (1.0 + lam) + 1e-12
        step = solve_spd(a, grad)
        trial = th + step
        ok = np.isfinite(trial).all(0) & (trial[4] > MIN_WIDTH_PX)
        trial = np.where(ok, trial, th)
        ty, tx = _axis_profiles(trial, w)
        trial_res, trial_cost = _residual(trial, ty, tx, data, mask)
        better = ok & (trial_cost < cost)
        th = np.where(better, trial, th)
        py, px = np.where(better, ty, py), np.where(better, tx, px)
        res, cost = np.where(better, trial_res, res), np.where(better, trial_cost, cost)
        lam = np.where(better, lam * 0.1, lam * 10.0).clip(1e-9, 1e9)
        done = (np.abs(step).max(0) < tol) | (lam >= 1e9)
        if done.any():
            theta[idx[done]] = th[:, done].T
            keep = ~done
            idx, th, lam, cost = idx[keep], th[:, keep], lam[keep], cost[keep]
            py, px, my, mx = py[..., keep], px[..., keep], my[:, keep], mx[:, keep]
            res, data, mask = res[..., keep], data[..., keep], mask[..., keep]
    theta[idx] = th.T

    centre = (w // 2) + 0.5
    good = (
        np.isfinite(theta).all(1)
        & (np.abs(theta[:, 2] - centre) <= MAX_SHIFT_PX)
        & (np.abs(theta[:, 3] - centre) <= MAX_SHIFT_PX)
    )
    return theta, good
