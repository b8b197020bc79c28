"""The sigma self-check (consecutive frames of one blink) against the ground-truth coverage."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smlm_diffusers.postprocess import Linker, postprocess_localizations, selfcheck_figure, sigma_selfcheck
from smlm_diffusers.postprocess.run import side_paths, write_postprocess_outputs
from smlm_diffusers.simulation import simulate_movie


@pytest.fixture(scope="module")
def truth():
    """A 400-frame movie of blinking filaments without drift: the true emitter of every frame."""
    _, gt = simulate_movie(n_frames=400, shape=(64, 64), density=60.0, photons=(1000.0, 3000.0), seed=5, drift=None)
    return gt


def seen(gt: pd.DataFrame, sigma_scale: float = 1.0, shared: float = 0.0, seed: int = 0):
    """Localizations with Gaussian errors of a known sigma (1/sqrt(photons)); the reported sigma is
    ``sigma_scale`` times it; ``shared`` adds a per-blink constant offset of that many sigmas (rms).
    Returns the table and the ground-truth coverage of its sigmas."""
    rng = np.random.default_rng(seed)
    s = 400.0 / np.sqrt(gt["photons"].to_numpy())  # 7-13 nm
    off = rng.standard_normal((int(gt["blink"].max()) + 1, 2)) * shared
    b = gt["blink"].to_numpy()
    ex = s * (rng.standard_normal(len(gt)) + off[b, 0])
    ey = s * (rng.standard_normal(len(gt)) + off[b, 1])
    locs = pd.DataFrame({"frame": gt["frame"].to_numpy(), "x_nm": gt["x_nm"] + ex, "y_nm": gt["y_nm"] + ey,
                         "sigma_x_nm": s * sigma_scale, "sigma_y_nm": s * sigma_scale,
                         "photons": gt["photons"].to_numpy()})
    return locs, float(np.mean(np.abs(np.r_[ex / s, ey / s] / sigma_scale) <= 1))


@pytest.mark.parametrize("scale", [1.0, 0.7, 1.3])
def test_selfcheck_agrees_with_the_truth_where_errors_are_frame_independent(truth, scale):
    locs, gt_coverage = seen(truth, scale)
    check = sigma_selfcheck(locs)
    assert check.pairs > 3000 and check.reason is None
    assert abs(check.coverage - gt_coverage) < 0.05, (check.coverage, gt_coverage)
    assert abs(check.robust_std - 1.0 / scale) < 0.1
    assert len(check.by_photons) == 4 and sum(b["pairs"] for b in check.by_photons) == check.pairs
    assert sum(b["pairs"] for b in check.by_neighbour_nm) == check.pairs
    for b in check.by_photons + check.by_neighbour_nm:
        assert b["pairs"] < 200 or abs(b["coverage"] - gt_coverage) < 0.06


def test_selfcheck_is_blind_to_an_offset_shared_by_a_blinks_frames(truth):
    locs, gt_coverage = seen(truth, 1.0, shared=1.0)
    check = sigma_selfcheck(locs)
    assert gt_coverage < 0.56  # the truth sees the shared offset (var 2: |z| <= 1 for 0.52)
    assert abs(check.coverage - 0.683) < 0.03  # the check does not: the gap is what it cannot see
    assert "shared by a blink's frames" in check.summary()["cannot_see"]


def test_linker_blink_ids_leave_the_merged_table_unchanged(truth):
    locs, _ = seen(truth)
    plain = Linker()
    a = pd.concat([plain.add(locs), plain.finish()])
    tracked = Linker()
    shuffled = locs.sample(frac=1.0, random_state=0)  # ids follow the chunk's own row order
    b = pd.concat([tracked.add(shuffled), tracked.finish()])
    ids = tracked.blink_ids
    pd.testing.assert_frame_equal(a.sort_values(["frame", "x_nm"]).reset_index(drop=True),
                                  b.sort_values(["frame", "x_nm"]).reset_index(drop=True))
    assert len(np.unique(ids)) == len(b)
    n = pd.Series(ids).value_counts().sort_index().to_numpy()
    np.testing.assert_array_equal(np.sort(n), np.sort(b["n"].to_numpy()))
    truth_of = pd.Series(truth["blink"].to_numpy()[shuffled.index.to_numpy()]).groupby(ids).nunique()
    assert (truth_of == 1).mean() > 0.97  # a tracked blink is one true blink


def test_no_pairs_says_why(truth):
    one = seen(truth)[0].drop_duplicates("frame")
    one = one[one["frame"] % 2 == 0]  # never two consecutive frames
    check = sigma_selfcheck(one)
    assert check.pairs == 0 and check.reason and np.isnan(check.coverage)
    assert "not made" in check.line()
    selfcheck_figure(check)  # draws the reason


def test_postprocess_reports_the_selfcheck_in_json_lines_and_figure(truth, tmp_path):
    locs, _ = seen(truth)
    res = postprocess_localizations(locs, 400, undrift=False)
    s = res.summary()["selfcheck"]
    assert abs(s["coverage_1sigma"] - 0.683) < 0.03 and s["pairs"] > 3000 and s["by_neighbour_nm"][-1]["high"] is None
    assert any("sigma self-check" in line and "blind to errors" in line for line in res.lines())
    table = tmp_path / "t.csv"
    written = write_postprocess_outputs(res, table, pixel_size_nm=108.0, shape=(400, 64, 64), psf_sigma_px=1.0,
                                        samples=False)
    side = side_paths(table)
    assert side["selfcheck_png"] in written and side["selfcheck_png"].stat().st_size > 0
    assert json.loads(side["summary"].read_text())["selfcheck"]["pairs"] == s["pairs"]


REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (REAL_DATA / "storm_analysis_scmos_sample").is_dir(),
                    reason="no real sCMOS frames at ../shared/data/storm_analysis_scmos_sample")
def test_selfcheck_on_real_scmos_frames():
    """The first 5 real sCMOS frames, localized as the CLI does in DeepSTORM mode (uniform camera at the maps'
    medians, the measured PSF): persistent emitters give pairs, and the check says a number near the ideal."""
    from benchmarks.selfcheck import blink_ids, consecutive_pairs, real_camera, real_selfcheck

    cam = real_camera(REAL_DATA / "storm_analysis_scmos_sample")
    assert abs(cam.offset - 100.4) < 0.5 and abs(cam.gain - 2.11) < 0.05 and abs(cam.read_noise - 1.13) < 0.05
    locs, check, _, _, n = real_selfcheck(REAL_DATA, max_frames=5)
    assert n == 5 and set(locs["frame"].unique()) <= set(range(5)) and len(locs) > 5 * 30
    assert check.reason is None and check.pairs >= 100
    a, b = consecutive_pairs(locs, blink_ids(locs))
    assert len(a) == check.pairs and (locs["frame"].to_numpy()[b] - locs["frame"].to_numpy()[a] == 1).all()
    assert check.z.shape == (check.pairs, 2) and np.isfinite(check.z).all()
    assert 0.0 <= check.coverage <= 1.0 and np.isfinite(check.robust_std)
    assert sum(b["pairs"] for b in check.by_neighbour_nm) == check.pairs
    assert len(check.by_photons) == 4 and sum(b["pairs"] for b in check.by_photons) == check.pairs
    # measured: 0.699 and robust std 0.91 on these 5 frames (0.697, 0.94 on all 11); sigmas 0.7x or 1.3x
    # as large would give about 0.52 (std 1.4) or 0.78 (std 0.77): outside
    assert 0.6 < check.coverage < 0.77 and 0.8 < check.robust_std < 1.25, check.line()
    s = json.loads(json.dumps(check.summary()))
    assert s["pairs"] == check.pairs and "shared by a blink's frames" in s["cannot_see"]


def test_pairs_without_photons_have_a_bin_of_their_own():
    from smlm_diffusers.postprocess import selfcheck_figure, sigma_selfcheck

    rng = np.random.default_rng(5)
    n = 400  # 100 molecules, each seen in frames 0-3
    mol = rng.uniform(0, 5000, (100, 2))
    locs = pd.DataFrame({"frame": np.repeat(np.arange(4), 100), "x_nm": np.tile(mol[:, 0], 4),
                         "y_nm": np.tile(mol[:, 1], 4), "sigma_x_nm": 10.0, "sigma_y_nm": 10.0,
                         "photons": rng.uniform(500, 3000, n)})
    locs[["x_nm", "y_nm"]] += 10.0 * rng.standard_normal((n, 2))
    locs.loc[::7, "photons"] = np.nan
    check = sigma_selfcheck(locs)
    assert sum(b["pairs"] for b in check.by_photons) == check.pairs
    assert check.by_photons[-1]["low"] is None and check.by_photons[-1]["pairs"] > 0
    selfcheck_figure(check)  # draws the unknown bin


def test_no_check_where_molecules_are_new_in_every_frame():
    """Bundled-Tubes-like movies show every molecule once: consecutive-frame 'pairs' are chance neighbours on
    the structure, as frequent as pairs eight frames apart, and the check says so instead of a coverage."""
    rng = np.random.default_rng(7)
    frames = np.repeat(np.arange(60), 40)
    t = rng.uniform(0, 5000, len(frames))  # along three lines: a structure, new molecules in every frame
    line = rng.integers(0, 3, len(frames))
    locs = pd.DataFrame({"frame": frames, "x_nm": t, "y_nm": 1000.0 + 1500.0 * line + 20 * rng.standard_normal(len(t)),
                         "sigma_x_nm": 15.0, "sigma_y_nm": 15.0})
    check = sigma_selfcheck(locs)
    assert check.reason and "chance neighbours" in check.reason and check.chance_share > 0.5
    assert "not made" in check.line()
    # the same structure with blinks of several frames: measured, few chance pairs
    mol = rng.uniform(0, 5000, (300, 2))
    rows = []
    for m in range(300):
        start = int(rng.integers(0, 56))
        for f in range(start, start + 4):
            rows.append((f, *(mol[m] + 15 * rng.standard_normal(2))))
    blinks = pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm"]).assign(sigma_x_nm=15.0, sigma_y_nm=15.0)
    ok = sigma_selfcheck(blinks)
    assert ok.reason is None and ok.chance_share < 0.2 and abs(ok.coverage - 0.683) < 0.05
    assert "chance pairs about" in ok.line()
