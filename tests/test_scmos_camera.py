"""Per-pixel camera calibration (the paper's eq. 4; issue 34): an sCMOS camera's offset, read-noise variance
and gain maps in the simulator, the Poisson-normal likelihood of the fits, the bounds, and their refusal of
maps that do not fit the frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth, crlb_configuration
from smlm_diffusers.localization.configurations import ambiguous, arbitrate
from smlm_diffusers.localization.refine import refine_frames
from smlm_diffusers.pipelines.sampling import NO_DETECTIONS

SHAPE = (48, 48)
ROOT_MODELS = Path(__file__).resolve().parents[1] / "pretrained"


def scmos_maps(shape=SHAPE, seed=0):
    """Offset (ADU), read-noise variance (ADU^2) and gain (ADU/e-) like the real sample's: offsets within a few
    ADU of 100, gains 1.8-3.9, variances near 5.7 ADU^2 with 5% hot pixels of 200-2000 ADU^2."""
    rng = np.random.default_rng(seed)
    var = np.exp(rng.normal(np.log(5.7), 0.3, shape))
    hot = rng.random(shape) < 0.05
    var[hot] = rng.uniform(200.0, 2000.0, hot.sum())
    return 100.0 + rng.normal(0.0, 3.0, shape), var, rng.uniform(1.8, 3.9, shape)


@pytest.fixture(scope="module")
def scmos():
    offset, variance, gain = scmos_maps()
    return sd.Camera(pixel_size_nm=100.0).with_maps(offset=offset, variance=variance, gain=gain)


def _numeric_equal(a, b) -> bool:
    cols = a.select_dtypes("number").columns
    return list(a.columns) == list(b.columns) and all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True) for c in cols)


# -- the camera value ------------------------------------------------------------------------------------------
def test_maps_set_the_summaries_and_the_uniform_camera(scmos):
    offset, variance, gain = scmos_maps()
    assert scmos.has_maps and scmos.maps.shape == SHAPE
    assert scmos.offset == pytest.approx(np.median(offset)) and scmos.gain == pytest.approx(np.median(gain))
    assert scmos.read_noise == pytest.approx(np.sqrt(np.median(variance)) / np.median(gain))
    flat = scmos.uniform()
    assert not flat.has_maps and (flat.offset, flat.gain, flat.read_noise) == (scmos.offset, scmos.gain,
                                                                              scmos.read_noise)
    np.testing.assert_allclose(scmos.read_variance(), variance / gain**2)
    # dataclass tools see the scalar fields only; replace keeps the maps
    assert set(dataclasses.asdict(scmos)) == {"pixel_size_nm", "offset", "gain", "read_noise", "qe"}
    assert dataclasses.replace(scmos, qe=0.9).maps == scmos.maps
    assert scmos != flat and hash(scmos) == hash(sd.Camera(pixel_size_nm=100.0).with_maps(*scmos_maps()))


def test_crop_is_the_map_slice(scmos):
    offset, variance, gain = scmos_maps()
    tile = scmos.crop(5, 7, 20, 30)
    assert tile.maps.shape == (20, 30)
    np.testing.assert_array_equal(tile.maps.offset, offset[5:25, 7:37])
    np.testing.assert_array_equal(tile.maps.variance, variance[5:25, 7:37])
    np.testing.assert_array_equal(tile.maps.gain, gain[5:25, 7:37])
    adu = np.random.default_rng(1).uniform(90.0, 200.0, SHAPE)
    np.testing.assert_array_equal(tile.adu_to_photons(adu[5:25, 7:37]), scmos.adu_to_photons(adu)[5:25, 7:37])
    assert scmos.crop(0, 0, *SHAPE) is not None and sd.Camera().crop(3, 3, 4, 4) == sd.Camera()
    with pytest.raises(ValueError, match="not inside the camera maps of 48 x 48"):
        scmos.crop(40, 0, 20, 10)


def test_maps_are_referenced_by_path_not_inlined(tmp_path):
    import tifffile
    import yaml

    offset, variance, gain = scmos_maps((16, 24))
    for name, arr in (("offset", offset), ("variance", variance), ("gain", gain)):
        tifffile.imwrite(tmp_path / f"{name}.tif", arr.astype(np.float32))
    doc = {"optics": {"camera": {"pixel_size_nm": 160.0, "offset_map": "offset.tif", "variance_map": "variance.tif",
                                 "gain_map": "gain.tif"}, "psf": {"type": "gaussian", "sigma_px": 1.2}}}
    (tmp_path / "optics.yaml").write_text(yaml.safe_dump(doc))
    optics = sd.Optics.from_yaml(tmp_path / "optics.yaml")  # paths relative to the YAML file
    cam = optics.camera
    assert cam.maps.shape == (16, 24) and cam.pixel_size_nm == 160.0
    np.testing.assert_array_equal(cam.maps.gain, gain.astype(np.float32))
    block = cam.to_dict()
    assert block["gain_map"] == str(tmp_path / "gain.tif") and isinstance(block["offset"], float)
    assert sd.Camera.from_dict(block) == cam
    memory = sd.Camera().with_maps(gain=gain).to_dict()  # held in memory: named by its digest, not inlined
    assert memory["gain_map"].startswith("sha1:")
    with pytest.raises(ValueError, match="held in memory"):
        sd.Camera.from_dict(memory)
    with pytest.raises(ValueError, match="unknown camera keys"):
        sd.Camera.from_dict({"gain_maps": "gain.tif"})


# -- scalar maps: the scalar camera, bit for bit ----------------------------------------------------------------
def test_uniform_maps_equal_the_scalar_camera_bit_for_bit():
    """Maps holding one value (exact in binary) give exactly the scalar camera's frames, fits and bounds."""
    shape = (32, 32)
    scalar = sd.Camera(pixel_size_nm=100.0, offset=100.0, gain=2.0, read_noise=1.5)
    maps = scalar.with_maps(offset=np.full(shape, 100.0), variance=np.full(shape, 9.0), gain=np.full(shape, 2.0))
    assert (maps.offset, maps.gain, maps.read_noise) == (100.0, 2.0, 1.5)
    kw = dict(n_frames=4, shape=shape, density=2.0, photons=1000.0, background=10.0, seed=1)
    frames, gt = sd.simulate(camera=scalar, **kw)
    frames_maps, gt_maps = sd.simulate(camera=maps, **kw)
    np.testing.assert_array_equal(frames, frames_maps)
    seeds = gt[["frame", "x_nm", "y_nm"]]
    fit = refine_frames(frames, seeds, scalar, 1.0, write_sigma=True)
    fit_maps = refine_frames(frames, seeds, maps, 1.0, write_sigma=True)
    assert _numeric_equal(fit, fit_maps) and (fit["fit_flag"] == fit_maps["fit_flag"]).all()
    for a, b in zip(crlb_at_truth(gt, 1.0, scalar), crlb_at_truth(gt, 1.0, maps)):
        np.testing.assert_array_equal(a, b)
    g0 = gt[gt["frame"] == 0]
    args = (g0["x_nm"] / 100.0, g0["y_nm"] / 100.0, g0["photons"], 10.0, shape, 1.0)
    for a, b in zip(crlb_configuration(*args, scalar), crlb_configuration(*args, maps)):
        np.testing.assert_array_equal(a, b)
    doubt = ambiguous(fit)  # the pipeline's DeepSTORM-mode arbitration: split proposals where in doubt
    assert doubt.any()
    weighed = arbitrate(frames, fit, NO_DETECTIONS, 0, scalar, 1.0, split_mask=doubt)
    assert _numeric_equal(weighed, arbitrate(frames, fit, NO_DETECTIONS, 0, maps, 1.0, split_mask=doubt))


