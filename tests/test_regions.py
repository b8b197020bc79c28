"""DeepSTORM only around the spots of sparse frames (smlm_diffusers.models.regions)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.localization import match
from smlm_diffusers.models.regions import SpotWindows, candidates, predict_windows

FOLDER = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"


def _local_net():
    """A random DeepSTORM whose receptive field (under 5 camera pixels) is inside the windows' margin."""
    torch.manual_seed(0)
    net = sd.DeepSTORM(context_channels=8, dilations=(1, 1), upsample_channels=(8, 4), prediction_channels=4)
    net.prediction[-1].bias.data.fill_(0.0)  # outputs inside the clamp: never exactly the empty level
    return net.eval()


def test_windows_give_the_whole_frame_output_where_the_spots_are():
    net = _local_net()
    n = 160
    sparse, gt = sd.simulate(n_frames=3, shape=(n, n), density=0.02, photons=1500.0, background=20.0, seed=4)
    dense, _ = sd.simulate(n_frames=1, shape=(n, n), density=3.0, photons=1500.0, background=20.0, seed=5)
    empty, _ = sd.simulate(n_frames=1, shape=(n, n), density=0.0, background=20.0, seed=6)
    frames = np.concatenate([sparse, dense, empty])
    with torch.no_grad():
        x = net.normalize(torch.from_numpy(frames).float())
        whole = net(x, clamp=True)
        plan = SpotWindows()
        windowed, pixels = predict_windows(lambda t: net(t, clamp=True), x, 1.0 / net.config.input_scale, plan)
    ran = windowed != -1.0  # the cores (a random network's output is never exactly the empty level there)
    torch.testing.assert_close(windowed[ran], whole[ran], atol=1e-5, rtol=1e-5)
    assert (windowed[~ran] == -1.0).all()
    # every emitter of the sparse frames lies in a core, with its KDE's reach around it
    inside = gt[(gt.x_nm > 0) & (gt.x_nm < n * 108.0) & (gt.y_nm > 0) & (gt.y_nm < n * 108.0)]
    assert len(inside) >= 6
    for f, x_nm, y_nm in inside[["frame", "x_nm", "y_nm"]].itertuples(index=False):
        i, j = int(y_nm / 108.0 * 4), int(x_nm / 108.0 * 4)  # KDE pixel; 15 KDE pixels: spot_reach - 1 px
        assert ran[f, 0, max(i - 15, 0):i + 16, max(j - 15, 0):j + 16].all(), (f, x_nm, y_nm)
    share = ran.float().mean(dim=(1, 2, 3))
    assert (share[:3] < plan.max_fraction).all() and share[3] == 1.0  # the dense frame ran whole
    assert share[4] < 0.05  # background alone: (almost) no window
    assert pixels < 0.6 * frames.size


def test_the_detector_threshold_is_in_noise_units():
    """On pure noise of the network's input level, candidates over 4 filtered-noise units are rare; a
    spot of modest signal is found."""
    g = torch.Generator().manual_seed(0)
    noise = 0.1
    x = noise * torch.randn(4, 1, 128, 128, generator=g)
    assert len(candidates(x, noise, SpotWindows())) <= 4  # Gaussian tail over 4 sigma: ~1e-4 of local maxima
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    spot = 0.8 * torch.exp(-((yy - 40.3) ** 2 + (xx - 70.6) ** 2) / 2.0)
    found = candidates(x + spot, noise, SpotWindows())
    assert ((found[:, 1] - 40).abs() <= 1).logical_and((found[:, 2] - 70).abs() <= 1).sum() == 4


def test_spot_windows_reject_bad_settings():
    with pytest.raises(ValueError, match="core"):
        SpotWindows(core=6)
    with pytest.raises(ValueError, match="max_fraction"):
        SpotWindows(max_fraction=0.0)


@pytest.mark.skipif(not FOLDER.is_dir(), reason="the shipped weights are not in this checkout")
def test_the_shipped_network_gives_the_same_table_on_sparse_frames():
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(FOLDER)
    frames, gt = sd.simulate(n_frames=4, shape=(128, 128), density=0.05, photons=800.0, background=25.0, seed=3)
    whole = pipe(frames, num_samples=0, sparse_windows=False, mixed_precision="no").localizations
    windowed = pipe(frames, num_samples=0, mixed_precision="no").localizations  # the folder's default: on
    assert pipe.config.sparse_windows and len(whole) >= 0.8 * len(gt)
    pairs = match(whole, windowed, tolerance_nm=20.0)
    assert len(pairs) == len(whole) == len(windowed)
    assert np.hypot(pairs["dx"], pairs["dy"]).max() < 1.0
