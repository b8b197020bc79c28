"""Births and moves beside the best configuration, the crowding tail, and what the weighing counts once."""

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.localization import refine_frames
from smlm_diffusers.localization.configurations import ambiguous, arbitrate
from smlm_diffusers.localization.weighing import merge_cluster

CAMERA = sd.Camera()
A = CAMERA.pixel_size_nm
NO_DETECTIONS = pd.DataFrame({"frame": np.zeros(0, np.int64), "sample": np.zeros(0, np.int64),
                              "x_nm": np.zeros(0), "y_nm": np.zeros(0)})
from test_configurations import _frames  # noqa: E402  (the same simulated frames)

# the arbitration as it was before births, the whole Fisher matrix and the unresolved-pair term
BEFORE = dict(coupling=0.0, min_separation_px=0.0, split_scales=(1.0,), unresolved_below=None, births=False)




def _refined(frames, seeds_px):
    """DeepSTORM's view: the molecules seeded at ``seeds_px`` [B, M, 2] (x, y), refined without splitting."""
    n, m = seeds_px.shape[:2]
    seeds = pd.DataFrame({"frame": np.repeat(np.arange(n), m), "x_nm": seeds_px[..., 0].ravel() * A,
                          "y_nm": seeds_px[..., 1].ravel() * A})
    return refine_frames(frames, seeds, CAMERA, 1.0, split=False, write_sigma=True, seed_consistency=None)


def _near(out, frame, x_px, y_px, radius_px=0.5):
    rows = out[out["frame"] == frame]
    return rows[np.hypot(rows["x_nm"] / A - x_px, rows["y_nm"] / A - y_px) < radius_px]


def _detections(per_frame):
    """One sample's detections in each of ``len(per_frame)`` frames: per_frame[f] = [(x_px, y_px), ...]."""
    rows = [(f, 0, x * A, y * A) for f, pts in enumerate(per_frame) for x, y in pts]
    return pd.DataFrame(rows, columns=["frame", "sample", "x_nm", "y_nm"])


@pytest.fixture(scope="module")
def missed_neighbour():
    """8 frames: a confident emitter at (12, 12) that DeepSTORM found, and one at (14.5, 12.3) that it missed."""
    n = 8
    xs, ys = np.tile([12.0, 14.5], (n, 1)), np.tile([12.0, 12.3], (n, 1))
    frames = _frames(xs, ys, 2000.0, seed=21)
    both = _refined(frames, np.stack([xs, ys], axis=-1))
    base = both[np.hypot(both["x_nm"] / A - 12.0, both["y_nm"] / A - 12.0) < 1.0].reset_index(drop=True)
    assert len(base) == n  # DeepSTORM's molecule is the confident one, fitted beside its neighbour
    return frames, base


def test_a_samples_correct_birth_wins_beside_its_wrong_molecule(missed_neighbour):
    frames, base = missed_neighbour
    # the only sample finds the missed neighbour, twice over (two detections 0.4 px apart on it)
    det = _detections([[(12.0, 12.0), (14.3, 12.3), (14.7, 12.3)]] * len(frames))
    keep = np.zeros(len(base), bool)  # the confident molecule is not tried as a pair
    whole = arbitrate(frames, base, det, 1, CAMERA, 1.0, split_mask=keep, probability_floor=0.0, births=False)
    born = arbitrate(frames, base, det, 1, CAMERA, 1.0, split_mask=keep, probability_floor=0.0)

    def found_once(out, f):  # one molecule at the neighbour, near certain, and no phantom beside it
        b = _near(out, f, 14.5, 12.3, 1.5).sort_values("probability")
        return (len(b) > 0 and b["probability"].iloc[-1] > 0.95 and b["probability"].iloc[:-1].sum() < 0.05
                and abs(b["x_nm"].iloc[-1] / A - 14.5) < 0.2)

    for f in range(len(frames)):
        # the sample's whole configuration either loses (two emitters on one spot) or wins with its phantom
        assert not found_once(whole, f), whole[whole["frame"] == f]
        # its births, each fitted beside the confident molecule, win on their own (and count once)
        assert found_once(born, f), born[born["frame"] == f]
        assert _near(born, f, 12.0, 12.0)["probability"].iloc[0] > 0.99
        assert _near(born, f, 14.5, 12.3)["n_samples"].iloc[0] == 1


