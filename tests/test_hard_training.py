"""DDPM v3 training (issue 32 item 2): hard clusters, mining where DeepSTORM disagrees, timestep bias,
the held-out hard validation and the time budget, end to end on the tiny config."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.training import load_config
from smlm_diffusers.training.data import SimulationRanges, make_training_batch
from smlm_diffusers.training.hard import HardClusters, sample_clusters
from smlm_diffusers.training.noise import TimestepBias, inference_gammas, sample_training_gammas
from smlm_diffusers.training.pairs import PairPool, crop_pairs, disagreement

ROOT = Path(__file__).resolve().parents[1]


def test_hard_clusters_have_the_drawn_separations_and_photon_ratios():
    hard = HardClusters(fraction=1.0, clusters_per_patch=4, separation_sigma=(0.5, 2.5), faint_ratio=(0.1, 0.5),
                        faint_share=1.0, triplet_share=0.5)
    sigma = 1.3
    em = sample_clusters(200, (40, 40), hard, sigma, (200.0, 6000.0), torch.Generator().manual_seed(0))
    x, y, ph, mask = (t.view(200, 4, 3) for t in (em.x_px, em.y_px, em.photons, em.mask))
    assert mask[..., :2].all()
    d01 = torch.hypot(x[..., 1] - x[..., 0], y[..., 1] - y[..., 0]) / sigma
    assert d01.min() >= 0.5 - 1e-4 and d01.max() <= 2.5 + 1e-4
    assert d01.min() < 0.6 and d01.max() > 2.4  # the whole range is drawn
    assert abs(float(d01.mean()) - 1.5) < 0.05  # uniformly
    ratio = ph[..., 1] / ph[..., 0]
    assert ratio.min() >= 0.1 - 1e-5 and ratio.max() <= 0.5 + 1e-5
    assert abs(float(ratio.log().mean()) - 0.5 * (math.log(0.1) + math.log(0.5))) < 0.05  # log-uniform
    assert ph[mask].min() >= 200.0 - 1e-3 and ph[mask].max() <= 6000.0 + 1e-3
    third = mask[..., 2]
    assert 0.4 < float(third.float().mean()) < 0.6
    d2 = torch.minimum(torch.hypot(x[..., 2] - x[..., 0], y[..., 2] - y[..., 0]),
                       torch.hypot(x[..., 2] - x[..., 1], y[..., 2] - y[..., 1]))[third] / sigma
    assert d2.max() <= 2.5 + 1e-4  # the third sits within a drawn separation of one of the pair


def test_hard_fraction_adds_clusters_to_the_training_batch_and_zero_changes_nothing():
    base = SimulationRanges(patch_size=16, density=(1.0, 1.0))
    a = make_training_batch(base, 4, torch.Generator().manual_seed(1))
    b = make_training_batch(SimulationRanges(patch_size=16, density=(1.0, 1.0), hard=HardClusters(fraction=0.0)), 4,
                            torch.Generator().manual_seed(1))
    assert torch.equal(a.frames_adu, b.frames_adu) and torch.equal(a.kde_unit, b.kde_unit)
    hard = SimulationRanges(patch_size=16, density=(1.0, 1.0), hard=HardClusters(fraction=1.0, clusters_per_patch=3))
    c = make_training_batch(hard, 4, torch.Generator().manual_seed(1))
    assert float((c.kde_unit + 1).sum()) > 2 * float((a.kde_unit + 1).sum())


def _train_config_class():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_ddpm_v3_test", ROOT / "train" / "train_ddpm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    return mod.DDPMTrainConfig


def test_v3_configs_load_with_their_blocks(tmp_path):
    DDPMTrainConfig = _train_config_class()

    cfg = load_config(DDPMTrainConfig, ROOT / "train" / "configs" / "ddpm_v3.yaml")
    assert cfg.data.hard.fraction == 0.5 and cfg.data.hard.separation_sigma == (0.5, 2.5)
    assert cfg.mine_share == 0.3 and cfg.timestep_bias.share > 0 and cfg.val_hard_crops > 0
    assert cfg.init_from == "pretrained/ddpm-v3-sitting/unet" and cfg.batch_size == 8 and cfg.num_threads == 1
    old = load_config(DDPMTrainConfig, ROOT / "train" / "configs" / "ddpm_v2.yaml")
    assert old.data.hard.fraction == 0 and old.mine_share == 0 and old.timestep_bias.share == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  hard: {fraction: 0.5, separaton_sigma: [1, 2]}\n")
    with pytest.raises(ValueError, match="separaton_sigma"):
        load_config(DDPMTrainConfig, bad)


class _FakeNet:
    device = torch.device("cpu")


def _pool(n=16, p=12, factor=4, hot=3, seed=0):
    """A pool of ``n`` empty patches; patch ``hot`` has one large residual at camera pixel (2, 9)."""
    pool = PairPool.__new__(PairPool)
    pool.ranges = SimulationRanges(patch_size=p, upsampling=factor)
    pool.kde_net, pool.size, pool.refresh, pool.gen = _FakeNet(), n, 0, torch.Generator().manual_seed(seed)
    pool.mine_share, pool.mine_window_px, pool._next = 1.0, 3, 0
    pool.y = torch.full((n, 1, p * factor, p * factor), -1.0)
    pool.y_hat = pool.y.clone()
    pool.y[:, :, 20:24, 4:8] += 0.01  # a small disagreement everywhere
    pool.y[hot, :, 8:12, 36:40] = 1.0  # camera pixel (row 2, column 9)
    pool.frame = torch.zeros((n, 1, p, p))
    pool.frame[:, 0, 2, 9] = torch.arange(n, dtype=torch.float32)  # which patch a crop came from
    pool.score, pool.peak = disagreement(pool.y, pool.y_hat, factor, 3)
    return pool


def test_disagreement_finds_the_residual_peak():
    pool = _pool()
    assert int(pool.score.argmax()) == 3
    assert pool.peak[3].tolist() == [2, 9]


def test_mined_batches_prefer_high_disagreement_and_crops_hold_the_peak():
    pool = _pool()
    y, y_hat, frame = pool.batch(64, crop_px=6, edge_px=2, augment=False)
    assert y.shape == (64, 1, 24, 24) and frame.shape == (64, 1, 6, 6)
    hot = (y > 0.5).flatten(1).any(1)  # the hot patch's residual is inside the crop
    assert hot.float().mean() > 0.8  # 1 of 16 patches, drawn in proportion to its score
    pool.mine_share = 0.0
    y, *_ = pool.batch(64, crop_px=6, edge_px=2, augment=False)
    assert (y > 0.5).flatten(1).any(1).float().mean() < 0.3


def test_mined_share_of_a_batch_is_mined_and_the_rest_uniform():
    pool = _pool()
    pool.mine_share = 0.25
    counts = torch.zeros(16)
    for _ in range(40):
        _, _, frame = pool.batch(8, crop_px=12, edge_px=0)
        counts += torch.bincount(frame[:, 0, 2, 9].long(), minlength=16)
    # 2 of 8 mined (almost always the hot patch), 6 uniform: the hot patch is about 2.4 of 8
    assert 60 < counts[3] < 140 and counts.sum() == 320


def test_timestep_bias_moves_the_drawn_noise_levels_toward_inference():
    scheduler = sd.GammaDDPMScheduler()
    gen = torch.Generator().manual_seed(0)
    uniform = sample_training_gammas(scheduler, 20000, gen)
    assert torch.equal(uniform, scheduler.sample_gammas(20000, generator=torch.Generator().manual_seed(0)))
    off = sample_training_gammas(scheduler, 20000, torch.Generator().manual_seed(0), TimestepBias(share=0.0))
    assert torch.equal(uniform, off)
    biased = sample_training_gammas(scheduler, 20000, torch.Generator().manual_seed(0),
                                    TimestepBias(share=0.5, steps=4, logsnr_width=0.5))
    levels = torch.logit(inference_gammas(scheduler, 4).double())

    def near(g):
        lam = torch.logit(g.double().clamp(1e-12, 1 - 1e-12))
        return float(((lam.unsqueeze(1) - levels).abs().min(1).values < 1.0).float().mean())

    assert near(biased) > near(uniform) + 0.35
    assert 0.0 < float(biased.min()) and float(biased.max()) < 1.0


def test_crop_pairs_takes_given_offsets():
    y = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16)
    frame = torch.arange(4 * 4, dtype=torch.float32).view(1, 1, 4, 4)
    _, _, f = crop_pairs(y, y, frame, 2, 4, 0, torch.Generator(), offsets=torch.tensor([[1, 2]]))
    assert f[0, 0].tolist() == [[6.0, 7.0], [10.0, 11.0]]


def test_tiny_v3_trains_with_a_time_budget_and_logs_val_hard_loss(tmp_path):
    out = tmp_path / "v3"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
           str(ROOT / "train" / "train_ddpm.py"), "--config", "train/configs/ddpm_v3_tiny.yaml",
           "--output_dir", str(out), "--max_steps", "1000", "--max-minutes", "0.002"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "time budget" in res.stdout + res.stderr
    log = pd.read_csv(out / "train_log.csv")
    assert "val_hard_loss" in log and log["step"].iloc[0] == 0 and log["val_hard_loss"].notna().sum() >= 2
    last = int(log["step"].max())
    assert 0 < last < 1000 and log.loc[log["step"] == last, "val_hard_loss"].notna().any()  # validated at the stop
    assert (out / "checkpoints" / f"checkpoint-{last}").is_dir()
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(out / "pipeline")  # the EMA export, usable with init_from
    assert pipe.unet.config.out_channels == 16
