"""The benchmark harness (benchmarks/): registry, scenarios, Picasso baseline, outputs.

Fast (tiny scenarios); most of the time is Picasso's numba compilation, paid once.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import smlm_diffusers as sd  # noqa: E402
from benchmarks.localizers import (  # noqa: E402
    LOCALIZERS,
    get_localizer,
    register_localizer,
    unregister_localizer,
)
from benchmarks.run import RESULT_COLUMNS, evaluate_interior, main, parse_options, run_benchmark  # noqa: E402
from benchmarks.scenarios import (  # noqa: E402
    Scenario,
    default_scenarios,
    density_scenarios,
    isolated_scenarios,
    simulate_grid,
    simulate_scenario,
)

CAMERA = sd.Camera()


def tiny_scenarios():
    iso = isolated_scenarios(photon_levels=(2000,), n_frames=10)[0]
    den = density_scenarios(densities=(1.0,), n_frames=4)[0]
    return [iso, den]


@pytest.fixture(scope="module")
def picasso_results():
    pytest.importorskip("picasso")
    return run_benchmark(["picasso"], tiny_scenarios(), warmup_frames=1)


# ---------------------------------------------------------------------------- scenarios


def test_default_scenarios_have_separate_tuning_seeds():
    for quick in (True, False):
        scs = default_scenarios(quick=quick)
        assert len({s.name for s in scs}) == len(scs)
        assert {s.group for s in scs} == {"isolated", "density"}
        assert all(s.seed != s.tuning_seed for s in scs)
        assert len({s.seed for s in scs} | {s.tuning_seed for s in scs}) == 2 * len(scs)
        assert all(s.isolated for s in scs if s.group == "isolated")
    with pytest.raises(ValueError):
        Scenario(name="x", group="density", seed=3, tuning_seed=3)


def test_default_sizes():
    iso = isolated_scenarios()
    assert [s.photons for s in iso] == [200, 500, 1000, 2000, 5000]
    assert all(s.n_frames * 16 >= 500 for s in iso)
    den = density_scenarios()
    assert [s.density for s in den] == [0.1, 0.5, 1.0, 2.0, 4.0]
    assert all(s.n_frames >= 50 for s in den)


def test_simulate_scenario_is_deterministic_and_isolated():
    sc = isolated_scenarios(photon_levels=(500,), n_frames=3)[0]
    f1, g1 = simulate_scenario(sc)
    f2, g2 = simulate_scenario(sc)
    np.testing.assert_array_equal(f1, f2)
    pd.testing.assert_frame_equal(g1, g2)
    f3, _ = simulate_scenario(sc, seed=sc.tuning_seed)
    assert not np.array_equal(f1, f3)
    assert f1.shape == (3, 64, 64) and f1.dtype == np.float32
    assert {"frame", "x_nm", "y_nm", "photons", "background"} <= set(g1.columns)
    assert len(g1) == 3 * 16
    for _, part in g1.groupby("frame"):
        xy = part[["x_nm", "y_nm"]].to_numpy() / CAMERA.pixel_size_nm
        d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        assert d[~np.eye(len(xy), dtype=bool)].min() >= 10.0  # 16 px grid, +-3 px jitter
    np.testing.assert_allclose(g1["photons"], 500.0)
    np.testing.assert_allclose(g1["background"], 20.0)


# ---------------------------------------------------------------------------- registry


def test_register_localizer_rejects_duplicates():
    name = "_test_dup"

    @register_localizer(name)
    def factory():
        return lambda frames_adu, camera, sigma_px: pd.DataFrame()

    try:
        with pytest.raises(ValueError):
            register_localizer(name)(lambda: None)
        assert get_localizer(name) is not None
    finally:
        unregister_localizer(name)
    assert name not in LOCALIZERS
    with pytest.raises(KeyError):
        get_localizer(name)


def test_truth_localizer_scores_perfectly_and_tunes_on_another_seed():
    scs = [isolated_scenarios(photon_levels=(1000,), n_frames=2)[0], density_scenarios(densities=(2.0,), n_frames=2)[0]]
    truths = {}
    seen = []

    def tune(frames_adu, gt, camera, sigma_px):
        seen.append((frames_adu.copy(), gt.copy()))
        return {"key": len(seen) - 1}

    @register_localizer("_test_truth")
    def factory():
        def localize(frames_adu, camera, sigma_px, key=None):
            assert key is not None  # the tuned params are passed through
            for frames, gt in truths.values():
                if frames.shape == frames_adu.shape and np.array_equal(frames, frames_adu):
                    return gt[["frame", "x_nm", "y_nm"]]
            # warm-up call on a prefix of the frames
            for frames, gt in truths.values():
                if np.array_equal(frames[: len(frames_adu)], frames_adu):
                    return gt[gt["frame"] < len(frames_adu)]
            raise AssertionError("unexpected frames")

        localize.tune = tune
        return localize

    try:
        for sc in scs:
            truths[sc.name] = simulate_scenario(sc)
        res = run_benchmark(["_test_truth"], scs)
    finally:
        unregister_localizer("_test_truth")
    assert list(res.columns) == RESULT_COLUMNS
    np.testing.assert_allclose(res["jaccard"], 1.0)
    np.testing.assert_allclose(res["rmse_nm"], 0.0, atol=1e-9)
    np.testing.assert_allclose(res["efficiency"], 100.0)
    assert res["rmse_crlb_ratio"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(res["rmse_crlb_ratio"].iloc[1])  # not isolated
    assert res["coverage_1sigma"].isna().all()  # no sigmas predicted
    # tuning saw the tuning movies, never the scored frames
    assert len(seen) == 2
    for sc, (frames, gt) in zip(scs, seen):
        tf, tg = simulate_scenario(sc, seed=sc.tuning_seed, n_frames=sc.tuning_frames)
        np.testing.assert_array_equal(frames, tf)
        pd.testing.assert_frame_equal(gt, tg)
        assert not np.array_equal(frames[: sc.n_frames], truths[sc.name][0][: len(frames)])


def test_evaluate_interior_ignores_border():
    gt = pd.DataFrame({"frame": [0, 0, 0], "x_nm": [50.0, 3000.0, 3200.0], "y_nm": [3000.0, 3000.0, 6900.0]})
    pred = pd.DataFrame({"frame": [0, 0, 0], "x_nm": [60.0, 3010.0, 100.0], "y_nm": [3000.0, 3000.0, 100.0]})
    full = evaluate_interior(gt, pred, (64, 64), 108.0, 0.0)
    assert (full["tp"], full["fp"], full["fn"]) == (2, 1, 1)
    inner = evaluate_interior(gt, pred, (64, 64), 108.0, 2.0)
    assert (inner["tp"], inner["fp"], inner["fn"]) == (1, 0, 0)
    assert inner["rmse_nm"] == pytest.approx(10.0)


# ---------------------------------------------------------------------------- Picasso


@pytest.mark.slow
def test_picasso_coordinate_convention():
    """Picasso's pixel centres are integers: x_nm = (x_picasso + 0.5) * a, no half-pixel shift."""
    pytest.importorskip("picasso")
    frames, gt = simulate_grid(n_frames=6, photons=5000.0, background=20.0, seed=11, camera=CAMERA)
    a = CAMERA.pixel_size_nm
    for pad in (True, False):
        pred = get_localizer("picasso", pad=pad)(frames, CAMERA, 1.0, min_net_gradient=500.0)
        pairs = sd.localization.match(gt, pred, 250.0)
        assert len(pairs) == len(gt) == len(pred)
        assert abs(pairs["dx"].mean()) < 0.1 * a
        assert abs(pairs["dy"].mean()) < 0.1 * a
        # each fit lands on its emitter (far tighter than a half pixel)
        assert np.sqrt(np.mean(pairs["dx"] ** 2 + pairs["dy"] ** 2)) < 0.1 * a
    assert {"sigma_x_nm", "sigma_y_nm", "photons"} <= set(pred.columns)
    assert pred["photons"].median() == pytest.approx(5000.0, rel=0.15)


