"""The public benchmark data (../shared/data): loaders, pixel geometry, camera settings.

Skipped where the data is absent (a user's clone has no ../shared).
"""

from pathlib import Path

import numpy as np
import pytest

import smlm_diffusers as sd
from benchmarks.public import DATASETS, DEFAULT_DATA, run_public

pytestmark = pytest.mark.skipif(not DEFAULT_DATA.is_dir(), reason="no public data at ../shared/data")
PIPELINE = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d-100nm"


def _correlation(frames, gt, sigma_px, pixel_nm, shift_px=0.0):
    """Correlation of the background-subtracted frames with Gaussians drawn at the ground truth."""
    f, h, w = frames.shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres, in pixels from the top-left corner
    model = np.zeros(frames.shape)
    for frame, x, y in gt[["frame", "x_nm", "y_nm"]].itertuples(index=False):
        model[frame] += np.exp(-((xx - x / pixel_nm - shift_px) ** 2 + (yy - y / pixel_nm) ** 2) / (2 * sigma_px**2))
    signal = frames - np.median(frames, axis=(1, 2), keepdims=True)
    return np.corrcoef(signal.ravel(), model.ravel())[0, 1]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_ground_truth_sits_on_the_spots(name):
    ds = DATASETS[name]
    for movie in (ds.test, ds.tuning):
        frames, gt = movie.load(DEFAULT_DATA)
        assert frames.ndim == 3 and frames.dtype == np.float32 and len(gt)
        assert gt["frame"].between(0, len(frames) - 1).all()
        few = frames[:5]
        sub = gt[gt["frame"] < 5]
        px = movie.camera.pixel_size_nm
        r = _correlation(few, sub, ds.sigma_px, px)
        # x is the column, pixel i is centred at (i + 0.5) px; half a pixel off or x/y swapped is worse
        assert r > 0.8, r
        assert r > _correlation(few, sub, ds.sigma_px, px, shift_px=0.5) + 0.02
        swapped = sub.rename(columns={"x_nm": "y_nm", "y_nm": "x_nm"})
        assert r > _correlation(few, swapped, ds.sigma_px, px) + 0.2


def test_all_zero_frames_are_dropped():
    # NAIRR LD train frame 878 (1-based) is empty and has no emitters (SOURCE.md)
    movie = DATASETS["nairr_ld"].tuning
    frames, gt = type(movie)(**{**movie.__dict__, "max_frames": None}).load(DEFAULT_DATA)
    assert len(frames) == 999 and frames.reshape(999, -1).any(axis=1).all()
    assert gt["frame"].max() <= 998


@pytest.mark.slow
@pytest.mark.skipif(not PIPELINE.is_dir(), reason="the 100 nm pipeline is not in this checkout")
def test_shipped_100nm_deepstorm_on_nairr_ld():
    from benchmarks import model_localizers  # noqa: F401  (registers DeepSTORM)

    res = run_public(DEFAULT_DATA, ["nairr_ld"], ["DeepSTORM"], str(PIPELINE), ddpm_frames=10, verbose=False)
    row = res[res["subset"] == "all"].iloc[0]
    assert row["n_frames"] == 500 and list(res["subset"]) == ["all", "ddpm"]
    # measured 0.94 / 18 nm; a camera or half-pixel error costs tens of nm
    assert row["jaccard"] > 0.85 and row["rmse_nm"] < 30.0
    # a DDPM subset of every frame is no subset: one row per method
    whole = run_public(DEFAULT_DATA, ["nairr_ld"], ["DeepSTORM"], str(PIPELINE), ddpm_frames=500, verbose=False)
    assert list(whole["subset"]) == ["all"] and whole["jaccard"].iloc[0] == row["jaccard"]
