"""Configurations weighed by the frame's likelihood: pairs, singles, the limit of resolution, the evidence."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import erf

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth
from smlm_diffusers.localization import refine_frames
from smlm_diffusers.localization.configurations import arbitrate
from smlm_diffusers.simulation.emitters import Emitters

CAMERA = sd.Camera()
A = CAMERA.pixel_size_nm
NO_DETECTIONS = pd.DataFrame({"frame": np.zeros(0, np.int64), "sample": np.zeros(0, np.int64),
                              "x_nm": np.zeros(0), "y_nm": np.zeros(0)})


def _frames(xs, ys, photons, shape=(24, 24), background=20.0, seed=0):
    """ADU frames [B, H, W] of emitters given as [B, E] pixel positions (edge convention)."""
    xs, ys = torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.float32)
    em = Emitters(x_px=xs, y_px=ys, photons=torch.full_like(xs, float(photons)),
                  mask=torch.ones_like(xs, dtype=torch.bool))
    sim = sd.FrameSimulator(shape, CAMERA, 1.0, background)
    return sim.render(em, generator=torch.Generator().manual_seed(seed)).frames_adu.numpy()


def _single_fits(frames, x_px, y_px):
    """DeepSTORM's view of each frame: one molecule, seeded at (x_px, y_px) and refined without splitting."""
    seeds = pd.DataFrame({"frame": np.arange(len(frames)), "x_nm": np.full(len(frames), x_px * A),
                          "y_nm": np.full(len(frames), y_px * A)})
    return refine_frames(frames, seeds, CAMERA, 1.0, split=False, write_sigma=True, seed_consistency=None)


def _nearest(locs, frame, x_px, y_px):
    f = locs[locs["frame"] == frame]
    d = np.hypot(f["x_nm"] - x_px * A, f["y_nm"] - y_px * A)
    return f.iloc[int(np.argmin(d.to_numpy()))], float(d.min())


def test_close_pair_that_one_emitter_cannot_explain_gets_two_molecules_near_certain():
    n = 12
    sep = 2.2  # px (238 nm): resolved by the likelihood, but DeepSTORM's single seed sits between them
    xs = np.c_[np.full(n, 12.0 - sep / 2), np.full(n, 12.0 + sep / 2)]
    ys = np.full((n, 2), 12.3)
    frames = _frames(xs, ys, 2000.0, seed=1)
    base = _single_fits(frames, 12.0, 12.3)
    out = arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, probability_floor=0.1)
    for f in range(n):
        rows = out[out["frame"] == f]
        assert len(rows) == 2, rows
        assert (rows["probability"] > 0.95).all()
        for e in range(2):
            row, d = _nearest(out, f, xs[f, e], ys[f, e])
            assert d < 4.0 * math.hypot(row["sigma_x_nm"], row["sigma_y_nm"]), (d, row)


def test_true_single_emitter_keeps_probability_near_one_and_its_bound_as_sigma():
    n = 40
    rng = np.random.default_rng(3)
    xs, ys = 12.0 + rng.uniform(-0.5, 0.5, (n, 1)), 12.0 + rng.uniform(-0.5, 0.5, (n, 1))
    frames = _frames(xs, ys, 2000.0, seed=2)
    base = _single_fits(frames, 12.0, 12.0)
    out = arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, probability_floor=0.1)
    top = out.sort_values("probability", ascending=False).groupby("frame").head(1).sort_values("frame")
    assert len(top) == n
    assert np.median(top["probability"]) > 0.97 and (top["probability"] > 0.8).mean() >= 0.95
    assert (out["probability"] < 0.5).sum() <= 2  # a phantom second emitter is rare and unlikely
    gt = pd.DataFrame({"frame": np.arange(n), "x_nm": xs[:, 0] * A, "y_nm": ys[:, 0] * A,
                       "photons": 2000.0, "background": 20.0})
    cx, _ = crlb_at_truth(gt, 1.0, CAMERA)
    ratio = top["sigma_x_nm"].to_numpy() / np.sqrt(np.asarray(cx))
    assert abs(np.median(ratio) - 1.0) < 0.05, ratio
    assert np.median(top["spread_x_nm"] / top["bound_x_nm"]) < 0.1


