"""The app's zoomed uncertainty view: region choice, per-sample localizations, the picture, click mapping."""

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.app import zoom
from smlm_diffusers.visualization import image_axes_px, render_image


def test_crowded_window_finds_the_cluster():
    a = 100.0
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(0, 6400, 10), rng.uniform(4000, 4500, 12)]  # a cluster at x 40-45 px, y 10-15 px
    y = np.r_[rng.uniform(0, 6400, 10), rng.uniform(1000, 1500, 12)]
    r0, c0, r1, c1 = zoom.crowded_window(x, y, (64, 64), a, window_px=8)
    assert (r1 - r0, c1 - c0) == (8, 8)
    inside = (x >= c0 * a) & (x < c1 * a) & (y >= r0 * a) & (y < r1 * a)
    assert inside.sum() >= 12 and 35 <= c0 <= 40 and 5 <= r0 <= 10
    assert zoom.crowded_window([], [], (64, 32), a, 8) == (28, 12, 36, 20)  # no molecules: the centre
    assert zoom.crowded_window(x, y, (6, 6), a, 8) == (0, 0, 6, 6)  # a frame smaller than the window


def test_window_at_stays_inside_the_frame():
    assert zoom.window_at((540.0, 540.0), (16, 16), 108.0, 4) == (3, 3, 7, 7)
    assert zoom.window_at((0.0, 5000.0), (16, 16), 108.0, 4) == (0, 12, 4, 16)


def test_sample_localizations_are_the_pipelines():
    from tiny_models import tiny_pipeline

    pipe = tiny_pipeline(threshold=0.0)
    samples = np.zeros((2, 3, 32, 32), np.float32)
    # one emitter at (400, 300) nm on 108 nm pixels: (3.7037, 2.7778) camera pixels, an 8 x 8 pixel frame
    kde = sd.render_kde(torch.tensor([[400 / 108]]), torch.tensor([[300 / 108]]), torch.ones(1, 1), (8, 8))
    samples[1, 2] = kde[0, 0].numpy()
    locs = zoom.localize_samples(pipe, samples, pixel_size_nm=108.0, threshold=0.05)
    assert list(locs.columns) == ["frame", "sample", "x_nm", "y_nm"]
    assert len(locs) == 1 and (locs["frame"].iloc[0], locs["sample"].iloc[0]) == (1, 2)
    assert locs["x_nm"].iloc[0] == pytest.approx(400.0, abs=5) and locs["y_nm"].iloc[0] == pytest.approx(300.0, abs=5)
    ref = pipe.localize_density(torch.from_numpy(samples[1, 2][None]), pixel_size_nm=108.0, threshold=0.05)
    np.testing.assert_allclose(locs[["x_nm", "y_nm"]].to_numpy(), ref[["x_nm", "y_nm"]].to_numpy())


def test_render_zoom_draws_both_panels():
    rng = np.random.default_rng(1)
    mol = pd.DataFrame({"x_nm": [300.0, 500.0], "y_nm": [300.0, 420.0], "sigma_x_nm": [8.0, 30.0],
                        "sigma_y_nm": [9.0, 25.0], "probability": [1.0, 0.5]})
    samples = pd.DataFrame({"x_nm": [301.0, 299.0, 520.0], "y_nm": [300.0, 302.0, 400.0]})
    img = zoom.render_zoom(rng.normal(120, 5, (16, 16)), mol, 108.0, 4, (0, 0, 8, 8), rng.random((64, 64)),
                           "variance", "where the samples disagree", samples=samples, title="t")
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > 1000 and img.std() > 0


