"""SMLMDiffusionPipeline on tiny random models: contract, determinism, tiling, saving."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth
from smlm_diffusers.localization.photometry import PHOTOMETRY_COLUMNS
from smlm_diffusers.localization.refine import REFINE_COLUMNS
from smlm_diffusers.localization.uncertainty import MOLECULE_COLUMNS
from smlm_diffusers.pipelines.pipeline_smlm import SPREAD_COLUMNS
from tiny_models import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def frames():
    f, _ = sd.simulate(n_frames=2, shape=(13, 11), density=3.0, seed=0)
    return f


def run(pipe, frames, seed=0, **kw):
    # a random tiny model leaves nothing in doubt: sample the whole frame to exercise the sampler
    kw = {"num_samples": 3, "num_inference_steps": 3, "min_probability": 0.0, "sample_everywhere": True} | kw
    return pipe(frames, generator=torch.Generator().manual_seed(seed), **kw)


def test_output_contract(pipe, frames):
    out = run(pipe, frames)
    assert out.samples.shape == (2, 3, 52, 44)
    assert out.kde_mean.shape == out.kde_var.shape == out.deepstorm_kde.shape == (2, 52, 44)
    np.testing.assert_allclose(out.kde_mean, out.samples.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(out.kde_var, out.samples.var(axis=1, ddof=1), rtol=1e-4, atol=1e-7)
    locs = out.localizations
    assert isinstance(locs, pd.DataFrame)
    assert list(locs.columns) == MOLECULE_COLUMNS + PHOTOMETRY_COLUMNS + REFINE_COLUMNS + SPREAD_COLUMNS
    assert (locs[PHOTOMETRY_COLUMNS] >= 0).all().all()
    assert len(locs) > 0 and locs["frame"].isin([0, 1]).all()
    assert locs["probability"].between(0, 1).all()
    # return_dict=False gives the same arrays as a tuple
    tup = run(pipe, frames, return_dict=False)
    np.testing.assert_array_equal(tup[3], out.samples)
    pt = run(pipe, frames, output_type="pt")
    assert isinstance(pt.samples, torch.Tensor)
    np.testing.assert_allclose(pt.samples.numpy(), out.samples, atol=1e-6)


def test_same_seed_same_result_other_seed_differs(pipe, frames):
    a, b, c = run(pipe, frames, 1), run(pipe, frames, 1), run(pipe, frames, 2)
    np.testing.assert_array_equal(a.samples, b.samples)
    pd.testing.assert_frame_equal(a.localizations, b.localizations)
    assert np.abs(a.samples - c.samples).max() > 1e-3


def test_camera_layout_unet_samples_the_kde_grid(frames):
    """v2: a UNet at camera resolution (16 KDE pixels per camera pixel as channels) in small tiles."""
    pipe = tiny_pipeline(in_channels=3, layout="camera")
    assert (pipe.unet.config.in_channels, pipe.unet.config.out_channels) == (33, 16)
    big = np.concatenate([frames, frames], axis=2)  # 13 x 22: two tiles of 16 with overlap 2 across
    out = run(pipe, big)
    assert out.samples.shape == (2, 3, 52, 88) and np.isfinite(out.samples).all()
    assert np.abs(out.samples - out.deepstorm_kde[:, None]).max() > 1e-3  # the residual is sampled
    # where the DeepSTORM estimate is empty the tile is skipped: samples equal the estimate
    empty = tiny_pipeline(in_channels=3, layout="camera", skip_empty_tiles=True)
    torch.nn.init.constant_(empty.kde_net.prediction[-1].bias, -5.0)
    o = run(empty, big)
    np.testing.assert_array_equal(o.samples, np.repeat(o.deepstorm_kde[:, None], 3, axis=1))


def test_refinement_in_both_modes_keeps_columns_and_adds_its_own():
    """The joint MLE on the frame (refine) with the trained v2 folder: DeepSTORM mode gets a real sigma
    (the fit's bound), DDPM mode the bound and spread of the configurations its samples propose."""

    folder = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.refine
    frames, gt = sd.simulate(n_frames=2, shape=(24, 24), density=2.0, photons=3000, seed=3)
    plain = pipe(frames, num_samples=0, refine=False)
    fit = pipe(frames, num_samples=0)
    assert list(plain.localizations.columns) == MOLECULE_COLUMNS
    locs = fit.localizations
    assert locs.columns[:len(MOLECULE_COLUMNS)].tolist() == MOLECULE_COLUMNS
    assert {"crlb_x_nm", "fit_deviance", "fit_flag", "photons"} <= set(locs.columns) and len(locs) >= 0.8 * len(gt)
    assert np.isfinite(locs["sigma_x_nm"]).all() and (locs["sigma_x_nm"] >= locs["crlb_x_nm"] - 1e-9).all()
    assert sd.evaluate(gt, locs)["rmse_nm"] <= sd.evaluate(gt, plain.localizations)["rmse_nm"] + 2.0
    ddpm = run(pipe, frames, num_samples=2, num_inference_steps=2, min_probability=None).localizations
    assert {"crlb_x_nm", "spread_x_nm", "bound_x_nm", "fit_flag"} <= set(ddpm.columns)
    # sigma^2 = bound^2 (within a configuration) + spread^2 (between configurations), nothing fitted
    assert ddpm["probability"].between(pipe.config.probability_floor, 1.0).all()
    np.testing.assert_allclose(ddpm["sigma_x_nm"], np.hypot(ddpm["bound_x_nm"], ddpm["spread_x_nm"]), rtol=1e-6)
    assert (ddpm["sigma_x_nm"] >= ddpm["crlb_x_nm"] - 1e-6).all()


def test_deepstorm_only_mode(pipe, frames):
    out = pipe(frames, num_samples=0)
    assert out.samples is None and out.kde_var is None
    np.testing.assert_array_equal(out.kde_mean, out.deepstorm_kde)
    assert list(out.localizations.columns) == MOLECULE_COLUMNS
    assert (out.localizations["probability"] == 1).all()


def test_single_integer_frame_and_bad_input(pipe, frames):
    out = run(pipe, frames[0].astype(np.uint16))
    assert out.samples.shape[0] == 1
    with pytest.raises(ValueError, match="NaN"):
        pipe(np.full((8, 8), np.nan, np.float32), num_samples=0)
    with pytest.raises(ValueError, match=r"\[H, W\] or \[F, H, W\]"):
        pipe(np.zeros((1, 2, 8, 8), np.float32), num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        pipe(frames, num_samples=-1)


def test_tiles_stitch_into_the_whole_image_result(pipe):
    """With a local, deterministic 'denoiser', tiled processing must equal one big tile."""

    def local_denoise(cond, generator=None, sampler=None, bar=None):
        # a 3x3 box filter of the conditioning: depends on a neighbourhood smaller than the overlap
        return torch.nn.functional.avg_pool2d(cond[:, :1], 3, stride=1, padding=1, count_include_pad=True)

    cond = torch.randn(1, 1, 70, 90)
    tiled = tiny_pipeline()
    tiled.denoise = local_denoise
    whole = tiny_pipeline(tile_size=256)
    whole.denoise = local_denoise
    a = tiled.sample_residuals(cond, 2, 3, None, 64)
    b = whole.sample_residuals(cond, 2, 3, None, 64)
    assert len(tiled.tile_layout(70, 90)[1]) > 4  # really tiled
    torch.testing.assert_close(a, b)


def test_single_tile_axis_takes_the_edge_margin_and_stitches_like_one_tile():
    """``tile_edge``: an axis that one tile covers is padded by the edge margin only (no seam);
    a tiled axis keeps the full overlap; the stitched result equals one big tile's."""

    def local_denoise(cond, generator=None, sampler=None, bar=None):
        return torch.nn.functional.avg_pool2d(cond[:, :1], 3, stride=1, padding=1, count_include_pad=True)

    edged = tiny_pipeline(tile_size=32, tile_overlap=4, tile_edge=2)
    (th, tw), corners, padded = edged.tile_layout(20, 70)
    assert th == 24 and padded[0] == 24  # rows: one tile, 20 + 2 * 2 pixels
    assert len({j for _, j in corners}) == 3 and tw - 2 * 4 > 0  # columns: three tiles with overlap 4
    assert tiny_pipeline(tile_size=32, tile_overlap=4).tile_layout(20, 70)[0][0] == 28  # without: 20 + 2 * 4
    whole = tiny_pipeline(tile_size=256)
    for p in (edged, whole):
        p.denoise = local_denoise
    cond = torch.randn(1, 1, 20, 70)
    torch.testing.assert_close(edged.sample_residuals(cond, 2, 3, None, 64), whole.sample_residuals(cond, 2, 3, None, 64))
    with pytest.raises(ValueError, match="tile_edge"):
        tiny_pipeline(tile_size=32, tile_overlap=4, tile_edge=5)


def test_tile_layout_is_balanced():
    pipe = tiny_pipeline(tile_size=160, tile_overlap=16)
    (th, tw), corners, padded = pipe.tile_layout(256, 100)
    assert (th, tw) == (160, 132) and len(corners) == 2  # two tiles down, one across
    assert padded[0] >= 256 + 32 and padded[1] >= 100 + 32
    (th, tw), corners, _ = pipe.tile_layout(128, 128)
    assert (th, tw) == (160, 160) and len(corners) == 1


def test_camera_override_changes_the_estimate(pipe, frames):
    # float32: the tiny random network's output differs from -1 by less than a bfloat16 step
    a = pipe(frames, num_samples=0, mixed_precision="no").deepstorm_kde
    b = pipe(frames, num_samples=0, camera=sd.Camera(offset=50.0), mixed_precision="no").deepstorm_kde
    assert np.abs(a - b).max() > 0


def test_camera_floats_are_gone_and_camera_gives_the_model_defaults(pipe, frames):
    """The deprecated floats left ``__call__`` (issue 22): ``camera=`` is the one way."""
    for key in ("camera_offset", "camera_gain", "read_noise", "pixel_size_nm"):
        with pytest.raises(TypeError, match=key):
            pipe(frames, num_samples=0, **{key: 1.0})
    default = pipe(frames, num_samples=0, mixed_precision="no").deepstorm_kde
    same = pipe(frames, num_samples=0, camera=pipe.camera, mixed_precision="no").deepstorm_kde
    np.testing.assert_array_equal(default, same)
    assert pipe.camera == pipe.kde_net.camera == sd.Camera()


def test_third_conditioning_channel(frames):
    pipe = tiny_pipeline(in_channels=3)
    out = run(pipe, frames)
    assert out.samples.shape == (2, 3, 52, 44)


def test_save_and_load_round_trip(pipe, frames, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = sd.SMLMDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.tile_size == 32
    np.testing.assert_allclose(run(loaded, frames).samples, run(pipe, frames).samples, atol=1e-5)



def test_from_pretrained_takes_diffusers_loading_arguments(pipe, frames, tmp_path):
    """diffusers' own loader runs: torch_dtype reaches every model, settings and components still override,
    and the folder's remote-code shims are not what loads (no trust_remote_code needed)."""
    pipe.save_pretrained(tmp_path)
    half = sd.SMLMDiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, tile_size=48)
    assert half.unet.dtype == half.kde_net.dtype == torch.bfloat16
    assert type(half.kde_net) is sd.DeepSTORM and type(half.scheduler) is sd.GammaDDPMScheduler
    assert half.config.tile_size == 48 and half.config.threshold == pipe.config.threshold
    unet = sd.SMLMDiffusionPipeline.from_pretrained(tmp_path).unet
    mixed = sd.SMLMDiffusionPipeline.from_pretrained(tmp_path, dtype=torch.bfloat16, unet=unet)  # its new name
    assert mixed.unet is unet and mixed.kde_net.dtype == torch.bfloat16
    half.set_progress_bar_config(disable=True)
    out = half(frames, num_samples=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.kde_mean.dtype == np.float32 and np.isfinite(out.kde_mean).all()


TORCH_FREE_SCRIPT = """
import sys
import smlm_diffusers, smlm_diffusers.io, smlm_diffusers.cli, smlm_diffusers.columns
loaded = [m for m in ("torch", "diffusers") if m in sys.modules]
assert not loaded, loaded
assert "DeepSTORM" in dir(smlm_diffusers)
smlm_diffusers.Camera  # a lazy name loads on first use
assert "torch" in sys.modules
"""


def test_io_and_cli_import_without_torch():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", TORCH_FREE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


REMOTE_CODE_SCRIPT = """
import sys, numpy as np, torch
from diffusers import DiffusionPipeline
folder, frames_path, out_path = sys.argv[1:]
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
out = pipe(np.load(frames_path), num_samples=3, num_inference_steps=3, min_probability=0.0, sample_everywhere=True,
           generator=torch.Generator().manual_seed(0))
np.save(out_path, out.samples)
print(type(pipe).__name__)
"""


@pytest.mark.slow
def test_diffusers_loads_the_folder_with_remote_code(pipe, frames, tmp_path):
    """`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` in a process that never
    imports smlm_diffusers itself: the folder's shim modules bring in the installed classes."""
    import json
    import subprocess
    import sys

    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_smlm", "SMLMDiffusionPipeline"]
    assert index["kde_net"] == ["deepstorm", "DeepSTORM"]
    assert (folder / "kde_net" / "deepstorm.py").is_file()
    assert "class DeepSTORM" not in (folder / "kde_net" / "deepstorm.py").read_text()  # no copy of the code
    np.save(tmp_path / "frames.npy", frames)
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "frames.npy"),
                          str(tmp_path / "samples.npy")], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SMLMDiffusionPipeline" in res.stdout
    np.testing.assert_allclose(np.load(tmp_path / "samples.npy"), run(pipe, frames).samples, atol=1e-5)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        sd.SMLMDiffusionPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder .* no shipped pipeline folder of that name .* not a Hub repo id"):
        sd.SMLMDiffusionPipeline.from_pretrained(tmp_path / "missing" / "deep" / "path")


def test_retired_sigma_model_settings_load_and_do_nothing(frames):
    """Folders saved with the fitted sigma model of v2's first release still load; the scales change nothing
    and are not written again."""
    plain = run(tiny_pipeline(threshold=0.1), frames).localizations
    old = tiny_pipeline(threshold=0.1, sigma_scale=2.5, crlb_scale=0.5, sigma_models={"4": [0.7, 1.2]},
                        calibration_samples=8, calibration_steps=4)
    pd.testing.assert_frame_equal(plain, run(old, frames).localizations)
    assert "sigma_scale" not in old.config and "sigma_models" not in old.config
    with pytest.raises(ValueError, match="probability_floor"):
        tiny_pipeline(probability_floor=1.5)


def test_samples_are_drawn_only_where_the_likelihood_leaves_the_configuration_undecided():
    """The cost follows ambiguity: isolated bright emitters are decided by the frame alone (no tile sampled);
    pairs at the limit of resolution get tiles around them and nowhere else."""
    from smlm_diffusers.simulation.emitters import Emitters

    folder = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    denoise = pipe.denoise
    pipe.denoise = lambda tiles, *a, **k: seen.append(tiles.shape[0]) or denoise(tiles, *a, **k)
    isolated, _ = sd.simulate(n_frames=2, shape=(64, 64), structure="grid", spacing_px=16.0, jitter_px=2.0,
                              photons=3000.0, seed=4)
    out = pipe(isolated, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert sum(seen) == 0 and len(out.localizations) == 32 and (out.localizations["probability"] == 1).all()
    # pairs 1.1 px apart at 1000 photons (test_configurations: the evidence is split there), one per frame
    n = 8
    xs = torch.tensor([[20.0 - 0.55, 20.0 + 0.55]] * n)
    em = Emitters(x_px=xs, y_px=torch.full((n, 2), 40.3), photons=torch.full((n, 2), 1000.0),
                  mask=torch.ones(n, 2, dtype=torch.bool))
    pairs = sd.FrameSimulator((64, 64), pipe.camera, 1.0, 20.0).render(
        em, generator=torch.Generator().manual_seed(1)).frames_adu.numpy()
    seen.clear()
    out = pipe(pairs, num_samples=4, generator=torch.Generator().manual_seed(0))
    full = pipe.frame_tiles(64, 64).work * n * 4  # every frame's own tiles, 4 samples
    drawn = out.kde_var > 0
    assert 0 < sum(seen) and drawn.any()
    rows, cols = np.nonzero(drawn.any(0))
    u = pipe.kde_net.config.upsampling
    assert rows.min() / u > 40.3 - 12 and rows.max() / u < 40.3 + 12 and cols.max() / u < 20 + 12  # near the pairs
    assert sum(seen) * pipe.tile_plan(64, 64, pipe.config.ambiguity_tile).work < full