# -- the per-pixel likelihood against Monte Carlo ---------------------------------------------------------------
def test_shifted_data_is_poisson_normal_in_every_pixel(scmos):
    """d'_k = (ADU - o_k) / g_k + sigma_k^2 / g_k^2 has mean and variance mu_k + sigma_k^2 / g_k^2 (eqs. 4-6)."""
    gen, n = torch.Generator().manual_seed(0), 4000
    camera = scmos.crop(0, 0, 24, 24)
    expected = torch.full((n, 24, 24), 6.0, dtype=torch.float64)
    d = camera.shifted_electrons(camera.expose(expected, generator=gen).double())
    model = 6.0 + camera.read_variance()
    assert (camera.read_variance() > 20.0).sum() >= 10  # hot pixels among them
    np.testing.assert_allclose(d.mean(0).numpy(), model, rtol=0.0, atol=4.0 * np.sqrt(model / n).max())
    rel = d.var(0).numpy() / model - 1.0  # variance of a variance estimate: 2 / n (plus the Gaussian part's kurtosis)
    assert np.abs(rel).max() < 6.0 * np.sqrt(2.0 / n) and abs(rel.mean()) < 0.01


def test_fit_variance_reaches_the_per_pixel_crlb(scmos):
    """Isolated emitters simulated through the maps and fitted with them: the mean of error^2 over the per-pixel
    CRLB (eq. 14 with each pixel's sigma_k^2 / g_k^2) is 1 within 10%, and the fit's own bound covers 68%;
    fitted with one uniform camera (the maps' medians) the errors are far larger than that bound."""
    frames, gt = sd.simulate(n_frames=200, shape=SHAPE, structure="grid", spacing_px=12, jitter_px=3,
                             photons=1000.0, background=10.0, camera=scmos, seed=3)
    cx, cy = crlb_at_truth(gt, 1.0, scmos)
    seeds = gt[["frame", "x_nm", "y_nm"]]
    ratio = {}
    for name, camera in (("maps", scmos), ("uniform", scmos.uniform())):
        fit = refine_frames(frames, seeds, camera, 1.0, split=False, seed_consistency=None)
        assert (fit["fit_flag"] == "ok").all()
        ex, ey = (fit["x_nm"] - gt["x_nm"]).to_numpy(), (fit["y_nm"] - gt["y_nm"]).to_numpy()
        ratio[name] = np.mean(np.r_[ex**2 / cx, ey**2 / cy])
        if name == "maps":
            z = np.r_[ex / fit["crlb_x_nm"], ey / fit["crlb_y_nm"]]
            assert abs(np.mean(np.abs(z) <= 1.0) - 0.683) < 0.03
    assert abs(ratio["maps"] - 1.0) < 0.10, ratio
    assert ratio["uniform"] > 1.5, ratio
    # the maps matter for the bound itself: near hot pixels it is far above the uniform camera's
    cu = crlb_at_truth(gt, 1.0, scmos.uniform())[0]
    assert np.max(cx / cu) > 1.2