def test_click_mapping_matches_the_picture():
    """A pixel of render_image's picture maps back to the image pixel it shows."""
    img = np.zeros((16, 20))
    img[5, 7] = 1.0
    rgb = render_image(img, 108.0, "Raw", target_px=320)
    left, top, mag = image_axes_px(img.shape, 320, title=True)
    sub = rgb[int(top):int(top + 16 * mag), int(left):int(left + 20 * mag)].astype(int)
    ys, xs = np.nonzero((sub[..., 0] > 200) & (sub[..., 1] > 200) & (sub[..., 2] < 200))  # inferno's top colour
    assert (xs.min() // mag, ys.min() // mag, xs.max() // mag, ys.max() // mag) == (7, 5, 7, 5)


def _brute_force_windows(x_px, y_px, shape, n, m):
    """Per integer window: (molecules framed at least m inside, molecules in the border band, Gaussian density of
    sd n / 4 at its centre), by loops."""
    h, w = shape
    out = {}
    for r in range(h - n + 1):
        for c in range(w - n + 1):
            framed = band = 0
            density = 0.0
            for x, y in zip(x_px, y_px):
                density += np.exp(-0.5 * ((x - c - n / 2) ** 2 + (y - r - n / 2) ** 2) / (n / 4) ** 2)
                if c <= x < c + n and r <= y < r + n:
                    inner = c + m <= x < c + n - m and r + m <= y < r + n - m
                    framed, band = framed + inner, band + (not inner)
            out[(r, c)] = (framed, band, density)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_crowded_window_keeps_the_density_and_frames_whole(seed):
    """Of the windows holding 80% of the peak density, the chosen one has the fewest molecules in its border
    band, then the most density (checked against a loop over every window)."""
    a, shape, n = 108.0, (32, 32), 8
    _, gt = sd.simulate(n_frames=1, shape=shape, density=4.0, seed=seed)
    x, y = gt["x_nm"].to_numpy(), gt["y_nm"].to_numpy()
    r0, c0, r1, c1 = zoom.crowded_window(x, y, shape, a, n)
    windows = _brute_force_windows(x / a, y / a, shape, n, 0.5)  # the default margin: max(0.5, n / 16) px
    top = max(v[2] for v in windows.values())
    kept = {k: v for k, v in windows.items() if v[2] >= zoom.CROWD_DENSITY_KEPT * top}
    best = min(kept, key=lambda k: (kept[k][1], -kept[k][2]))
    assert (r0, c0) == best and (r1 - r0, c1 - c0) == (n, n)


def _crowd_among_scattered(seed: int, shape=(64, 64), n_crowd=12, crowd_sd_px=1.5, n_scattered=30):
    """Molecule positions (x, y camera pixels) of one frame: a crowd of ``n_crowd`` (Gaussian, sd ``crowd_sd_px``)
    around a centre a window or more from the edges, among ``n_scattered`` uniform ones; and the crowd's centre."""
    rng = np.random.default_rng(seed)
    h, w = shape
    centre = rng.uniform((8, 8), (w - 8, h - 8))  # x, y
    crowd = rng.normal(centre, crowd_sd_px, (n_crowd, 2))
    scattered = rng.uniform((0, 0), (w, h), (n_scattered, 2))
    xy = np.r_[crowd, scattered]
    return xy[:, 0], xy[:, 1], centre


def test_crowded_window_centres_the_crowd():
    """Issue 33 item 4: a crowd of 12 molecules (sd 1.5 px) among 30 scattered ones on a 64 x 64 frame; the
    window's centre lies within a quarter window of the crowd's centre in at least 18 of 20 frames (the count
    of molecules framed, before: 16 of 20 on these frames), and as many windows frame their molecules whole
    (all at least half a pixel inside: ellipses and labels seen whole)."""
    a, n = 108.0, 8
    hits, whole = [], []
    for seed in range(20):
        x, y, centre = _crowd_among_scattered(seed)
        r0, c0, r1, c1 = zoom.crowded_window(x * a, y * a, (64, 64), a, n)
        hits.append(np.hypot((c0 + c1) / 2 - centre[0], (r0 + r1) / 2 - centre[1]) <= n / 4)
        inside = (x >= c0) & (x < c1) & (y >= r0) & (y < r1)
        gap = np.minimum.reduce([x[inside] - c0, c1 - x[inside], y[inside] - r0, r1 - y[inside]])
        assert inside.sum() >= 6  # most of the crowd
        whole.append(gap.min() >= 0.5)
    assert sum(hits) >= 18, f"{sum(hits)} of 20 windows on the crowd"
    assert sum(whole) >= 18, f"{sum(whole)} of 20 windows frame their molecules whole"


def test_ellipse_factor_makes_small_sigmas_visible():
    # a 864 nm window on 480 screen px: 0.556 px per nm; a 7 nm sigma is 7.8 px across, x2 15.6, x5 39
    assert zoom.ellipse_factor([5.0, 7.0, 11.0], 864.0, 480.0) == 5
    assert zoom.ellipse_factor([15.0], 864.0, 480.0) == 1  # 16.7 px: to scale
    assert zoom.ellipse_factor([np.nan], 864.0, 480.0) == 1
    # the smallest at least half the size: a 3.7 nm molecule (4.1 px) beside 20 nm ones (22 px) is doubled
    assert zoom.ellipse_factor([3.7, 20.0, 22.0, 150.0], 864.0, 480.0) == 2


def test_render_zoom_reports_what_it_plots():
    rng = np.random.default_rng(2)
    mol = pd.DataFrame({"x_nm": [300.0, 500.0, 5000.0], "y_nm": [300.0, 420.0, 300.0], "sigma_x_nm": [4.0, 6.0, 5.0],
                        "sigma_y_nm": [5.0, 7.0, 5.0], "probability": [1.0, 0.9, 1.0]})
    img, info = zoom.render_zoom(rng.normal(120, 5, (16, 16)), mol, 108.0, 4, (0, 0, 8, 8), rng.random((64, 64)),
                                 "variance", "t", return_info=True)
    assert info["window_nm"] == [0.0, 0.0, 864.0, 864.0]
    assert [m[:2] for m in info["molecules_nm"]] == [[300.0, 300.0], [500.0, 420.0]]  # the one at 5 µm is outside
    k = info["ellipse_factor"]
    assert k > 1 and info["min_ellipse_px"] == pytest.approx(2 * k * 4.0 * info["axes_px"] / 864.0)
    assert info["min_ellipse_px"] >= 8
    # the factor is printed: the title differs from a to-scale rendering of large sigmas
    big = mol.assign(sigma_x_nm=60.0, sigma_y_nm=60.0)
    _, info_big = zoom.render_zoom(rng.normal(120, 5, (16, 16)), big, 108.0, 4, (0, 0, 8, 8), rng.random((64, 64)),
                                   "variance", "t", return_info=True)
    assert info_big["ellipse_factor"] == 1


def test_an_outlier_sigma_neither_sets_the_colour_scale_nor_escapes_the_panel():
    """One 150 nm molecule among 3-4 nm ones: the colour scale stays on the others (the outlier saturates at
    the top colour), its ×k ellipse is clipped to the panel and its label says so, and the legend's key is
    the colour and style of an ellipse that was drawn."""
    rng = np.random.default_rng(3)
    mol = pd.DataFrame({"x_nm": [200.0, 350.0, 500.0, 620.0, 400.0], "y_nm": [300.0, 420.0, 250.0, 600.0, 650.0],
                        "sigma_x_nm": [3.0, 3.5, 4.0, 150.0, 3.2], "sigma_y_nm": [3.2, 3.0, 4.2, 140.0, 3.6],
                        "probability": [1.0, 1.0, 1.0, 0.6, 1.0]})
    _, info = zoom.render_zoom(rng.normal(120, 5, (16, 16)), mol, 108.0, 4, (0, 0, 8, 8), rng.random((64, 64)),
                               "variance", "t", return_info=True)
    lo, hi = info["sigma_colour_range_nm"]
    sig = np.array([e["sigma_nm"] for e in info["ellipses"]])
    others = sig[sig < 100]
    assert lo == 0.0 and others.max() <= hi <= 2.5 * others.max(), (hi, sig)  # before: the outlier's 145 nm
    colours = [e["colour"] for e in info["ellipses"]]
    assert len(set(c for c, s in zip(colours, sig) if s < 100)) >= 3  # the others are told apart by colour
    outlier = info["ellipses"][int(np.argmax(sig))]
    assert outlier["beyond_view"] and not any(e["beyond_view"] for e in info["ellipses"] if e["sigma_nm"] < 100)
    drawn = {(e["colour"], e["linestyle"]) for e in info["ellipses"]}
    assert info["legend"] and all((key["colour"], key["linestyle"]) in drawn for key in info["legend"]), info["legend"]
    assert {key["linestyle"] for key in info["legend"]} == {"-", "--"}  # certain and uncertain molecules both keyed


def test_sigma_colour_top_is_robust():
    assert zoom.sigma_colour_top([3.0, 3.2, 150.0]) == pytest.approx(6.4)  # twice the lower median
    assert zoom.sigma_colour_top([3.0, 150.0]) == pytest.approx(6.0)  # never the largest of two
    many = np.r_[np.linspace(2.0, 10.0, 99), 150.0]
    assert zoom.sigma_colour_top(many) < 15.0  # not the 150 nm one
    assert zoom.sigma_colour_top([]) == 1.0 and zoom.sigma_colour_top([np.nan]) == 1.0