def test_pair_at_the_limit_of_resolution_gets_intermediate_probabilities_and_a_covering_sigma():
    n = 30
    sep = 1.05  # px (113 nm) at 1000 photons: where the evidence turns from one emitter to two
    xs = np.c_[np.full(n, 12.0 - sep / 2), np.full(n, 12.0 + sep / 2)]
    ys = np.full((n, 2), 12.0)
    frames = _frames(xs, ys, 1000.0, background=20.0, seed=4)
    base = _single_fits(frames, 12.0, 12.0)
    out = arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, probability_floor=0.0)
    second = out.sort_values("probability").groupby("frame").head(1)  # the less certain molecule of each frame
    p2 = second["probability"].to_numpy()
    assert 0.15 < np.median(p2) < 0.85, p2
    assert ((p2 > 0.05) & (p2 < 0.95)).mean() >= 0.3, p2
    z, inflation = [], []
    for f in range(n):  # frames where the data leave the pair in doubt
        rows = out[out["frame"] == f]
        if not 0.1 < rows["probability"].min() < 0.9:
            continue
        top = rows.sort_values("probability").iloc[-1]
        inflation.append(top["sigma_x_nm"] / top["bound_x_nm"])  # the configurations disagree: sigma > bound
        kept = rows[rows["probability"] >= 0.1]
        z += [float((np.abs(kept["x_nm"] - xs[f, e] * A) / kept["sigma_x_nm"]).min()) for e in range(2)]
    z = np.asarray(z)
    assert len(inflation) >= 5 and np.median(inflation) > 1.3, inflation
    assert (z < 3.0).all() and (z < 2.0).mean() >= 0.7, z  # both true positions inside the reported sigmas


# -- the evidence, computed a second way -----------------------------------------------------------------------
def _pixels_1d(c, n_pixels, origin):
    edges = np.arange(origin, origin + n_pixels + 1, dtype=np.float64)
    return 0.5 * np.diff(erf((edges - c) / math.sqrt(2.0)))


def _hand_evidence(electrons, window, k, seeds, prior_mu, prior_sd, rho):
    """Laplace evidence of ``k`` emitters (sigma 1 px) and a flat background on the window (r0, c0, h, w),
    by scipy's optimiser and a finite-difference Fisher matrix."""
    r0, c0, h, w = window
    data = electrons[r0:r0 + h, c0:c0 + w] + CAMERA.read_noise**2

    def model(p):
        mu = np.full((h, w), p[-1] + CAMERA.read_noise**2)
        for m in range(k):
            x, y, nn = p[3 * m:3 * m + 3]
            mu += nn * np.outer(_pixels_1d(y, h, r0), _pixels_1d(x, w, c0))
        return mu

    def nll(p):
        mu = model(p)
        return float((mu - data * np.log(mu)).sum())

    p0 = np.r_[np.ravel([(x, y, 1500.0 / k) for x, y in seeds]), 20.0]
    fit = minimize(nll, p0, method="Nelder-Mead", options={"maxiter": 40000, "maxfev": 40000, "xatol": 1e-7,
                                                            "fatol": 1e-9, "adaptive": True})
    fit = minimize(nll, fit.x, method="BFGS", options={"gtol": 1e-6})
    p = fit.x
    steps = np.r_[np.tile([1e-4, 1e-4, 1e-3 * p[2]], k), 1e-3 * p[-1]]
    grads = []
    for i, s in enumerate(steps):
        dp = np.zeros_like(p)
        dp[i] = s
        grads.append((model(p + dp) - model(p - dp)) / (2 * s))
    mu = model(p)
    fisher = np.array([[(gi * gj / mu).sum() for gj in grads] for gi in grads])
    logdet = np.linalg.slogdet(fisher)[1]  # the whole Fisher matrix (arbitrate's coupling 1)
    occam = 0.0
    for m in range(k):
        ln = math.log(p[3 * m + 2])
        occam += (math.log(rho) + 1.5 * math.log(2 * math.pi) - ln - math.log(prior_sd) - 0.5 * math.log(2 * math.pi)
                  - 0.5 * ((ln - prior_mu) / prior_sd) ** 2)
    return -fit.fun - 0.5 * logdet + occam


