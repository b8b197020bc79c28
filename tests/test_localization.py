"""localize_kde recovers known emitters from exact KDEs (render_kde)."""

import numpy as np
import pytest
import torch

from smlm_diffusers import localize_kde, render_kde
from smlm_diffusers.localization.peaks import COLUMNS, _candidates_numpy, _candidates_torch, _refine_gaussian, centroid

PIXEL_NM = 108.0
UP = 4
NM_PER_UP_PX = PIXEL_NM / UP  # 27 nm KDE pixels


def exact_kde(xs_px, ys_px, shape=(16, 16)):
    """Exact KDE [F, 1, 4H, 4W] of emitters given per frame in camera pixels (lists of lists)."""
    n = max(len(x) for x in xs_px)
    x = torch.zeros(len(xs_px), n)
    y = torch.zeros(len(xs_px), n)
    w = torch.zeros(len(xs_px), n)
    for f, (xf, yf) in enumerate(zip(xs_px, ys_px)):
        x[f, : len(xf)] = torch.tensor(xf, dtype=torch.float32)
        y[f, : len(yf)] = torch.tensor(yf, dtype=torch.float32)
        w[f, : len(xf)] = 1.0
    return render_kde(x, y, w, shape, upsampling=UP, sigma=1.0)


def nearest_errors(df, xs_px, ys_px):
    """Per ground-truth emitter, (dx, dy) in nm to the nearest localization of its frame."""
    errs = []
    for f, (xf, yf) in enumerate(zip(xs_px, ys_px)):
        d = df[df.frame == f]
        gx, gy = np.asarray(xf) * PIXEL_NM, np.asarray(yf) * PIXEL_NM
        dist = np.hypot(d.x_nm.values[None] - gx[:, None], d.y_nm.values[None] - gy[:, None])
        j = dist.argmin(1)
        errs.append(np.stack([d.x_nm.values[j] - gx, d.y_nm.values[j] - gy], 1))
    return np.concatenate(errs)