# -- refusal of maps that do not fit the frames -----------------------------------------------------------------
def test_mismatched_maps_are_refused_with_both_shapes(scmos):
    frames = np.full((2, 40, 48), 110.0, np.float32)
    seeds = sd.simulate(n_frames=2, shape=(40, 48), density=1.0, seed=0)[1][["frame", "x_nm", "y_nm"]]
    for call in (lambda: refine_frames(frames, seeds, scmos, 1.0),
                 lambda: sd.simulate(n_frames=1, shape=(40, 48), camera=scmos),
                 lambda: scmos.adu_to_photons(frames),
                 lambda: arbitrate(frames, seeds.assign(sigma_x_nm=10.0, sigma_y_nm=10.0, photons=500.0,
                                                        background=5.0), NO_DETECTIONS, 0, scmos, 1.0)):
        with pytest.raises(ValueError, match=r"48 x 48 .* 40 x 48"):
            call()
    with pytest.raises(ValueError, match="transposed"):
        sd.Camera().with_maps(gain=np.full((48, 40), 2.0)).check_shape((40, 48))
    with pytest.raises(ValueError, match="gain map must be > 0"):
        sd.Camera().with_maps(gain=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        sd.Camera().with_maps(gain=np.ones((4, 4)), offset=np.ones((4, 5)))


# -- DeepSTORM's input, the pipeline, tiles, 3D, the command line -----------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from tiny_models import tiny_pipeline

    return tiny_pipeline(threshold=0.1)


def test_deepstorm_input_uses_each_pixels_calibration(scmos, tiny):
    net = tiny.kde_net
    scalar = sd.Camera(offset=100.0, gain=2.0, read_noise=1.5)
    uniform = scalar.with_maps(offset=np.full(SHAPE, 100.0), variance=np.full(SHAPE, 9.0), gain=np.full(SHAPE, 2.0))
    frames = scalar.expose(torch.full((3, *SHAPE), 8.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.normalize(frames, camera=uniform), net.normalize(frames, camera=scalar))
    assert torch.equal(net.normalize(frames, camera=scalar), net.normalize(frames, 100.0, 2.0, 1.5))
    # plain background through the real-like maps: with them every pixel's noise is about one unit and its
    # level the background's; with one uniform camera the hot pixels stand out as spikes
    frames = scmos.expose(torch.full((300, *SHAPE), 4.0), generator=torch.Generator().manual_seed(1))
    scale = float(net.config.input_scale)
    hot = torch.as_tensor(scmos.maps.variance > 200.0)
    per_pixel = net.normalize(frames, camera=scmos)[:, 0] * scale
    flat = net.normalize(frames, camera=scmos.uniform())[:, 0] * scale
    assert per_pixel.std(0)[hot].max() < 1.5 and flat.std(0)[hot].median() > 2.5
    level = per_pixel.mean(0)
    assert (level[hot] - level[~hot].median()).abs().max() < 0.5
    with pytest.raises(ValueError, match=r"48 x 48 .* 24 x 24"):
        net.predict(np.full((1, 24, 24), 100.0, np.float32), camera=scmos)


def test_pipeline_with_uniform_maps_is_the_scalar_pipeline_and_refuses_other_shapes(scmos, tiny):
    scalar = sd.Camera(offset=100.0, gain=2.0, read_noise=1.5)
    shape = (24, 24)
    uniform = scalar.with_maps(offset=np.full(shape, 100.0), variance=np.full(shape, 9.0), gain=np.full(shape, 2.0))
    frames, _ = sd.simulate(n_frames=3, shape=shape, density=2.0, camera=scalar, seed=2)
    kw = dict(num_samples=0, threshold=3e-6, mixed_precision="no", refine=True)
    a, b = tiny(frames, camera=scalar, **kw), tiny(frames, camera=uniform, **kw)
    np.testing.assert_array_equal(a.deepstorm_kde, b.deepstorm_kde)
    assert len(a.localizations) > 0 and _numeric_equal(a.localizations, b.localizations)
    with pytest.raises(ValueError, match=r"48 x 48 .* 24 x 24"):
        tiny(frames, camera=scmos, **kw)


def test_tiles_of_a_movie_get_their_part_of_the_maps(scmos, tiny):
    """Tiled runs (and so streaming and multi-process runs, which tile whole frames) hand each call the maps of
    its tile's window, and the windows are the frames' pixels under it."""
    from smlm_diffusers.movie.chunks import localize_frames

    offset = scmos_maps()[0]
    frames, _ = sd.simulate(n_frames=3, shape=SHAPE, density=1.0, camera=scmos, seed=4)
    seen = []

    class Recorder:
        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __call__(self, windows, optics=None, **kw):  # the runner passes one resolved Optics per call
            seen.append((np.array(windows), optics.camera))
            return self.pipe(windows, optics=optics, **kw)

    def post(locs, windows, camera=None):
        seen.append(("post", camera))
        return locs

    localize_frames(Recorder(tiny), frames, camera=scmos, tile_size=20, tile_margin=4, threshold=3e-6,
                    mixed_precision="no", postprocess=post)
    calls = [s for s in seen if not isinstance(s[0], str)]
    assert len(calls) == 9 and all(c.has_maps for _, c in calls)
    for windows, camera in calls:
        # find the window: its first frame's pixels equal a block of the frames at that block's offset map
        hits = [(r, c) for r in range(SHAPE[0] - windows.shape[1] + 1) for c in range(SHAPE[1] - windows.shape[2] + 1)
                if np.array_equal(camera.maps.offset, offset[r:r + windows.shape[1], c:c + windows.shape[2]])]
        assert len(hits) == 1
        r, c = hits[0]
        assert any(np.array_equal(windows[0], frames[f, r:r + windows.shape[1], c:c + windows.shape[2]])
                   for f in range(3))
    assert [s[1] for s in seen if isinstance(s[0], str)] == [c for _, c in calls]


def test_3d_fits_take_each_pixels_read_noise(scmos):
    from smlm_diffusers.localization.localize3d import localize_3d
    from smlm_diffusers.localization.spot_fit import fit_3d, fit_elliptical

    psf = sd.AstigmaticPSF()
    rng = np.random.default_rng(0)
    windows = rng.poisson(5.0, (6, 11, 11)).astype(np.float64) + 40.0 * np.exp(
        -((np.arange(11) - 5.3)[:, None] ** 2 + (np.arange(11) - 5.6)[None] ** 2) / 3.0)
    for fit in (lambda **kw: fit_3d(windows, psf, 1.5, **kw), lambda **kw: fit_elliptical(windows, 1.5, **kw)):
        a, b = fit(), fit(read_var=np.full(windows.shape, 2.25))
        np.testing.assert_array_equal(a.theta, b.theta)
        np.testing.assert_array_equal(a.crlb, b.crlb)
    frames, gt = sd.simulate(n_frames=10, shape=SHAPE, structure="grid", spacing_px=12, jitter_px=2, photons=3000.0,
                             background=10.0, camera=scmos, psf=psf, z_nm=(-300.0, 300.0), seed=5)
    from smlm_diffusers.localization.matching import match

    coverage = {}
    for name, camera in (("maps", scmos), ("uniform", scmos.uniform())):
        locs = localize_3d(frames, sd.Optics(camera, psf))
        pairs = match(gt, locs, 250.0)
        assert len(pairs) >= 0.9 * len(gt)
        p = locs.iloc[pairs["pred_index"]]
        z = np.r_[pairs["dx"] / p["sigma_x_nm"].to_numpy(), pairs["dy"] / p["sigma_y_nm"].to_numpy()]
        coverage[name] = np.mean(np.abs(z) <= 1.0)
    assert abs(coverage["maps"] - 0.683) < 0.08 and coverage["uniform"] < coverage["maps"], coverage


def _write_maps(folder, shape, seed=0):
    import tifffile

    paths = {}
    for name, arr in zip(("offset", "variance", "gain"), scmos_maps(shape, seed)):
        paths[name] = folder / f"{name}.tif"
        tifffile.imwrite(paths[name], arr.astype(np.float32))
    return paths


@pytest.mark.parametrize("command", ["localize", "estimate"])
def test_the_cli_refuses_maps_of_another_shape(command, tiny_model_dir, tmp_path, capsys):
    import tifffile

    from smlm_diffusers import cli

    frames, _ = sd.simulate(n_frames=2, shape=(24, 32), density=1.0, seed=0)
    tifffile.imwrite(tmp_path / "movie.tif", frames, photometric="minisblack")
    maps = _write_maps(tmp_path, (32, 24))  # the frames' shape transposed
    extra = ["-o", str(tmp_path / "l.csv"), "--model", str(tiny_model_dir)] if command == "localize" else []
    with pytest.raises(SystemExit) as exc:
        cli.main([command, str(tmp_path / "movie.tif"), *extra, "--variance-map", str(maps["variance"])])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "32 x 24" in err and "24 x 32" in err and "transposed" in err
    assert "Traceback" not in err


def test_the_cli_localizes_with_maps_named_by_options_or_optics_yaml(tiny_model_dir, tmp_path):
    import tifffile
    import yaml

    from smlm_diffusers import cli
    from smlm_diffusers.io import read_thunderstorm_csv

    shape = (16, 20)
    maps = _write_maps(tmp_path, shape)
    camera = sd.Camera().with_maps(**{k: str(v) for k, v in maps.items()})
    frames, _ = sd.simulate(n_frames=2, shape=shape, density=1.0, photons=3000.0, camera=camera, seed=0)
    tifffile.imwrite(tmp_path / "movie.tif", frames, photometric="minisblack")
    run = ["--mode", "deepstorm", "--threshold", "3e-6", "--mixed-precision", "no", "-q", "--skip-camera-check"]
    by_option = tmp_path / "a.csv"
    assert cli.main(["localize", str(tmp_path / "movie.tif"), "-o", str(by_option), "--model", str(tiny_model_dir),
                     *run, *sum(([f"--{k}-map", str(v)] for k, v in maps.items()), [])]) == 0
    (tmp_path / "optics.yaml").write_text(yaml.safe_dump({"optics": {
        "camera": {"pixel_size_nm": 108.0, "offset_map": "offset.tif", "variance_map": "variance.tif",
                   "gain_map": "gain.tif"}, "psf": {"type": "gaussian", "sigma_px": 1.0}}}))
    by_yaml = tmp_path / "b.csv"
    assert cli.main(["localize", str(tmp_path / "movie.tif"), "-o", str(by_yaml), "--model", str(tiny_model_dir),
                     *run, "--optics", str(tmp_path / "optics.yaml")]) == 0
    a, b = read_thunderstorm_csv(by_option), read_thunderstorm_csv(by_yaml)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)


def test_the_app_checks_uploaded_maps(tmp_path):
    import tifffile

    from smlm_diffusers.app import inputs

    maps = _write_maps(tmp_path, (16, 24))
    camera = inputs.add_camera_maps(inputs.check_camera(100.0, 1.0, 108.0), (16, 24), str(maps["offset"]),
                                    str(maps["variance"]), str(maps["gain"]))
    assert camera.maps.shape == (16, 24) and camera.pixel_size_nm == 108.0
    assert inputs.add_camera_maps(sd.Camera(), (16, 24)) == sd.Camera()
    tifffile.imwrite(tmp_path / "stack.tif", np.ones((2, 16, 24), np.float32), photometric="minisblack")
    (tmp_path / "notes.txt").write_text("x")
    tifffile.imwrite(tmp_path / "zero_gain.tif", np.zeros((16, 24), np.float32))
    for path, shape, message in ((maps["gain"], (24, 16), "16 x 24 pixels but the frames are 24 x 16 (transposed"),
                                 (maps["gain"], (20, 20), "16 x 24 pixels but the frames are 20 x 20"),
                                 (tmp_path / "stack.tif", (16, 24), "several images"),
                                 (tmp_path / "notes.txt", (16, 24), "not a TIFF file"),
                                 (tmp_path / "zero_gain.tif", (16, 24), "gain map must be > 0")):
        with pytest.raises(inputs.InputError, match=message.replace("(", r"\(")) as err:
            inputs.add_camera_maps(sd.Camera(), shape, gain_map=str(path))
        assert "Gain map" in str(err.value)


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "storm_analysis_scmos_sample"


@pytest.mark.skipif(not REAL.is_dir(), reason="no real sCMOS frames at ../shared/data/storm_analysis_scmos_sample")
def test_the_real_sample_loads_and_localizes_with_its_maps():
    import tifffile

    from smlm_diffusers.camera_check import check_camera

    frames = tifffile.imread(REAL / "sample_frames.tif").astype(np.float32)
    camera = sd.Camera(pixel_size_nm=160.0).with_maps(offset=REAL / "camera_offset_adu.tif",
                                                      variance=REAL / "camera_variance_adu2.tif",
                                                      gain=REAL / "camera_gain_adu_per_e.tif")
    assert camera.maps.shape == frames.shape[1:] and camera.gain == pytest.approx(2.11, abs=0.01)
    assert camera.read_noise == pytest.approx(1.13, abs=0.01)  # SOURCE.md's median read noise
    # the variance map fits the frames' own noise; transposed (as storm-analysis stores it) it does not
    assert not any("variance map" in w for w in check_camera(frames, camera).warnings)
    flipped = sd.Camera(pixel_size_nm=160.0).with_maps(*(m.T for m in (camera.maps.offset, camera.maps.variance,
                                                                        camera.maps.gain)))
    assert any("transposed, the maps fit" in w for w in check_camera(frames, flipped).warnings)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(ROOT_MODELS / "smlm-ddpm-2d-100nm")
    pipe.set_progress_bar_config(disable=True)
    optics = pipe.optics.replace(psf=sd.GaussianPSF(1.2))
    near = {}
    for name, cam in (("maps", camera), ("uniform", camera.uniform())):
        locs = pipe(frames[:2], num_samples=0, optics=optics, camera=cam, mixed_precision="no").localizations
        assert len(locs) > 50 and np.isfinite(locs[["sigma_x_nm", "sigma_y_nm"]].to_numpy()).all()
        r, c = (np.clip((locs[k].to_numpy() / 160.0).astype(int), 0, 255) for k in ("y_nm", "x_nm"))
        near[name] = int((camera.maps.variance[r, c] > 200.0).sum())
    assert near["maps"] <= near["uniform"]


def test_estimate_reads_each_pixels_calibration():
    from smlm_diffusers.psf_estimation import estimate_psf

    offset, variance, gain = scmos_maps((64, 64), seed=2)
    camera = sd.Camera(pixel_size_nm=100.0).with_maps(offset=offset, variance=variance, gain=gain)
    frames, _ = sd.simulate(n_frames=40, shape=(64, 64), density=0.1, photons=1500.0, background=10.0,
                            sigma_px=1.3, camera=camera, seed=3)
    est = estimate_psf(frames, camera)
    assert est["n_spots"] >= 30 and est["sigma_px"] == pytest.approx(1.3, rel=0.05)
    assert est["background"] == pytest.approx(10.0, rel=0.1) and est["photons"] == pytest.approx(1500.0, rel=0.1)
