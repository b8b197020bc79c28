"""train/search_schedule.py: the candidate schedules, their score, and a searched schedule stored and used."""

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
import search_schedule  # noqa: E402


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
