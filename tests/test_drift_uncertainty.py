"""The drift trace's per-frame uncertainty against the true drift, and in every corrected row."""

import numpy as np
import pandas as pd
import pytest

from smlm_diffusers.postprocess import estimate_drift, postprocess_localizations
from smlm_diffusers.postprocess.drift import add_drift_uncertainty
from smlm_diffusers.simulation import simulate_movie


@pytest.fixture(scope="module")
def wobbling():
    """600 frames of blinking filaments, an 80 nm ramp plus a 25 nm wobble: 300-frame segments interpolate
    across it; localizations with a known Gaussian error."""
    _, gt = simulate_movie(n_frames=600, shape=(64, 64), density=80.0, photons=(1000.0, 3000.0), seed=7, drift=80.0,
                           drift_wobble_nm=25.0)
    rng = np.random.default_rng(0)
    s = 400.0 / np.sqrt(gt["photons"].to_numpy())
    x, y = gt["x_nm"] + s * rng.standard_normal(len(gt)), gt["y_nm"] + s * rng.standard_normal(len(gt))
    truth = gt.groupby("frame")[["drift_x_nm", "drift_y_nm"]].first().reindex(range(600))
    return gt, x.to_numpy(), y.to_numpy(), s, truth.interpolate(limit_direction="both").to_numpy()


def residual(trace, truth):
    r = np.c_[trace.x_nm, trace.y_nm] - truth
    return r - r.mean(0)  # the trace's origin is arbitrary


def test_interpolation_error_is_covered_by_the_stated_per_frame_uncertainty(wobbling):
    gt, x, y, _, truth = wobbling
    coarse = estimate_drift(gt["frame"].to_numpy(), x, y, 600, segment_frames=300, fine=False)
    fine = estimate_drift(gt["frame"].to_numpy(), x, y, 600, segment_frames=300)
    r0, r = residual(coarse, truth), residual(fine, truth)
    # the segments' constant error does not see the wobble between their points
    assert np.mean(np.abs(r0) <= np.array([coarse.sigma_x_nm, coarse.sigma_y_nm])) < 0.5
    assert fine.fine_windows >= 10 and fine.sigma_frame_x_nm.shape == (600,)
    assert np.sqrt(np.mean(r ** 2)) < 0.5 * np.sqrt(np.mean(r0 ** 2))  # the windows follow the wobble
    sigma = np.c_[fine.sigma_frame_x_nm, fine.sigma_frame_y_nm]
    cover = np.mean(np.abs(r) <= sigma)
    assert 0.6 < cover < 0.97, cover  # covered, and not by a sigma that hides everything
    assert np.median(sigma) < 5.0


def test_every_corrected_row_carries_its_frames_drift_uncertainty(wobbling):
    gt, x, y, s, truth = wobbling
    locs = pd.DataFrame({"frame": gt["frame"].to_numpy(), "x_nm": x, "y_nm": y, "sigma_x_nm": s, "sigma_y_nm": s})
    res = postprocess_localizations(locs, 600, link=False, frc=False, segment_frames=300)
    d, out = res.drift, res.localizations
    f = out["frame"].to_numpy()
    np.testing.assert_allclose(out["sigma_x_nm"] ** 2, locs.sort_values("frame", kind="stable")["sigma_x_nm"] ** 2
                               + d.sigma_frame_x_nm[f] ** 2)
    err = out["x_nm"].to_numpy() - (gt["x_nm"] - gt["drift_x_nm"]).sort_index().to_numpy()[
        np.argsort(gt["frame"].to_numpy(), kind="stable")]
    z = (err - np.median(err)) / out["sigma_x_nm"].to_numpy()
    assert abs(np.mean(np.abs(z) <= 1) - 0.683) < 0.05
    # a linked row takes its middle frame's drift error, once (shared by its frames)
    row = pd.DataFrame({"frame": [100], "len": [5], "sigma_x_nm": [1.0], "sigma_y_nm": [1.0]})
    widened = add_drift_uncertainty(row, d)
    assert widened["sigma_x_nm"][0] == pytest.approx(np.hypot(1.0, d.sigma_frame_x_nm[102]))
