"""Nothing impossible in a table: the screening of rows, drift and FRC that say "not measured", model names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smlm_diffusers.screening import describe_counts, screen_localizations
from smlm_diffusers.postprocess import estimate_drift, frc_resolution, postprocess_localizations


def _table(**cols):
    base = {"frame": [0] * 6, "x_nm": [500.0] * 6, "y_nm": [500.0] * 6, "sigma_x_nm": [10.0] * 6,
            "sigma_y_nm": [10.0] * 6, "photons": [1000.0] * 6, "fit_flag": ["ok"] * 6}
    return pd.DataFrame(base | cols)


def test_each_impossible_row_is_left_out_and_counted_once():
    locs = _table(fit_flag=["ok", "runaway", "ok", "ok", "ok", "seed_kept"],
                  sigma_x_nm=[10.0, 0.0, 0.0, 2e9, 10.0, 50.0],
                  photons=[1000.0, 0.001, 1000.0, 1000.0, 0.5, 900.0],
                  x_nm=[500.0, 500.0, 500.0, 500.0, 500.0, 500.0])
    kept, counts = screen_localizations(locs, (10, 10), 100.0, 1.0)
    assert kept["fit_flag"].tolist() == ["ok", "seed_kept"]
    # the runaway row is counted as a failed fit only, though its sigma and photons are impossible too
    assert counts == {"failed_fit": 1, "sigma": 2, "photons": 1, "outside_field": 0}
    assert describe_counts(counts) == "1 failed fits, 2 impossible sigmas, 1 under 1 photon"


def test_positions_outside_the_field_are_left_out():
    # pixel geometry: the field is [0, W a) x [0, H a)
    locs = _table(x_nm=[-0.1, 0.0, 999.9, 1000.0, 500.0, 500.0], y_nm=[500.0] * 4 + [-5.0, 1000.0])
    kept, counts = screen_localizations(locs, (10, 10), 100.0, 1.0)
    assert kept["x_nm"].tolist() == [0.0, 999.9] and counts["outside_field"] == 4


def test_a_table_without_sigmas_keeps_them_unmeasured():
    # refine off: no fit, NaN sigma means "not measured"; a row's NaN beside measured ones is impossible
    locs = _table(sigma_x_nm=[np.nan] * 6, sigma_y_nm=[np.nan] * 6, photons=[np.nan] * 6).drop(columns="fit_flag")
    kept, counts = screen_localizations(locs, (10, 10), 100.0, 1.0)
    assert len(kept) == 6 and not any(counts.values())
    locs.loc[0, ["sigma_x_nm", "sigma_y_nm"]] = 12.0
    kept, counts = screen_localizations(locs, (10, 10), 100.0, 1.0)
    assert len(kept) == 1 and counts["sigma"] == 5


def test_the_pipeline_table_has_only_possible_rows(tiny_model_dir):
    import smlm_diffusers as sd

    pipe = sd.SMLMDiffusionPipeline.from_pretrained(tiny_model_dir)
    frames, _ = sd.simulate(n_frames=2, shape=(24, 24), density=3.0, photons=1500, background=20, seed=1)
    out = pipe(frames, num_samples=0)
    raw = pipe(frames, num_samples=0, screen=False)
    assert set(out.rejected) == {"failed_fit", "sigma", "photons", "outside_field"}
    assert len(out.localizations) + sum(out.rejected.values()) == len(raw.localizations)
    kept, counts = screen_localizations(out.localizations, (24, 24), pipe.camera.pixel_size_nm, 1.0)
    assert len(kept) == len(out.localizations) and not any(counts.values())
    assert raw.rejected is None


def test_linking_leaves_out_rows_without_a_sigma_instead_of_crashing():
    rng = np.random.default_rng(0)
    locs = pd.DataFrame({"frame": np.repeat(np.arange(4), 3), "x_nm": rng.uniform(0, 3000, 12),
                         "y_nm": rng.uniform(0, 3000, 12), "sigma_x_nm": 8.0, "sigma_y_nm": 8.0})
    locs.loc[[2, 5], "sigma_x_nm"] = [0.0, np.nan]
    res = postprocess_localizations(locs, 4, undrift=False, frc=False)
    assert res.rejected == {"sigma": 2} and res.localizations["n"].sum() == 10
    assert any("linked 10 localizations" in line for line in res.lines())


def test_drift_of_a_short_movie_is_not_measured():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 6400, (2, 300))
    trace = estimate_drift(np.repeat([0, 1], 150), x, y, 2)
    assert trace.reason and "two time segments" in trace.reason
    assert not trace.x_nm.any() and not trace.y_nm.any()


def test_drift_of_segments_with_nothing_in_common_is_not_measured():
    # molecules at new random places in every segment: no correlation peak ties the segments
    rng = np.random.default_rng(2)
    frame = np.repeat(np.arange(600), 5)
    x, y = rng.uniform(0, 6400, (2, len(frame)))
    res = postprocess_localizations(pd.DataFrame({"frame": frame, "x_nm": x, "y_nm": y, "sigma_x_nm": 10.0,
                                                  "sigma_y_nm": 10.0}), 600, link=False, frc=False)
    assert res.drift.reason and "correlation peak" in res.drift.reason
    assert np.array_equal(res.localizations["x_nm"], x)  # nothing subtracted
    s = res.summary()["drift"]
    assert s["measured"] is False and "range" not in " ".join(res.lines())
    assert "drift not measured" in " ".join(res.lines())


def test_frc_says_why_it_is_not_measured():
    rng = np.random.default_rng(3)
    few = frc_resolution(*rng.uniform(0, 6400, (2, 282)))
    assert np.isnan(few.resolution_nm) and "too few localizations (282" in few.reason
    # molecules seen once each: the halves share only the field's outline
    once = frc_resolution(*rng.uniform(0, 6400, (2, 5000)))
    assert np.isnan(once.resolution_nm) and "scale of the field" in once.reason
    # the same structure seen many times: measured
    mol = rng.uniform(0, 6400, (500, 2))
    pick = rng.integers(0, 500, 20000)
    seen = frc_resolution(*(mol[pick] + 10 * rng.standard_normal((20000, 2))).T)
    assert seen.reason is None and 10 < seen.resolution_nm < 200


@pytest.mark.parametrize("name", ["smlm-ddpm-2d-100nm", "pretrained/smlm-ddpm-2d-100nm"])
def test_a_shipped_folder_is_found_by_name_from_any_folder(tmp_path, monkeypatch, name):
    from smlm_diffusers.hub.loading import resolve_pretrained

    monkeypatch.chdir(tmp_path)
    assert (resolve_pretrained(name) / "model_index.json").is_file()


def test_a_missing_model_says_what_was_tried(tmp_path, monkeypatch):
    from smlm_diffusers.hub.loading import resolve_pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no folder nothing-here relative to .*\\(shipped: .*smlm-ddpm-2d"):
        resolve_pretrained("nothing-here")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):
        resolve_pretrained("some-org/not-cached")