def test_a_wrong_birth_loses(missed_neighbour):
    frames, base = missed_neighbour
    # the sample proposes a molecule where there is none (the other side of the confident one)
    det = _detections([[(12.0, 12.0), (9.5, 11.7)]] * len(frames))
    out = arbitrate(frames, base, det, 1, CAMERA, 1.0, split_mask=np.zeros(len(base), bool), probability_floor=0.0)
    for f in range(len(frames)):
        assert _near(out, f, 9.5, 11.7, 1.0)["probability"].sum() < 0.05
        assert _near(out, f, 12.0, 12.0)["probability"].iloc[0] > 0.95


def test_a_samples_molecule_beside_a_member_moves_it_rather_than_doubling_it():
    # DeepSTORM put the molecule 0.7 px off; a sample puts it right (farther than the link radius from the seed)
    n = 6
    xs, ys = np.full((n, 1), 12.3), np.full((n, 1), 12.0)
    frames = _frames(xs, ys, 2000.0, seed=23)
    base = _refined(frames, np.full((n, 1, 2), [12.3, 12.0]))
    base = base.assign(x_nm=base["x_nm"] + 0.7 * A)  # as if its fit had stopped in the wrong place
    det = _detections([[(12.3, 12.0)]] * n)
    out = arbitrate(frames, base, det, 1, CAMERA, 1.0, split=False, probability_floor=0.5)
    for f in range(n):
        rows = out[out["frame"] == f]
        assert len(rows) == 1 and abs(rows["x_nm"].iloc[0] / A - 12.3) < 0.2, rows


def test_proposals_that_converge_to_one_fit_count_once():
    sep, photons = 1.05, 1000.0
    xs, ys = np.array([[12.0 - sep / 2, 12.0 + sep / 2]]), np.array([[12.2, 12.2]])
    for seed in range(40):  # a noise draw that leaves the pair in doubt
        frames = _frames(xs, ys, photons, seed=seed)
        base = _refined(frames, np.array([[[12.0, 12.2]]]))
        once = _detections([[(xs[0, 0], 12.2), (xs[0, 1], 12.2)]])
        p_once = arbitrate(frames, base, once, 1, CAMERA, 1.0, split=False, probability_floor=0.0,
                           unresolved_below=None, births=False)["probability"].min()
        if 0.05 < p_once < 0.95:
            break
    assert 0.05 < p_once < 0.95, p_once
    # a second sample proposes the same pair, its second member 70 nm from the first's (a slot of its own,
    # whose fit converges to the same pair); births off, so that only the two whole configurations differ
    twice = pd.concat([once, _detections([[(xs[0, 0], 12.2), (xs[0, 1], 12.2 + 70.0 / A)]]).assign(sample=1)])
    out = arbitrate(frames, base, twice, 2, CAMERA, 1.0, split=False, probability_floor=0.0, unresolved_below=None,
                    births=False)
    assert len(out) == 2
    assert abs(out["probability"].min() - p_once) < 1e-6  # the same fit, weighed once