@pytest.mark.slow
def test_picasso_harness_columns(picasso_results):
    res = picasso_results
    assert list(res.columns) == RESULT_COLUMNS
    assert len(res) == 2
    assert set(res["method"]) == {"picasso"}
    assert list(res["group"]) == ["isolated", "density"]
    assert (res["frames_per_s"] > 0).all() and (res["localize_s"] > 0).all()
    for t in res["tuned"]:
        assert json.loads(t)["min_net_gradient"] > 0
    for col in ("jaccard", "rmse_nm", "efficiency", "coverage_1sigma", "z_std"):
        assert res[col].notna().all(), col
    assert res["jaccard"].between(0, 1).all()


@pytest.mark.slow
def test_picasso_reaches_crlb_on_bright_isolated_emitters(picasso_results):
    iso = picasso_results[picasso_results["group"] == "isolated"].iloc[0]
    assert iso["jaccard"] > 0.95
    assert 0.8 <= iso["rmse_crlb_ratio"] <= 1.5, iso["rmse_crlb_ratio"]
    assert iso["rmse_nm"] == pytest.approx(iso["rmse_crlb_ratio"] * iso["crlb_nm"], rel=0.05)
    # Picasso's own CRLB-based precision is roughly calibrated on isolated emitters
    assert 0.5 <= iso["coverage_1sigma"] <= 0.85
    assert 0.7 <= iso["z_std"] <= 1.5


