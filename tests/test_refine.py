"""Joint Poisson MLE refinement on the frames: precision at the CRLB, splitting, fallbacks, the bound."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth
from smlm_diffusers.localization import refine_frames
from smlm_diffusers.simulation.emitters import Emitters

CAMERA = sd.Camera()
A = CAMERA.pixel_size_nm


def _frames(xs, ys, photons, shape=(32, 32), background=20.0, seed=0):
    """ADU frames [B, H, W] of emitters given as [B, E] pixel positions (edge convention)."""
    xs, ys = torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.float32)
    em = Emitters(x_px=xs, y_px=ys, photons=torch.full_like(xs, float(photons)),
                  mask=torch.ones_like(xs, dtype=torch.bool))
    sim = sd.FrameSimulator(shape, CAMERA, 1.0, background)
    return sim.render(em, generator=torch.Generator().manual_seed(seed)).frames_adu.numpy()


@pytest.fixture(scope="module")
def isolated():
    """1080 isolated emitters (>= 6 px apart), 2000 photons, background 20, seeded 11 nm rms off the truth."""
    frames, gt = sd.simulate(n_frames=30, shape=(64, 64), photons=2000.0, background=20.0, structure="grid",
                             spacing_px=10.0, jitter_px=2.0, seed=1, camera=CAMERA)
    rng = np.random.default_rng(0)
    seeds = gt[["frame", "x_nm", "y_nm"]].assign(x_nm=gt["x_nm"] + rng.normal(0, 11, len(gt)),
                                                  y_nm=gt["y_nm"] + rng.normal(0, 11, len(gt)), tag=np.arange(len(gt)))
    out = refine_frames(frames, seeds, CAMERA, 1.0, split=False, seed_consistency=None)
    return frames, gt, seeds, out


def test_isolated_fit_reaches_the_crlb_by_monte_carlo(isolated):
    _, gt, _, out = isolated
    assert len(out) == len(gt) and out["refine_ok"].all()
    assert (out["tag"].to_numpy() == np.arange(len(gt))).all()  # rows keep their order and columns
    dx, dy = out["x_nm"] - gt["x_nm"], out["y_nm"] - gt["y_nm"]
    cx, cy = crlb_at_truth(gt, 1.0, CAMERA)  # eq. 14 at the true parameters
    ratio = (dx.var() + dy.var()) / (cx.mean() + cy.mean())
    assert 0.9 < ratio < 1.1, ratio
    for d, c in ((dx, cx), (dy, cy)):
        assert 0.85 < d.var() / c.mean() < 1.15
        assert abs(d.mean()) < 3.0 * math.sqrt(c.mean() / len(d))  # unbiased
    assert abs(out["photons"].mean() / 2000.0 - 1.0) < 0.01
    assert abs(out["background"].mean() / 20.0 - 1.0) < 0.01
    seeds = isolated[2]  # the fit, not the seed: the seeds are 3.5x farther off than the bound
    seed_mse = ((seeds["x_nm"] - gt["x_nm"]) ** 2 + (seeds["y_nm"] - gt["y_nm"]) ** 2).mean()
    assert (dx**2 + dy**2).mean() < 0.2 * seed_mse


def test_isolated_bound_matches_sd_crlb_at_the_fitted_parameters(isolated):
    _, _, _, out = isolated
    assert (out["cluster_size"] == 1).all()
    x, y = out["x_nm"].to_numpy() / A, out["y_nm"].to_numpy() / A
    cx, cy = sd.crlb(out["photons"].to_numpy(), out["background"].to_numpy(), 1.0, camera=CAMERA,
                     x_px=4 + np.mod(x, 1.0), y_px=4 + np.mod(y, 1.0))  # a 9 x 9 ROI, fit window 7 x 7
    np.testing.assert_allclose(out["crlb_x_nm"] ** 2, cx, rtol=0.03)
    np.testing.assert_allclose(out["crlb_y_nm"] ** 2, cy, rtol=0.03)
    # write_sigma writes the same bound for a fit that agrees with its seed
    again = refine_frames(isolated[0][:2], isolated[2][isolated[2]["frame"] < 2], CAMERA, 1.0, split=False,
                          write_sigma=True, seed_consistency=None)
    np.testing.assert_allclose(again["sigma_x_nm"], again["crlb_x_nm"])


def test_close_pair_seeded_once_is_split_near_the_truth():
    rng = np.random.default_rng(3)
    n, sep = 20, 1.2  # px apart, 3000 photons each
    angle = rng.uniform(0, np.pi, n)
    cx, cy = 16 + rng.uniform(0, 1, n), 16 + rng.uniform(0, 1, n)
    xs = np.stack([cx + sep / 2 * np.cos(angle), cx - sep / 2 * np.cos(angle)], 1)
    ys = np.stack([cy + sep / 2 * np.sin(angle), cy - sep / 2 * np.sin(angle)], 1)
    frames = _frames(xs, ys, 3000.0, seed=3)
    seeds = pd.DataFrame({"frame": np.arange(n), "x_nm": cx * A, "y_nm": cy * A})
    single = refine_frames(frames, seeds, CAMERA, 1.0, split=False)
    out = refine_frames(frames, seeds, CAMERA, 1.0, split=True)
    assert (out.groupby("frame").size() == 2).mean() >= 0.9
    assert out["split"].sum() == 2 * (out.groupby("frame").size() == 2).sum()
    assert out.loc[out["split"], "fit_deviance"].median() < 0.5 * single["fit_deviance"].median()
    gt = pd.DataFrame({"frame": np.repeat(np.arange(n), 2), "x_nm": xs.ravel() * A, "y_nm": ys.ravel() * A})
    m = sd.evaluate(gt, out, tolerance_nm=60.0)
    assert m["recall"] >= 0.9 and m["rmse_nm"] < 25.0, m


def test_true_single_emitters_are_not_split():
    rng = np.random.default_rng(4)
    n = 48
    x, y = 16 + rng.uniform(-1, 1, n), 16 + rng.uniform(-1, 1, n)
    frames = _frames(x[:, None], y[:, None], 3000.0, seed=4)
    seeds = pd.DataFrame({"frame": np.arange(n), "x_nm": (x + rng.normal(0, 0.1, n)) * A,
                          "y_nm": (y + rng.normal(0, 0.1, n)) * A})
    out = refine_frames(frames, seeds, CAMERA, 1.0, split=True)
    assert len(out) == n and not out["split"].any()
    ok = out["refine_ok"].to_numpy()
    assert ok.mean() > 0.9 and np.hypot(out["x_nm"] - x * A, out["y_nm"] - y * A)[ok].max() < 15.0


def test_edge_molecule_and_runaways_fall_back_flagged_without_nan():
    # one emitter 0.4 px from the left edge, one 2.5 px from the only seed near it, and a seed on background
    frames = _frames([[0.4, 20.0]], [[10.0, 20.0]], 2000.0, seed=5)
    seeds = pd.DataFrame({"frame": [0, 0, 0], "x_nm": [0.45 * A, 22.5 * A, 10.0 * A],
                          "y_nm": [10.05 * A, 20.0 * A, 25.0 * A], "probability": [0.9, 0.8, 0.7]})
    out = refine_frames(frames, seeds, CAMERA, 1.0, split=True, write_sigma=True)
    assert len(out) == 3 and list(out["probability"]) == [0.9, 0.8, 0.7]
    columns = ["x_nm", "y_nm", "photons", "background", "crlb_x_nm", "crlb_y_nm", "sigma_x_nm", "sigma_y_nm"]
    assert np.isfinite(out[columns].to_numpy()).all()
    edge = out.iloc[0]
    assert edge["refine_ok"] and abs(edge["x_nm"] - 0.4 * A) < 0.3 * A and abs(edge["y_nm"] - 10.0 * A) < 0.3 * A
    assert edge["photons"] > 1000
    for i in (1, 2):  # moved > 1.5 px; under min_photons
        assert not out["refine_ok"].iloc[i] and out["fit_flag"].iloc[i] == "runaway"
        assert out["crlb_x_nm"].iloc[i] > 50.0  # no light there: a wide bound
        assert out["x_nm"].iloc[i] == pytest.approx(seeds["x_nm"].iloc[i])
        assert out["y_nm"].iloc[i] == pytest.approx(seeds["y_nm"].iloc[i])
    # a seed outside the frame keeps finite numbers too
    outside = refine_frames(frames, seeds.iloc[:1].assign(x_nm=-2.0 * A), CAMERA, 1.0, split=False)
    assert np.isfinite(outside[["x_nm", "y_nm", "photons"]].to_numpy()).all() and not outside["refine_ok"].iloc[0]


def test_neighbours_are_fitted_jointly_and_torch_input_matches_numpy():
    # two emitters 2 px apart, seeded at both: one cluster, both recovered; a torch tensor gives the same table
    frames = _frames([[10.3, 12.3], [20.0, 21.6]], [[11.0, 11.0], [20.5, 21.7]], 2000.0, seed=6)
    seeds = pd.DataFrame({"frame": [0, 0, 1, 1], "x_nm": np.array([10.4, 12.2, 20.1, 21.5]) * A,
                          "y_nm": np.array([11.1, 10.9, 20.4, 21.8]) * A})
    out = refine_frames(frames, seeds, CAMERA, 1.0, split=False)
    assert (out["cluster_size"] == 2).all()
    truth = np.array([[10.3, 11.0], [12.3, 11.0], [20.0, 20.5], [21.6, 21.7]]) * A
    assert np.abs(out[["x_nm", "y_nm"]].to_numpy() - truth).max() < 20.0
    pt = refine_frames(torch.from_numpy(frames), seeds, CAMERA, 1.0, split=False)
    pd.testing.assert_frame_equal(out, pt)
    empty = refine_frames(frames, seeds.iloc[:0], CAMERA, 1.0)
    assert len(empty) == 0 and {"crlb_x_nm", "fit_deviance", "refine_ok", "split"} <= set(empty.columns)
