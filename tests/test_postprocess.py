"""Post-processing with known truth: linking of blinks, RCC drift correction, FRC, and the commands."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.io import read_picasso_hdf5, read_thunderstorm_csv, write_picasso_hdf5
from smlm_diffusers.postprocess import (Linker, drift_figure, drift_residual, estimate_drift, frc_resolution, link,
                                       picasso_undrift, postprocess_localizations)
from smlm_diffusers.postprocess.linking import PRIOR_DOF
from smlm_diffusers.simulation import Blinking, simulate_movie


def noisy_localizations(gt: pd.DataFrame, seed: int = 0, background: float = 20.0) -> pd.DataFrame:
    """The truth seen by an ideal fitter: errors drawn at the CRLB, which is also the reported sigma."""
    rng = np.random.default_rng(seed)
    var = {p: sd.crlb(photons=p, background=background, sigma_px=1.0) for p in np.unique(gt["photons"])}
    sx = np.sqrt([var[p][0] for p in gt["photons"]])
    sy = np.sqrt([var[p][1] for p in gt["photons"]])
    return pd.DataFrame({"frame": gt["frame"].to_numpy(), "x_nm": gt["x_nm"] + sx * rng.standard_normal(len(gt)),
                         "y_nm": gt["y_nm"] + sy * rng.standard_normal(len(gt)), "sigma_x_nm": sx,
                         "sigma_y_nm": sy, "photons": gt["photons"].to_numpy(), "background": background,
                         "blink": gt["blink"].to_numpy(),
                         "blink_sq": gt["blink"].to_numpy().astype(float) ** 2})


@pytest.fixture(scope="module")
def blinking_movie():
    """A 64 x 64, 1000-frame movie of blinking filaments drifting by 80 nm (+ wobble), and ideal localizations."""
    frames, gt = simulate_movie(n_frames=1000, shape=(64, 64), density=40.0, photons=(1000.0, 3000.0), seed=3,
                                drift=80.0, drift_wobble_nm=15.0)
    return frames, gt, noisy_localizations(gt)


# -- simulator ----------------------------------------------------------------------------------
def test_blinking_movie_is_seeded_and_blinks_last_several_frames(blinking_movie):
    frames, gt, _ = blinking_movie
    opts = dict(n_frames=60, shape=(32, 32), density=40.0, photons=(1000.0, 3000.0), drift=80.0)
    a, b, c = simulate_movie(seed=3, **opts), simulate_movie(seed=3, **opts), simulate_movie(seed=4, **opts)
    np.testing.assert_array_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    per_blink = gt.groupby("blink")["frame"].agg(["min", "max", "size"])
    assert (per_blink["max"] - per_blink["min"] + 1 == per_blink["size"]).all()  # one uninterrupted bright period
    assert 2.2 < per_blink["size"].mean() < 3.8  # geometric, mean 3 frames (cut at the movie's ends)
    assert gt.groupby("blink")["molecule"].nunique().max() == 1
    first, last = gt[gt.frame < 200].shape[0], gt[gt.frame >= 800].shape[0]
    assert last < first  # bleaching
    # the molecule's place in the sample is fixed: position - drift
    fixed = (gt.x_nm - gt.drift_x_nm).groupby(gt.molecule).std().max()
    assert fixed < 1e-6 and gt.drift_x_nm.abs().max() > 30


def test_simulate_options_make_the_same_movie():
    a = sd.simulate(n_frames=20, shape=(32, 32), density=30.0, seed=1, structure="filaments", blinking=True,
                    drift=50.0)
    b = simulate_movie(n_frames=20, shape=(32, 32), density=30.0, seed=1, structure="filaments", drift=50.0,
                       photons=2000.0)
    np.testing.assert_array_equal(a[0], b[0])
    assert {"molecule", "blink", "drift_x_nm"} <= set(a[1].columns)


# -- linking ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 4, 9])
def test_blink_of_n_frames_is_one_row_whose_sigma_shrinks_as_one_over_sqrt_n(n):
    rng = np.random.default_rng(n)
    locs = pd.DataFrame({"frame": 10 + np.arange(n), "x_nm": 1000 + 10 * rng.standard_normal(n),
                         "y_nm": 2000 + 10 * rng.standard_normal(n), "sigma_x_nm": 10.0, "sigma_y_nm": 12.0,
                         "photons": 500.0, "background": np.arange(n, dtype=float)})
    out = link(locs)
    assert len(out) == 1
    row = out.iloc[0]
    # widened only where the scatter exceeds the sigmas (linking's module docstring: chi2 shrunk by PRIOR_DOF)
    for axis, s in (("x", 10.0), ("y", 12.0)):
        v = locs[f"{axis}_nm"].to_numpy()
        widen = max(1.0, (np.sum((v - v.mean()) ** 2) / s ** 2 + PRIOR_DOF) / (n - 1 + PRIOR_DOF))
        assert row[f"sigma_{axis}_nm"] == pytest.approx(s / np.sqrt(n) * np.sqrt(widen))
    assert row["x_nm"] == pytest.approx(locs["x_nm"].mean()) and row["photons"] == pytest.approx(500 * n)
    assert (row["frame"], row["len"], row["n"]) == (10, n, n)
    assert row["background"] == pytest.approx((n - 1) / 2)


def test_a_blink_that_scatters_beyond_its_sigmas_is_widened_by_its_chi_square():
    rng = np.random.default_rng(0)
    rows, n_blinks, n = [], 400, 5
    for b in range(n_blinks):  # true error 2x the stated sigma: unwidened, the merged sigma covers 0.38
        rows.append(pd.DataFrame({"frame": 10 * b + np.arange(n), "x_nm": 300.0 * b + 20 * rng.standard_normal(n),
                                  "y_nm": 20 * rng.standard_normal(n), "sigma_x_nm": 10.0, "sigma_y_nm": 10.0}))
    out = link(pd.concat(rows, ignore_index=True), n_sigma=10)
    assert len(out) == n_blinks
    z = np.r_[(out["x_nm"] - 300.0 * np.arange(n_blinks)) / out["sigma_x_nm"], out["y_nm"] / out["sigma_y_nm"]]
    assert np.mean(np.abs(z) <= 1) > 0.6
    assert (out["sigma_x_nm"] >= 10 / np.sqrt(n) - 1e-9).all()  # never narrower than inverse variance


def test_inverse_variance_weights():
    locs = pd.DataFrame({"frame": [0, 1], "x_nm": [0.0, 9.0], "y_nm": [0.0, 0.0], "sigma_x_nm": [10.0, 5.0],
                         "sigma_y_nm": [10.0, 5.0]})
    row = link(locs).iloc[0]
    assert row["x_nm"] == pytest.approx(9.0 * 0.04 / (0.01 + 0.04))
    assert row["sigma_x_nm"] == pytest.approx(1 / np.sqrt(0.01 + 0.04))


def test_close_molecules_stay_two_where_their_blinks_do_not_overlap_in_time():
    sig = 10.0
    a = pd.DataFrame({"frame": range(0, 4), "x_nm": 1000.0, "y_nm": 1000.0})
    b = pd.DataFrame({"frame": range(6, 10), "x_nm": 1005.0, "y_nm": 1000.0})  # within the radius, 2 dark frames
    out = link(pd.concat([a, b]).assign(sigma_x_nm=sig, sigma_y_nm=sig), max_gap=1)
    assert len(out) == 2 and list(out["n"]) == [4, 4] and list(out["frame"]) == [0, 6]
    # one dark frame is within the gap allowance: the same blink
    b1 = b.assign(frame=b.frame - 1)
    assert len(link(pd.concat([a, b1]).assign(sigma_x_nm=sig, sigma_y_nm=sig), max_gap=1)) == 1
    # two molecules on at once, 10 sigmas apart, stay two
    c = a.assign(x_nm=1100.0)
    out = link(pd.concat([a, c]).assign(sigma_x_nm=sig, sigma_y_nm=sig))
    assert len(out) == 2 and sorted(out["x_nm"]) == [1000.0, 1100.0]


def test_chunked_linking_is_the_whole_table(blinking_movie):
    _, _, locs = blinking_movie
    locs = locs[locs.frame < 300]
    whole = link(locs)
    linker = Linker()
    chunks = [linker.add(locs[(locs.frame >= a) & (locs.frame < a + 37)]) for a in range(0, 300, 37)]
    chunked = pd.concat(chunks + [linker.finish()], ignore_index=True)
    chunked = chunked.sort_values(["frame", "x_nm", "y_nm"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, chunked)
    with pytest.raises(ValueError, match="frame order"):
        linker.add(locs[locs.frame == 5])


# -- drift ----------------------------------------------------------------------------------------
def test_constant_velocity_drift_is_recovered_to_a_few_nm():
    n_frames = 1000
    truth = np.outer(np.arange(n_frames), [0.12, -0.07])  # 120 nm and -70 nm over the movie
    _, gt = simulate_movie(n_frames=n_frames, shape=(48, 48), density=20.0, photons=2000.0, seed=5, drift=truth,
                           structure="uniform", blinking=Blinking(on_frames=3, off_frames=100, bleach=0.02))
    locs = noisy_localizations(gt, seed=5)
    trace = estimate_drift(locs.frame, locs.x_nm, locs.y_nm, n_frames, segment_frames=100)
    err = np.stack([trace.x_nm - truth[:, 0], trace.y_nm - truth[:, 1]], 1)
    err -= err.mean(0)
    assert np.sqrt(np.mean(np.sum(err ** 2, 1))) < 3.0
    assert np.abs(err).max() < 8.0


def test_sparse_segments_are_merged_not_trusted():
    rng = np.random.default_rng(0)
    mol = rng.uniform(0, 5000, (300, 2))
    frames = np.r_[rng.integers(0, 400, 3000), rng.integers(400, 600, 5), rng.integers(600, 1000, 3000)]
    m = rng.integers(0, 300, len(frames))
    drift = np.c_[0.05 * np.arange(1000), np.zeros(1000)]
    x = mol[m, 0] + drift[frames, 0] + 5 * rng.standard_normal(len(frames))
    y = mol[m, 1] + 5 * rng.standard_normal(len(frames))
    trace = estimate_drift(frames, x, y, 1000, segment_frames=100, min_localizations=200)
    assert len(trace.segment_frames) < 10  # the two nearly empty segments joined a neighbour
    err = trace.x_nm - drift[:, 0]
    assert np.abs(err - err.mean()).max() < 6.0


def true_drift(gt: pd.DataFrame, n_frames: int) -> np.ndarray:
    """The simulated drift of every frame (frames where nothing is on: interpolated)."""
    d = gt.groupby("frame")[["drift_x_nm", "drift_y_nm"]].first().reindex(range(n_frames))
    return d.interpolate(limit_direction="both").to_numpy()


def test_drift_residual_removes_the_offset_and_averages_segments():
    truth = np.outer(np.arange(400), [0.1, 0.0])
    est = truth + 7.0  # a constant offset is no error
    assert drift_residual(est, truth)["rms_nm"] == pytest.approx(0.0, abs=1e-9)
    # +-3 nm alternating per frame: 3 nm per frame, zero over every 200-frame segment
    wiggle = truth + 3.0 * (-1.0) ** np.arange(400)[:, None] * np.array([[1.0, 0.0]])
    r = drift_residual(wiggle, truth, segment_frames=200)
    assert r["rms_nm"] == pytest.approx(3.0) and r["segment_rms_nm"] == pytest.approx(0.0, abs=1e-9)
    # a step of 4 nm in x between the two halves: +-2 nm about the mean everywhere
    step = truth + np.c_[np.r_[np.zeros(200), np.full(200, 4.0)], np.zeros(400)]
    assert drift_residual(step, truth, 200)["segment_rms_nm"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"\[F, 2\]"):
        drift_residual(truth[:, 0], truth[:, 0])


def test_rcc_is_at_least_as_good_as_picassos_undrift_on_the_same_table(blinking_movie):
    pytest.importorskip("picasso")
    _, gt, locs = blinking_movie
    truth = true_drift(gt, 1000)
    ours = estimate_drift(locs.frame, locs.x_nm, locs.y_nm, 1000, segment_frames=100)
    theirs = picasso_undrift(locs, 1000, (64, 64), 108.0, segment_frames=100)
    assert len(theirs.x_nm) == 1000 and len(theirs.segment_frames) == 10
    r_ours = drift_residual(np.c_[ours.x_nm, ours.y_nm], truth, 200)
    r_theirs = drift_residual(np.c_[theirs.x_nm, theirs.y_nm], truth, 200)
    assert r_theirs["rms_nm"] < drift_residual(np.zeros_like(truth), truth)["rms_nm"]  # Picasso's trace is right
    assert r_ours["segment_rms_nm"] <= r_theirs["segment_rms_nm"] and r_ours["rms_nm"] <= r_theirs["rms_nm"]
    assert r_ours["segment_rms_nm"] < 5.0  # the target


def test_drift_figure_draws_the_trace_and_the_frc():
    rng = np.random.default_rng(2)
    mol = rng.uniform(0, 3000, (300, 2))  # a structure seen again and again: drift and FRC both measurable
    pick = rng.integers(0, 300, 8000)
    frame = np.sort(rng.integers(0, 400, 8000))
    x, y = (mol[pick] + 8 * rng.standard_normal((8000, 2))).T
    trace = estimate_drift(frame, x, y, 400, segment_frames=100)
    frc = frc_resolution(x, y)
    assert trace.reason is None and frc.reason is None
    fig = drift_figure(trace, frc)
    ax_drift, ax_frc = fig.axes
    np.testing.assert_array_equal(ax_drift.lines[0].get_ydata(), trace.x_nm)
    np.testing.assert_array_equal(ax_drift.lines[1].get_ydata(), trace.y_nm)
    assert "FRC" in ax_frc.get_title()
    assert len(drift_figure(trace).axes) == 1
    with pytest.raises(ValueError, match="drift trace"):
        drift_figure()
    # not measured: no axes for it, the reason in the figure's title instead of an empty plot
    few = frc_resolution(x[:100], y[:100])
    fig = drift_figure(trace, few)
    assert len(fig.axes) == 1 and "FRC not measured: too few localizations" in fig._suptitle.get_text()


# -- whole table ------------------------------------------------------------------------------------
def test_merged_sigma_is_calibrated_on_a_blinking_drifting_movie(blinking_movie):
    _, gt, locs = blinking_movie
    res = postprocess_localizations(locs, 1000, segment_frames=100)
    out = res.localizations
    assert 0.9 < len(out) / gt["blink"].nunique() < 1.1
    spread = out["blink_sq"] - out["blink"] ** 2  # linking averages both: zero for the rows of one true blink
    pure = out[np.abs(spread) < 1e-3]
    assert len(pure) / len(out) > 0.95
    truth = gt.groupby("blink")[["x_nm", "y_nm", "drift_x_nm", "drift_y_nm"]].first()
    t = truth.loc[pure["blink"].astype(int)]
    zx = (pure["x_nm"].to_numpy() - (t.x_nm - t.drift_x_nm).to_numpy())
    zy = (pure["y_nm"].to_numpy() - (t.y_nm - t.drift_y_nm).to_numpy())
    zx, zy = (zx - np.median(zx)) / pure["sigma_x_nm"], (zy - np.median(zy)) / pure["sigma_y_nm"]
    coverage = np.mean(np.r_[np.abs(zx) <= 1, np.abs(zy) <= 1])
    assert abs(coverage - 0.683) < 0.05, coverage  # the target
    assert 5 < res.frc.resolution_nm < 80


def test_frc_is_finer_for_precise_localizations():
    rng = np.random.default_rng(1)
    mol = rng.uniform(0, 4000, (400, 2))
    m = rng.integers(0, 400, 20000)
    coarse = frc_resolution(*(mol[m] + 30 * rng.standard_normal((20000, 2))).T)
    fine = frc_resolution(*(mol[m] + 5 * rng.standard_normal((20000, 2))).T)
    assert fine.resolution_nm < coarse.resolution_nm


# -- commands ------------------------------------------------------------------------------------------
def test_postprocess_command_on_a_picasso_table(blinking_movie, tmp_path, capsys):
    _, gt, locs = blinking_movie
    src = tmp_path / "raw.hdf5"
    write_picasso_hdf5(locs.drop(columns=["blink", "blink_sq"]), src, 1000, 64, 64, 108.0, 1.0)
    out = tmp_path / "linked.hdf5"
    assert cli.main(["postprocess", str(src), "--link", "--undrift", "-o", str(out)]) == 0
    linked, info = read_picasso_hdf5(out)
    assert {"len", "n"} <= set(linked.columns) and linked["n"].sum() == len(locs)
    assert info[1]["FRC resolution (nm)"] > 0
    drift = pd.read_csv(tmp_path / "linked_drift.csv")
    assert list(drift.columns) == ["frame", "drift_x_nm", "drift_y_nm"] and len(drift) == 1000
    assert (tmp_path / "linked_drift.png").stat().st_size > 0
    assert "FRC resolution" in capsys.readouterr().err
    # the CSV: ThunderSTORM's columns, the merged sigma as the uncertainty
    csv = tmp_path / "linked.csv"
    assert cli.main(["postprocess", str(src), "--link", "-o", str(csv), "-q"]) == 0
    table = read_thunderstorm_csv(csv)
    ref = link(locs.drop(columns=["blink", "blink_sq"]))
    np.testing.assert_allclose(table["uncertainty_nm"], np.sqrt((ref.sigma_x_nm ** 2 + ref.sigma_y_nm ** 2) / 2),
                               rtol=1e-4)  # the HDF5 holds float32 positions: the widening's chi2 sees them
    assert list(table["detections"]) == list(ref["n"])


def test_localize_cut_short_and_resumed_gives_the_same_linked_undrifted_table(tiny_model_dir, tmp_path):
    frames, _ = simulate_movie(n_frames=48, shape=(24, 24), density=60.0, seed=2, drift=40.0)
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, np.round(frames).clip(0, 65535).astype(np.uint16))
    common = ["--model", str(tiny_model_dir), "--mode", "deepstorm", "--batch-size", "8", "--link", "--undrift",
              "--segment-frames", "12", "-q", "--skip-camera-check", "--mixed-precision", "no", "--threshold", "0.02"]
    full = tmp_path / "full.csv"
    assert cli.main(["localize", str(stack), "-o", str(full), *common]) == 0
    part = tmp_path / "part.csv"
    assert cli.main(["localize", str(stack), "-o", str(part), "--max-frames", "20", *common]) == 0
    assert (tmp_path / "part.csv.partial").is_dir()
    assert cli.main(["localize", str(stack), "-o", str(part), *common]) == 0
    assert part.read_bytes() == full.read_bytes()
    # the tiny random network's molecules repeat nothing between segments: the drift is not measured, the
    # same way in both runs (and no trace is written)
    summaries = [json.loads((tmp_path / f"{n}_postprocess.json").read_text())["drift"] for n in ("part", "full")]
    assert summaries[0] == summaries[1]
    if summaries[1]["measured"]:
        assert (tmp_path / "part_drift.csv").read_bytes() == (tmp_path / "full_drift.csv").read_bytes()
    else:
        assert not (tmp_path / "full_drift.csv").exists() and summaries[1]["reason"]
    assert "detections" in full.read_text().splitlines()[0]


def test_structureless_frames_give_no_drift():
    """New random molecules in every frame: nothing repeats between segments, so no pair's correlation
    has a clear peak and the trace stays at zero (noise peaks once set 180-330 nm of drift here)."""
    for n, shape in ((40, (32, 32)), (400, (64, 64))):
        _, gt = sd.simulate(n_frames=n, shape=shape, density=2.0, seed=4)
        d = estimate_drift(gt["frame"].to_numpy(), gt["x_nm"].to_numpy(), gt["y_nm"].to_numpy(), n,
                           segment_frames=n // 5)
        assert d.pairs_total > 0 and d.pairs_used == 0 and "correlation peak" in d.reason
        assert np.abs(d.x_nm).max() < 1.0 and np.abs(d.y_nm).max() < 1.0
