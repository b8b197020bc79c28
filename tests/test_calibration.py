"""train/calibrate_uncertainty.py against a stand-in pipeline whose miscalibration is known; the schedule search."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import calibrate_uncertainty  # noqa: E402
import search_schedule  # noqa: E402


class MiscalibratedPipeline:
    """Reports the raw sample spread ``s`` (random, 2-10 nm) while its true errors have the variance
    ``(2 s)^2 + 1.5^2 CRLB``: the sigma model the calibration fits, with ``(a, b) = (2, 1.5)``, at 8
    steps; at ``k`` steps it reports ``s k / 8`` (fewer steps, less spread), so there ``a = 16 / k``.
    The photons and background it reports are the truth, so the CRLB is exact."""

    A, B = 2.0, 1.5

    def __init__(self):
        self.kde_net = sd.DeepSTORM(context_channels=4, dilations=(1,), upsample_channels=(4, 4),
                                    prediction_channels=4)
        self.rng = np.random.default_rng(0)
        self.gt = None

    def set_progress_bar_config(self, **kwargs):
        pass

    def __call__(self, frames, num_inference_steps=8, **kwargs):
        gt = self.gt.reset_index(drop=True)
        camera = self.kde_net.camera
        cx, cy = crlb_at_truth(gt, self.kde_net.config.psf_sigma_px, camera)
        sx, sy = self.rng.uniform(2, 10, len(gt)), self.rng.uniform(2, 10, len(gt))
        ex = self.rng.normal(0, 1, len(gt)) * np.sqrt((self.A * sx) ** 2 + self.B**2 * cx)
        ey = self.rng.normal(0, 1, len(gt)) * np.sqrt((self.A * sy) ** 2 + self.B**2 * cy)
        sx, sy = sx * num_inference_steps / 8, sy * num_inference_steps / 8
        locs = gt.assign(x_nm=gt["x_nm"] + ex, y_nm=gt["y_nm"] + ey, sigma_x_nm=sx, sigma_y_nm=sy, kde_mass=1.0,
                         probability=1.0, spread_x_nm=sx, spread_y_nm=sy, bound_x_nm=np.sqrt(cx),
                         bound_y_nm=np.sqrt(cy))
        return type("Out", (), {"localizations": locs})()


@pytest.mark.slow
def test_fit_recovers_the_sigma_model_and_is_written(tmp_path, monkeypatch):
    fake = MiscalibratedPipeline()
    simulate = sd.simulate

    def simulate_and_remember(*args, **kwargs):
        frames, gt = simulate(*args, **kwargs)
        fake.gt = gt
        return frames, gt

    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: fake))
    monkeypatch.setattr(sd, "simulate", simulate_and_remember)
    (tmp_path / "model_index.json").write_text(json.dumps({"sigma_scale": 1.0, "tile_size": 160,
                                                           "default_inference_steps": 8}))
    a, b = calibrate_uncertainty.main([str(tmp_path), "--samples", "6", "--steps", "4,8", "--densities", "2,4",
                                       "--photons", "300,1000,5000", "--molecules", "400"])
    assert a == pytest.approx(MiscalibratedPipeline.A, rel=0.1)
    assert b == pytest.approx(MiscalibratedPipeline.B, rel=0.25)
    index = json.loads((tmp_path / "model_index.json").read_text())
    a4, b4 = index.pop("sigma_models").pop("4")  # one model per step count; the default's is the folder's
    assert a4 == pytest.approx(2 * MiscalibratedPipeline.A, rel=0.1) and b4 == pytest.approx(MiscalibratedPipeline.B, rel=0.25)
    assert index == {"sigma_scale": a, "crlb_scale": b, "calibration_samples": 6, "calibration_steps": 8,
                     "tile_size": 160, "default_inference_steps": 8}
    table = pd.read_csv(tmp_path / "uncertainty_calibration.csv")
    assert sorted(table["steps"].unique()) == [4, 8]
    table = table[table["steps"] == 8]
    assert len(table) == 6 and (table["coverage_uncalibrated"] < 0.45).all()
    assert table["coverage_calibrated"].between(0.62, 0.75).all()
    assert table["z_std_calibrated"].between(0.85, 1.15).all()
    # one factor on the spread cannot follow the photons: it over-covers the bright, under-covers the dim
    dim, bright = table[table["photons"] == 300], table[table["photons"] == 5000]
    assert (dim["coverage_spread_only"].to_numpy() < bright["coverage_spread_only"].to_numpy() - 0.05).all()
    molecules = pd.read_csv(tmp_path / "uncertainty_calibration_molecules.csv")
    assert (molecules["steps"] == 8).sum() == table["n_molecules"].sum()
    # a refit of the saved molecules needs no pipeline and gives the same answer
    written = pd.read_csv(tmp_path / "uncertainty_calibration.csv")
    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "from_pretrained", None)
    assert calibrate_uncertainty.main([str(tmp_path), "--refit"]) == (a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "uncertainty_calibration.csv"), written)
    assert json.loads((tmp_path / "model_index.json").read_text())["sigma_models"]["4"] == [a4, b4]


def test_schedule_candidates():
    g = np.array(search_schedule.candidate_gammas(6, -10.0, 7.0, 1.0))
    lam = np.log(g / (1 - g))
    np.testing.assert_allclose(lam, np.linspace(-10, 7, 6), atol=1e-9)
    low_noise_heavy = np.array(search_schedule.candidate_gammas(6, -10.0, 7.0, 0.5))
    assert (low_noise_heavy[1:-1] > g[1:-1]).all()  # p < 1: the steps crowd at high SNR
    assert search_schedule.score(80.0, 0.6827) == pytest.approx(80.0)
    assert search_schedule.score(80.0, 0.5827) == pytest.approx(70.0)


def test_searched_schedule_is_stored_and_used(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "pipe")
    table = search_schedule.main([str(folder), "--steps", "3", "--samples", "2", "--hi", "4,6", "--power", "1",
                                  "--densities", "2", "--shape", "12"])
    assert len(table) == 2 and (folder / "scheduler" / "schedule_search.csv").is_file()
    best = json.loads(table.iloc[0]["gammas"])
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.searched_gammas == pytest.approx(best)
    pipe.set_progress_bar_config(disable=True)
    frames, _ = sd.simulate(n_frames=1, shape=(10, 10), seed=0)
    pipe(frames, num_samples=1, schedule="searched", generator=torch.Generator().manual_seed(0))
    assert pipe.scheduler.num_inference_steps == 3
    np.testing.assert_allclose(pipe.scheduler.gammas.numpy(), best, rtol=1e-6)