@pytest.fixture(scope="module")
def isolated():
    """Two frames of 36 emitters on a jittered 6 x 6 lattice (>= 3.7 camera px apart)."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for _ in range(2):
        gx, gy = np.meshgrid(np.arange(6), np.arange(6))
        xs.append(list((gx.ravel() + 0.5) * 5.0 + rng.uniform(-0.6, 0.6, 36)))
        ys.append(list((gy.ravel() + 0.5) * 5.0 + rng.uniform(-0.6, 0.6, 36)))
    return exact_kde(xs, ys, shape=(30, 30)), xs, ys


def test_gaussian_refinement_is_subnanometre_on_isolated_emitters(isolated):
    kde, xs, ys = isolated
    df = localize_kde(kde, pixel_size_nm=PIXEL_NM, upsampling=UP)
    assert list(df.columns) == COLUMNS
    assert len(df) == 72 and df.frame.dtype == np.int64
    err = nearest_errors(df, xs, ys)
    rmse = np.sqrt(np.mean(np.sum(err**2, 1)))
    assert rmse < 0.5  # measured ~1e-4 nm (float32 KDE)
    # one emitter in a 5 x 5 window of sigma-1 kernel holds ~erf(2.5/sqrt 2)^2 of its mass
    assert np.all((df.kde_mass > 0.94) & (df.kde_mass < 0.98))


def test_centroid_and_none_are_coarser(isolated):
    kde, xs, ys = isolated
    rmse = {}
    for refine in ("gaussian", "centroid", "none"):
        err = nearest_errors(localize_kde(kde, refine=refine), xs, ys)
        rmse[refine] = np.sqrt(np.mean(np.sum(err**2, 1)))
    assert rmse["centroid"] < 3.0  # measured ~0.9 nm
    assert rmse["gaussian"] < rmse["centroid"] < rmse["none"]
    # argmax alone: pixel centres, error ~ 27 / sqrt(12) nm per axis
    df = localize_kde(kde, refine="none")
    np.testing.assert_allclose(np.mod(df.x_nm.values, NM_PER_UP_PX), NM_PER_UP_PX / 2, atol=1e-9)
    assert 5.0 < rmse["none"] / np.sqrt(2) < 10.0


def test_close_pair_three_upsampled_pixels_apart():
    # 3 KDE pixels = 81 nm apart, along a diagonal-ish direction
    x0, y0 = 8.13, 8.37
    sep = 3 / UP
    xs = [[x0, x0 + sep * 0.8]]
    ys = [[y0, y0 + sep * 0.6]]
    kde = exact_kde(xs, ys)
    df = localize_kde(kde)
    assert len(df) == 2
    err = np.hypot(*nearest_errors(df, xs, ys).T)
    assert err.max() < 8.0  # well below one 27 nm KDE pixel
    # neighbour subtraction is what removes the mutual pull
    err0 = np.hypot(*nearest_errors(localize_kde(kde, deblend=0), xs, ys).T)
    assert err.max() < err0.max() / 2


@pytest.mark.parametrize(
    "x, y",
    [(0.05, 8.0), (15.97, 4.0), (8.0, 0.02), (6.0, 15.95), (0.1, 0.02), (15.9, 15.9)],
)
def test_border_emitters(x, y):
    df = localize_kde(exact_kde([[x]], [[y]]))
    assert len(df) == 1
    err = np.hypot(df.x_nm[0] - x * PIXEL_NM, df.y_nm[0] - y * PIXEL_NM)
    assert err < 0.5


def test_empty_kde_gives_empty_table_with_columns():
    for kde in (np.zeros((3, 32, 32), np.float32), torch.zeros(2, 1, 16, 16)):
        df = localize_kde(kde)
        assert df.empty and list(df.columns) == COLUMNS
        assert df.frame.dtype == np.int64


def test_threshold_respected():
    kde = exact_kde([[4.0, 10.0]], [[4.0, 10.0]])
    kde[0, 0, :, 20:] *= 0.3  # the second emitter now peaks at ~0.04
    df = localize_kde(kde, threshold=0.05)
    assert len(df) == 1 and (df.peak >= 0.05).all()
    assert abs(df.x_nm[0] - 4.0 * PIXEL_NM) < 0.5
    assert len(localize_kde(kde, threshold=0.01)) == 2
    assert len(localize_kde(kde, threshold=1.0)) == 0


def test_input_layouts_agree_and_frame_offset():
    kde = exact_kde([[3.3, 9.1], [5.5]], [[4.2, 11.7], [6.25]])
    ref = localize_kde(kde)
    assert ref.frame.tolist() == [0, 0, 1]
    for variant in (kde[:, 0], kde[:, 0].numpy(), kde.double()):
        np.testing.assert_allclose(localize_kde(variant)[["x_nm", "y_nm"]], ref[["x_nm", "y_nm"]], atol=1e-6)
    assert len(localize_kde(kde.bfloat16())) == 3  # no numpy dtype: converted, not rejected
    single = localize_kde(kde[1, 0].numpy(), frame_offset=7)
    assert single.frame.tolist() == [7]
    with pytest.raises(ValueError):
        localize_kde(np.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError):
        localize_kde(kde, refine="spline")
    with pytest.raises(ValueError):
        localize_kde(kde, window=4)


def test_torch_backend_matches_numpy_backend():
    # the device path (used for GPU tensors) must find the same candidates and patches
    kde = exact_kde([[0.1, 3.3, 9.1], [5.5]], [[0.2, 4.2, 11.7], [15.9]])[:, 0]
    a = _candidates_numpy(kde.numpy(), 0.05, 5)
    b = _candidates_torch(kde, 0.05, 5)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6)
    assert np.isnan(a[3]).any()  # the corner emitter's window leaves the image


def test_flat_plateau_gives_one_peak():
    kde = np.zeros((1, 12, 12))
    kde[0, 5:7, 5:7] = 0.2  # a 2 x 2 plateau
    df = localize_kde(kde, refine="centroid")
    assert len(df) == 1
    np.testing.assert_allclose(df[["x_nm", "y_nm"]].values[0], [6 * NM_PER_UP_PX, 6 * NM_PER_UP_PX])


def test_diverging_fit_falls_back_to_centroid():
    # a window whose mass sits in a corner: the fit leaves the peak pixel, the centroid stays
    patch = np.zeros((1, 5, 5))
    patch[0, 2, 2] = 0.1
    patch[0, 0, 0] = 1.0
    valid = np.ones_like(patch, dtype=bool)
    x0, y0 = centroid(patch, valid)
    zero = np.zeros(1, np.int64)
    x, y = _refine_gaussian(zero, zero + 2, zero + 2, patch, valid, x0, y0, 1.0, 20, 0)
    np.testing.assert_allclose([x[0], y[0]], [x0[0], y0[0]])


def test_noisy_kde_gives_finite_nearby_positions():
    rng = np.random.default_rng(3)
    kde = exact_kde([[3.3, 9.1, 9.6]], [[4.2, 11.7, 11.9]])[:, 0].numpy()
    kde = kde + rng.normal(0, 0.02, kde.shape)
    df = localize_kde(kde, threshold=0.05)
    assert len(df) > 0 and np.isfinite(df[["x_nm", "y_nm"]].values).all()
    assert df.x_nm.between(0, 16 * PIXEL_NM).all() and df.y_nm.between(0, 16 * PIXEL_NM).all()