def test_an_unresolved_neighbour_widens_the_sigma_of_the_molecule_standing_for_both():
    # configurations: a single at 0 (weight 0.8), a pair at 0.05 and 0.6 px (0.2); tiny bounds
    args = ([0.8, 0.2], [np.array([0.0]), np.array([0.05, 0.6])], [np.zeros(1), np.zeros(2)],
            [np.full(1, 1e-4), np.full(2, 1e-4)], [np.full(1, 1e-4), np.full(2, 1e-4)],
            [np.full(1, 4000.0), np.full(2, 2000.0)], [20.0, 20.0], [1, 1], 1.0)
    plain = merge_cluster(*args, shown=None)
    wide = merge_cluster(*args)
    assert [len(plain), len(wide)] == [2, 2]
    host = max(wide, key=lambda r: r[0])
    mx = host[1]
    assert host[0] == pytest.approx(1.0) and mx == pytest.approx(0.01)
    expected = max(plain, key=lambda r: r[0])[3] + 0.2 * (0.6 - mx) ** 2
    assert host[3] == pytest.approx(expected)
    assert host[4] == pytest.approx(max(plain, key=lambda r: r[0])[4])  # no offset in y


def test_close_pairs_are_covered_better_than_before():
    """Pairs 0.6-1.0 px apart (2000 photons each) that DeepSTORM sees as one molecule, beside three isolated
    emitters per frame (so that the photon prior is that of one emitter): the share of the true emitters
    inside 1 sigma rises and the share beyond 3 sigma falls."""
    n = 40
    rng = np.random.default_rng(5)
    others = np.array([[30.0, 8.0], [8.0, 30.0], [30.0, 30.0]])
    sep, th = rng.choice([0.6, 0.8, 1.0], n), rng.uniform(0, np.pi, n)
    cx, cy = 12 + rng.uniform(-0.5, 0.5, n), 12 + rng.uniform(-0.5, 0.5, n)
    xs = np.c_[cx - sep / 2 * np.cos(th), cx + sep / 2 * np.cos(th), np.tile(others[:, 0], (n, 1))]
    ys = np.c_[cy - sep / 2 * np.sin(th), cy + sep / 2 * np.sin(th), np.tile(others[:, 1], (n, 1))]
    frames = _frames(xs, ys, 2000.0, shape=(40, 40), seed=11)
    base = _refined(frames, np.concatenate([np.c_[cx, cy][:, None], np.tile(others[None], (n, 1, 1))], axis=1))
    gate = ambiguous(base)
    assert gate[::4].all()  # the merged pairs are in doubt (twice the photons)

    def z_scores(out):
        z = []
        for f in range(n):
            k = out[(out["frame"] == f) & (out["probability"] >= 0.5)]
            for e in range(2):
                j = int(np.argmin(np.hypot(k["x_nm"] - xs[f, e] * A, k["y_nm"] - ys[f, e] * A).to_numpy()))
                z += [(k["x_nm"].iloc[j] / A - xs[f, e]) * A / k["sigma_x_nm"].iloc[j],
                      (k["y_nm"].iloc[j] / A - ys[f, e]) * A / k["sigma_y_nm"].iloc[j]]
        return np.abs(z)

    before = z_scores(arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, split_mask=gate, **BEFORE))
    now = z_scores(arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, split_mask=gate))
    assert (now <= 1).mean() > (before <= 1).mean() + 0.1, ((now <= 1).mean(), (before <= 1).mean())
    assert (now > 3).mean() < (before > 3).mean() - 0.1, ((now > 3).mean(), (before > 3).mean())


def test_isolated_emitters_keep_their_bound():
    # a grid of isolated emitters: nothing to weigh, the arbitration returns DeepSTORM's molecules untouched
    n = 4
    g = np.array([[6.3, 6.1], [17.6, 6.4], [6.2, 17.7], [17.4, 17.5]])
    frames = _frames(np.tile(g[:, 0], (n, 1)), np.tile(g[:, 1], (n, 1)), 1000.0, seed=5)
    base = _refined(frames, np.tile(g[None], (n, 1, 1)))
    out = arbitrate(frames, base, NO_DETECTIONS, 0, CAMERA, 1.0, split_mask=ambiguous(base))
    assert len(out) == len(base)
    np.testing.assert_allclose(np.sort(out["sigma_x_nm"]), np.sort(base["sigma_x_nm"]))
