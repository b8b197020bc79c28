"""match / evaluate follow docs/conventions.md's Metrics section exactly (hand-computed cases)."""

import math

import numpy as np
import pandas as pd
import pytest

from smlm_diffusers import evaluate
from smlm_diffusers.localization import match


def table(rows, **extra):
    """DataFrame from (frame, x_nm, y_nm) tuples."""
    df = pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm"]).astype({"frame": np.int64})
    for k, v in extra.items():
        df[k] = v
    return df


def test_hand_built_jaccard_rmse_efficiency():
    gt = table([(0, 0, 0), (0, 1000, 0), (0, 2000, 0), (0, 3000, 0)])
    # three matches at distances 5 (3-4-5), 0 and 10 (6-8-10), one false positive far away;
    # the gt at x=3000 is missed
    pred = table([(0, 3, 4), (0, 1000, 0), (0, 2006, 8), (0, 5000, 5000)])
    m = evaluate(gt, pred)
    assert (m["tp"], m["fp"], m["fn"], m["n_gt"], m["n_pred"]) == (3, 1, 1, 4, 4)
    assert m["jaccard"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["rmse_nm"] == pytest.approx(math.sqrt((25 + 0 + 100) / 3))
    assert m["rmse_x_nm"] == pytest.approx(math.sqrt((9 + 0 + 36) / 3))
    assert m["rmse_y_nm"] == pytest.approx(math.sqrt((16 + 0 + 64) / 3))
    assert m["efficiency"] == pytest.approx(100 - math.sqrt(40**2 + (125 / 3)))
    assert "coverage_1sigma" not in m and "rmse_crlb_ratio" not in m


def test_perfect_prediction():
    gt = table([(0, 10, 20), (3, 500, 40)])
    m = evaluate(gt, gt.copy())
    assert m["jaccard"] == 1.0 and m["rmse_nm"] == 0.0 and m["efficiency"] == 100.0


def test_hungarian_not_greedy():
    # greedy nearest-first takes B-P (80 nm), after which A has no partner within 250 nm;
    # the assignment pairs A-P (120) and B-Q (240) instead: two matches
    gt = table([(0, 0, 0), (0, 200, 0)])
    pred = table([(0, 120, 0), (0, 440, 0)])
    pairs = match(gt, pred)
    assert pairs[["gt_index", "pred_index"]].values.tolist() == [[0, 0], [1, 1]]
    m = evaluate(gt, pred)
    assert m["tp"] == 2 and m["jaccard"] == 1.0
    assert m["rmse_nm"] == pytest.approx(math.sqrt((120**2 + 240**2) / 2))


def test_far_pair_does_not_block_a_valid_pair():
    # raw-distance Hungarian prefers {A-P 0 nm, B-Q 260 nm} (total 260) over
    # {A-Q 240, B-P 240} (total 480); only the second has two pairs within 250 nm
    s = 260 / 480
    c = math.sqrt(1 - s * s)
    gt = table([(0, 0, 0), (0, 240 * c, 240 * s)])
    pred = table([(0, 0, 0), (0, 240 * c, -240 * s)])
    m = evaluate(gt, pred, tolerance_nm=250)
    assert m["tp"] == 2 and m["fp"] == 0 and m["fn"] == 0
    assert m["rmse_nm"] == pytest.approx(240.0)


def test_tolerance_edge_inclusive():
    gt = table([(0, 0, 0)])
    assert evaluate(gt, table([(0, 150, 200)]), tolerance_nm=250)["tp"] == 1  # exactly 250 nm
    assert evaluate(gt, table([(0, 150, 200.001)]), tolerance_nm=250)["tp"] == 0
    assert evaluate(gt, table([(0, 150, 200)]), tolerance_nm=100)["tp"] == 0


def test_frames_are_never_matched_across():
    gt = table([(0, 0, 0), (2, 0, 0)])
    pred = table([(1, 0, 0), (2, 1, 1)])
    m = evaluate(gt, pred)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    pairs = match(gt, pred)
    assert pairs.frame.tolist() == [2]


def test_match_uses_row_positions_and_pred_minus_gt():
    gt = table([(1, 100, 100), (0, 0, 0)]).set_index(pd.Index([10, 20]))
    pred = table([(0, 2, -3), (1, 101, 99)]).set_index(pd.Index([7, 8]))
    pairs = match(gt, pred)
    assert list(pairs.columns) == ["frame", "gt_index", "pred_index", "dx", "dy"]
    assert pairs[["frame", "gt_index", "pred_index"]].values.tolist() == [[0, 1, 0], [1, 0, 1]]
    np.testing.assert_allclose(pairs[["dx", "dy"]].values, [[2, -3], [1, -1]])


@pytest.fixture(scope="module")
def gaussian_errors():
    rng = np.random.default_rng(0)
    n = 4000
    gx, gy = rng.uniform(0, 1e5, n), rng.uniform(0, 1e5, n)
    frame = np.arange(n)  # one emitter per frame: matching is trivial
    sigma = rng.uniform(5, 20, n)
    gt = pd.DataFrame({"frame": frame, "x_nm": gx, "y_nm": gy})
    pred = pd.DataFrame(
        {"frame": frame, "x_nm": gx + sigma * rng.standard_normal(n), "y_nm": gy + sigma * rng.standard_normal(n)}
    )
    return gt, pred, sigma


def test_calibration_honest_sigma(gaussian_errors):
    gt, pred, sigma = gaussian_errors
    m = evaluate(gt, pred.assign(sigma_x_nm=sigma, sigma_y_nm=sigma))
    assert m["coverage_1sigma"] == pytest.approx(0.683, abs=0.02)
    assert m["z_std"] == pytest.approx(1.0, abs=0.04)
    assert abs(m["z_mean"]) < 0.05


def test_calibration_overconfident_sigma_fails(gaussian_errors):
    gt, pred, sigma = gaussian_errors
    m = evaluate(gt, pred.assign(sigma_x_nm=sigma / 2, sigma_y_nm=sigma / 2))
    assert m["coverage_1sigma"] == pytest.approx(0.383, abs=0.03)  # P(|z| <= 1/2)
    assert m["z_std"] == pytest.approx(2.0, abs=0.1)


def test_rmse_crlb_ratio_arrays_scalars_callable():
    gt = table([(0, 0, 0), (1, 0, 0), (2, 0, 0)])
    pred = table([(0, 3, 4), (1, -3, -4)])  # gt row 2 is missed
    cx = np.array([4.0, 6.0, 1e6])  # the unmatched row must not count
    cy = np.array([5.0, 3.0, 1e6])
    expected = math.sqrt((9 + 16) / (5.0 + 4.0))
    assert evaluate(gt, pred, crlb_nm2=(cx, cy))["rmse_crlb_ratio"] == pytest.approx(expected)
    assert evaluate(gt, pred, crlb_nm2=(5.0, 4.0))["rmse_crlb_ratio"] == pytest.approx(expected)

    def crlb(rows):
        assert len(rows) == 2
        return np.full(len(rows), 5.0), np.full(len(rows), 4.0)

    assert evaluate(gt, pred, crlb_nm2=crlb)["rmse_crlb_ratio"] == pytest.approx(expected)


def test_empty_inputs_never_crash():
    empty = table([])
    some = table([(0, 0, 0), (1, 5, 5)])
    m = evaluate(empty, empty)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 0) and math.isnan(m["jaccard"])
    m = evaluate(some, empty)
    assert m["fn"] == 2 and m["jaccard"] == 0.0 and m["recall"] == 0.0
    assert math.isnan(m["rmse_nm"]) and math.isnan(m["precision"]) and math.isnan(m["efficiency"])
    m = evaluate(empty, some.assign(sigma_x_nm=1.0, sigma_y_nm=1.0), crlb_nm2=(1.0, 1.0))
    assert m["fp"] == 2 and m["precision"] == 0.0
    assert math.isnan(m["coverage_1sigma"]) and math.isnan(m["rmse_crlb_ratio"])
    m = evaluate(some, empty.assign(sigma_x_nm=[], sigma_y_nm=[]))
    assert math.isnan(m["coverage_1sigma"]) and math.isnan(m["z_std"])  # keys present, undefined
    assert evaluate(pd.DataFrame(), some)["fp"] == 2  # an empty table may lack columns
    assert match(empty, some).empty


def test_missing_columns_and_bad_frames_raise():
    gt = table([(0, 0, 0)])
    with pytest.raises(ValueError, match="y_nm"):
        evaluate(gt, pd.DataFrame({"frame": [0], "x_nm": [1.0]}))
    with pytest.raises(ValueError, match="frame"):
        evaluate(gt.assign(frame=[0.5]), gt)
    # integral float frames are fine
    assert evaluate(gt.assign(frame=[0.0]), gt)["tp"] == 1