def test_weights_of_two_hand_made_configurations_match_their_evidence():
    sep, photons = 1.1, 1000.0
    xs, ys = np.array([[12.0 - sep / 2, 12.0 + sep / 2]]), np.array([[12.2, 12.2]])
    for seed in range(40):  # the first noise draw where both configurations carry weight
        frames = _frames(xs, ys, photons, seed=seed)
        base = _single_fits(frames, 12.0, 12.2)  # configuration A: one emitter
        # configuration B: one sample proposes the pair (its first member links to A's molecule)
        det = pd.DataFrame({"frame": [0, 0], "sample": [0, 0], "x_nm": xs[0] * A, "y_nm": ys[0] * A})
        out = arbitrate(frames, base, det, 1, CAMERA, 1.0, split=False, probability_floor=0.0, dispersion=False)
        assert len(out) == 2
        p_b = float(out["probability"].min())  # the molecule only B holds
        if 0.02 < p_b < 0.98:
            break
    assert 0.02 < p_b < 0.98, p_b
    # the window: every slot's pixel (A's molecule, B's second member) +- ceil(3 sigma)
    b_new = int(np.argmax(np.abs(xs[0] - base["x_nm"].iloc[0] / A)))  # the member that opens a new slot
    slots_x = np.r_[base["x_nm"].to_numpy() / A, xs[0][b_new]]
    slots_y = np.r_[base["y_nm"].to_numpy() / A, ys[0][b_new]]
    r0, c0 = int(np.floor(slots_y).min()) - 3, int(np.floor(slots_x).min()) - 3
    window = (r0, c0, int(np.floor(slots_y).max()) - r0 + 4, int(np.floor(slots_x).max()) - c0 + 4)
    electrons = np.clip(CAMERA.adu_to_photons(frames[0].astype(np.float64)) + CAMERA.read_noise**2, 0, None) \
        - CAMERA.read_noise**2
    rho = 1.0 / frames[0].size  # one DeepSTORM molecule in the call's 24 x 24 pixels
    prior_mu, prior_sd = math.log(float(base["photons"].iloc[0])), 1.0  # fewer than 5 molecules: width 1
    z_a = _hand_evidence(electrons, window, 1, [(slots_x[0], slots_y[0])], prior_mu, prior_sd, rho)
    z_b = _hand_evidence(electrons, window, 2, list(zip(xs[0], ys[0])), prior_mu, prior_sd, rho)
    assert abs(math.log(p_b / (1 - p_b)) - (z_b - z_a)) < 0.05, (p_b, 1.0 / (1.0 + math.exp(z_a - z_b)))


def test_samples_alone_can_propose_a_molecule_that_deepstorm_missed():
    xs, ys = np.array([[12.0]]), np.array([[11.6]])
    frames = _frames(xs, ys, 2000.0, seed=9)
    base = _single_fits(frames, 12.0, 11.6).iloc[:0]  # DeepSTORM found nothing
    det = pd.DataFrame({"frame": [0] * 3, "sample": [0, 1, 3], "x_nm": xs[0, 0] * A + np.array([5.0, -8.0, 2.0]),
                        "y_nm": ys[0, 0] * A + np.array([-3.0, 6.0, 1.0])})
    out = arbitrate(frames, base, det, 4, CAMERA, 1.0, probability_floor=0.1)
    assert len(out) == 1 and out["probability"].iloc[0] > 0.95  # the empty configuration cannot explain the spot
    assert abs(out["x_nm"].iloc[0] - xs[0, 0] * A) < 4.0 * out["sigma_x_nm"].iloc[0]
    assert out["n_samples"].iloc[0] == 3
