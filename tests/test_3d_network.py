"""DeepSTORM for a 3D PSF: the z channel (training target, readout), a 3D pipeline folder without a DDPM,
and the command line on it."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.io import read_thunderstorm_csv
from smlm_diffusers.kde import KDEScaling
from smlm_diffusers.localization.localize3d import seeds_from_output, z_at
from smlm_diffusers.optics import AstigmaticPSF, Optics
from smlm_diffusers.simulation import Camera
from smlm_diffusers.simulation.emitters import Emitters
from smlm_diffusers.training.data import SimulationRanges, make_training_batch, z_channel

CAM = Camera(pixel_size_nm=100.0, offset=100.0, gain=2.0, read_noise=1.0)
ASTIG = AstigmaticPSF(sigma0_x_px=1.1, sigma0_y_px=1.1, focus_x_nm=-300.0, focus_y_nm=300.0, depth_x_nm=450.0,
                      depth_y_nm=450.0, z_range_nm=(-700.0, 700.0))
PSF_BLOCK = Optics(CAM, ASTIG).to_dict()["psf"]


def test_the_z_channel_reads_back_each_molecules_z():
    """The training target's z channel, read by z_at at the molecules (as inference reads the network's), gives
    their z: isolated molecules exactly, and a pair 150 nm (6 KDE kernels) apart within a few nm."""
    ranges = SimulationRanges(camera=CAM, psf=PSF_BLOCK, z_nm=(-600.0, 600.0))
    assert ranges.z_scale_nm == 600.0 and ranges.psf_model.ndim == 3
    x = torch.tensor([[6.3, 20.7, 12.0, 13.5]], dtype=torch.float64)
    y = torch.tensor([[5.1, 22.4, 26.0, 26.0]], dtype=torch.float64)
    z = torch.tensor([[-450.0, 130.0, 500.0, -200.0]], dtype=torch.float64)
    em = Emitters(x_px=x, y_px=y, photons=torch.full_like(x, 1000.0), mask=torch.ones_like(x, dtype=torch.bool),
                  z_nm=z)
    scaling = KDEScaling(ranges.kde_sigma)
    from smlm_diffusers.kde import render_kde

    density = scaling.to_unit(render_kde(x, y, em.mask, (32, 32), 4, 1.0))
    unit = torch.cat([density, z_channel(em, (32, 32), ranges, scaling)], dim=1).float()
    locs = pd.DataFrame({"frame": 0, "x_nm": x[0].numpy() * 100.0, "y_nm": y[0].numpy() * 100.0})
    got = z_at(unit, locs, 100.0, 4, ranges.z_scale_nm)
    np.testing.assert_allclose(got[:2], z[0, :2].numpy(), atol=0.5)
    np.testing.assert_allclose(got[2:], z[0, 2:].numpy(), atol=5.0)


def test_a_3d_training_batch_has_the_density_and_the_z_channel():
    ranges = SimulationRanges(camera=CAM, psf=PSF_BLOCK, z_nm=(-600.0, 600.0), density=(1.0, 2.0))
    batch = make_training_batch(ranges, 4, torch.Generator().manual_seed(0))
    assert batch.kde_unit.shape == (4, 2, 128, 128)
    dens, zch = batch.kde_unit[:, 0], batch.kde_unit[:, 1]
    # the z channel is the density weighted by z / z_scale in [-1, 1]: never above the density (in [0, 1] units)
    assert dens.min() >= -1.0 and (zch.abs() <= (dens + 1.0) / 2.0 + 1e-6).all()
    assert zch.abs().max() > 0.05 and ((zch > 0.01).any() and (zch < -0.01).any())
    assert SimulationRanges(camera=CAM).z_scale_nm is None  # a 2D PSF: one channel


def test_deepstorm_with_a_z_channel():
    net = sd.DeepSTORM(context_channels=8, dilations=(1,), head="pixel_shuffle", head_channels=8, out_channels=2,
                       z_scale_nm=600.0)
    out = net.eval()(torch.zeros(2, 1, 8, 8), clamp=False)
    assert out.shape == (2, 2, 32, 32)
    torch.testing.assert_close(out[:, 0], torch.full_like(out[:, 0], -1.0), atol=0.05, rtol=0)  # the empty level
    torch.testing.assert_close(out[:, 1], torch.zeros_like(out[:, 1]), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="z_scale_nm"):
        sd.DeepSTORM(out_channels=2)
    with pytest.raises(ValueError, match="out_channels"):
        sd.DeepSTORM(out_channels=3, z_scale_nm=1.0)


@pytest.fixture(scope="module")
def folder_3d(tmp_path_factory):
    torch.manual_seed(0)
    net = sd.DeepSTORM(context_channels=8, dilations=(1, 2), head="pixel_shuffle", head_channels=8, out_channels=2,
                       z_scale_nm=700.0, pixel_size_nm=100.0, camera_offset=CAM.offset, camera_gain=CAM.gain,
                       read_noise=CAM.read_noise, psf_sigma_px=1.1)
    pipe = sd.SMLMDiffusionPipeline(kde_net=net.eval(), optics=Optics(CAM, ASTIG).to_dict(), threshold=0.05)
    folder = tmp_path_factory.mktemp("smlm-3d")
    pipe.save_pretrained(folder)
    return folder


def test_a_3d_folder_localizes_in_3d_and_refuses_ddpm_samples(folder_3d):
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder_3d)
    assert pipe.unet is None and pipe.scheduler is None and pipe.optics == Optics(CAM, ASTIG)
    assert not (folder_3d / "unet").exists()
    frames, gt = sd.simulate(n_frames=2, shape=(48, 48), photons=4000, background=20, seed=3, structure="grid",
                             spacing_px=16, jitter_px=2, camera=CAM, psf=ASTIG, z_nm=(-500, 500))
    with pytest.raises(ValueError, match="the DDPM is 2D only"):
        pipe(frames, num_samples=4)
    out = pipe(frames, num_samples=0)
    locs = out.localizations
    assert {"z_nm", "sigma_z_nm"} <= set(locs.columns) and out.kde_mean.shape == (2, 192, 192)
    # an untrained network seeds little; the matched filter's spots and the 3D MLE still find every emitter
    m = locs.merge(gt, on="frame", suffixes=("", "_gt"))
    m = m[np.hypot(m["x_nm"] - m["x_nm_gt"], m["y_nm"] - m["y_nm_gt"]) < 100]
    assert len(m) == len(gt) and np.sqrt(np.mean((m["z_nm"] - m["z_nm_gt"]) ** 2)) < 60


def test_seeds_from_a_3d_networks_output_carry_its_z():
    """seeds_from_output on a made-up output (the training target of known molecules) gives their positions and z."""
    ranges = SimulationRanges(camera=CAM, psf=PSF_BLOCK, z_nm=(-700.0, 700.0))
    x, y = torch.tensor([[10.3, 30.6]], dtype=torch.float64), torch.tensor([[12.2, 28.9]], dtype=torch.float64)
    em = Emitters(x_px=x, y_px=y, photons=torch.full_like(x, 1.0), mask=torch.ones_like(x, dtype=torch.bool),
                  z_nm=torch.tensor([[-320.0, 410.0]], dtype=torch.float64))
    from smlm_diffusers.kde import render_kde

    scaling = KDEScaling(1.0)
    unit = torch.cat([scaling.to_unit(render_kde(x, y, em.mask, (40, 40), 4, 1.0)),
                      z_channel(em, (40, 40), ranges, scaling)], dim=1).float()
    net = sd.DeepSTORM(out_channels=2, z_scale_nm=700.0, pixel_size_nm=100.0)
    seeds = seeds_from_output(unit, net.config, 100.0, 0.05).sort_values("x_nm")
    np.testing.assert_allclose(seeds["x_nm"], [1030.0, 3060.0], atol=3.0)
    np.testing.assert_allclose(seeds["z_nm"], [-320.0, 410.0], atol=2.0)


def test_the_cli_localizes_a_3d_folder_in_deepstorm_mode(folder_3d, tmp_path, capsys):
    import tifffile

    frames, gt = sd.simulate(n_frames=3, shape=(48, 48), photons=4000, background=20, seed=4, structure="grid",
                             spacing_px=16, jitter_px=2, camera=CAM, psf=ASTIG, z_nm=(-500, 500))
    stack = tmp_path / "as.tif"
    tifffile.imwrite(stack, np.round(frames).astype(np.uint16), photometric="minisblack")
    csv = tmp_path / "l.csv"
    assert cli.main(["localize", str(stack), "-o", str(csv), "--model", str(folder_3d), "-q",
                     "--skip-camera-check"]) == 0
    locs = read_thunderstorm_csv(csv)
    assert "z_nm" in locs and len(locs) >= len(gt)
    with pytest.raises(SystemExit) as err:
        cli.main(["localize", str(stack), "-o", str(csv), "--model", str(folder_3d), "--mode", "ddpm", "-q"])
    assert err.value.code == 2 and "the DDPM is 2D only" in capsys.readouterr().err


def test_the_model_card_of_a_3d_folder(folder_3d, tmp_path):
    """A 3D folder's card comes from the 3D template: its PSF, the EPFL rows of the benchmark's JSON, no DDPM."""
    import json

    from smlm_diffusers.hub.card import write_model_card

    res = {"epfl": {"n_ground_truth": 19, "n_localizations": 13, "tp": 13, "fp": 0, "fn": 6, "jaccard": 0.684,
                    "lateral_rmse_nm": 54.8, "axial_rmse_nm": 75.4, "coverage_z_1sigma": 0.23},
           "simulated": [{"photons": 1000.0, "z_bin_nm": "[-600, -400)", "n": 10, "lateral_ratio": 1.03,
                          "axial_ratio": 1.05, "coverage_z_1sigma": 0.65, "recall": 1.0}]}
    (tmp_path / "astig3d.json").write_text(json.dumps(res))
    card = write_model_card(folder_3d, results=tmp_path / "astig3d.json", out=tmp_path / "README.md").read_text()
    assert "3D astigmatic SMLM in DeepSTORM mode" in card and "the DDPM is 2D only" not in card.lower()
    assert "no DDPM" in card and "- astigmatism" in card and "ddpm" not in card.split("---")[1]
    assert f"{ASTIG.to_dict()['focus_x_nm']:.1f}" in card  # the PSF's own numbers
    assert "| detector + 3D MLE | 19 | 13 | 13 | 0 | 6 | 0.684 | 54.8 | 75.4 | 0.23 |" in card
    assert "| 1000 | [-600, -400) | 10 | 1.030 | 1.050 | 0.650 | 1.000 |" in card
    bare = write_model_card(folder_3d, out=tmp_path / "bare.md").read_text()
    assert "No results file was given" in bare


SHIPPED_3D = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-3d-as-100nm"


@pytest.mark.skipif(not (SHIPPED_3D / "kde_net").is_dir(), reason="the shipped 3D folder is not in this checkout")
def test_the_shipped_3d_folder_localizes_frames_of_its_optics():
    """pretrained/smlm-3d-as-100nm on frames simulated through its own optics: its network finds every
    isolated emitter and its z says where the emitter is (an untrained one gives a z RMSE near the z's own
    spread), and the whole 3D localization puts z near the bound."""
    from smlm_diffusers.localization import match
    from smlm_diffusers.localization.localize3d import network_seeds_3d

    pipe = sd.SMLMDiffusionPipeline.from_pretrained(SHIPPED_3D)
    assert pipe.unet is None and pipe.optics.ndim == 3
    frames, gt = sd.simulate(n_frames=4, shape=(48, 48), photons=4000, background=100, seed=7, structure="grid",
                             spacing_px=16, jitter_px=2, camera=pipe.optics.camera, psf=pipe.optics.psf,
                             z_nm=(-300, 300))
    seeds = network_seeds_3d(pipe.kde_net, frames, pipe.optics.camera, pipe.config.threshold)
    pairs = match(gt, seeds)
    assert len(pairs["gt_index"]) == len(gt) == len(seeds)
    dz = seeds["z_nm"].to_numpy()[pairs["pred_index"]] - gt["z_nm"].to_numpy()[pairs["gt_index"]]
    assert np.sqrt(np.mean(dz**2)) < 0.8 * gt["z_nm"].std()
    locs = pipe(frames, num_samples=0).localizations
    pairs = match(gt, locs)
    assert len(pairs["gt_index"]) == len(gt) == len(locs)
    dz = locs["z_nm"].to_numpy()[pairs["pred_index"]] - gt["z_nm"].to_numpy()[pairs["gt_index"]]
    assert np.sqrt(np.mean(dz**2)) < 1.5 * locs["sigma_z_nm"].median()