@pytest.mark.slow
def test_main_writes_outputs(tmp_path):
    pytest.importorskip("picasso")
    rc = main(["--quick", "--groups", "isolated", "--isolated-frames", "1", "--sim-frames", "20",
               "--out", str(tmp_path)])
    assert rc == 0
    res = pd.read_csv(tmp_path / "results.csv")
    assert list(res.columns) == RESULT_COLUMNS
    assert len(res) == 5
    assert (tmp_path / "isolated_rmse_vs_photons.png").stat().st_size > 0
    sim = json.loads((tmp_path / "simulator.json").read_text())
    assert sim["frames_per_s"] > 0


def test_labelled_methods_run_one_localizer_twice_with_their_own_options():
    """``LABEL=NAME`` rows: the same registered localizer under two labels, each with its options."""
    sc = isolated_scenarios(photon_levels=(1000,), n_frames=1)[0]
    frames_gt = simulate_scenario(sc)

    @register_localizer("_test_shift")
    def factory(shift_nm: float = 0.0):
        def localize(frames_adu, camera, sigma_px):
            gt = frames_gt[1]
            gt = gt[gt["frame"] < len(frames_adu)][["frame", "x_nm", "y_nm"]].copy()
            gt["x_nm"] += shift_nm
            return gt

        return localize

    try:
        res = run_benchmark(["exact=_test_shift", "shifted = _test_shift"], [sc], warmup_frames=0,
                            method_options=parse_options(["shifted.shift_nm=3"]))
    finally:
        unregister_localizer("_test_shift")
    by = res.set_index("method")["rmse_nm"]
    assert by["exact"] == pytest.approx(0.0, abs=1e-9)
    assert by["shifted"] == pytest.approx(3.0, rel=1e-6)  # lateral RMSE: sqrt(mean(dx^2 + dy^2))


def test_ddpm_sweep_writes_raw_and_calibrated_coverage_and_its_command(tmp_path):
    """The sweep's table has the DeepSTORM row, one row per (steps, samples), the raw-spread
    coverage beside the calibrated one for DDPM rows, and a sidecar with the command for the report."""
    from tiny_models import tiny_pipeline

    from benchmarks import ddpm_sweep, report

    model = tmp_path / "tiny"
    tiny_pipeline(in_channels=3, threshold=1e3, layout="camera").save_pretrained(model)  # no molecules: quick
    ddpm_sweep.main(["--model", str(model), "--steps", "1,2", "--samples", "2", "--frames", "1",
                     "--out", str(tmp_path), "--mixed-precision", "no"])
    table = pd.read_csv(tmp_path / "ddpm_sweep.csv")
    assert list(table["steps"]) == [0, 1, 2] and list(table["method"]) == ["DeepSTORM", "DDPM", "DDPM"]
    assert {"coverage_raw", "z_std_raw"} <= set(table.columns)
    meta = json.loads((tmp_path / "ddpm_sweep.json").read_text())
    assert meta["command"].startswith("python -m benchmarks.ddpm_sweep --model") and meta["frames"] == 1
    md = report.results_markdown(tmp_path)
    assert "--steps 1,2" in md and "coverage, raw spread" in md


@pytest.mark.slow
def test_movie_benchmark_writes_rows_per_model_and_size_for_the_report(tmp_path):
    """``benchmarks.movie --out``: one row per model and frame size (head and refinement from the
    folder's configs), the memory runs and breakdown in the sidecar, and the report's table."""
    from tiny_models import tiny_pipeline

    from benchmarks import movie, report

    model = tmp_path / "tiny"
    tiny_pipeline(in_channels=3, threshold=0.3).save_pretrained(model)
    movie.main(["--model", str(model), "--sizes", "16", "32", "--frames", "3", "2", "--memory-size", "32",
                "--memory-frames", "2", "4", "--memory-batch", "1", "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "movie.csv")
    assert list(table["size"]) == [16, 32] and list(table["frames"]) == [3, 2]
    assert (table["frames_per_s"] > 0).all() and (table["peak_rss_mb"] > 50).all()
    assert set(table["head"]) == {movie.model_facts(str(model))["head"]}
    meta = json.loads((tmp_path / "movie.json").read_text())
    facts = meta["models"]["tiny"]
    assert facts["memory"]["frames"] == [2, 4] and facts["breakdown_ms"]["total"] > 0
    md = "\n".join(report.movie_markdown(tmp_path))
    assert "16 x 16" in md and "32 x 32" in md and "KB per extra frame" in md and meta["command"] in md
