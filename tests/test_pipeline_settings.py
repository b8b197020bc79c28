"""The pipeline's settings: one Camera, the KDE peak settings in the pipeline's config, and
folders saved before those settings moved there (old-format kde_net configs)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.simulation.camera import PAPER_CAMERA
from tiny_models import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["smlm-ddpm-2d", "smlm-ddpm-2d-v1", "smlm-ddpm-2d-100nm"]
PEAK_KEYS = {"threshold": "threshold", "peak_refine": "refine", "peak_window": "refine_window"}


@pytest.fixture(scope="module")
def frames():
    f, _ = sd.simulate(n_frames=2, shape=(13, 11), density=3.0, seed=0)
    return f


def run(pipe, frames, **kw):
    return pipe(frames, num_samples=3, num_inference_steps=2, min_probability=0.0, mixed_precision="no",
                generator=torch.Generator().manual_seed(0), **kw)


def make_old_format(folder: Path) -> None:
    """Rewrite a saved pipeline folder as the code before this change saved it: the peak settings
    in kde_net/config.json under their old names, none in model_index.json."""
    index = json.loads((folder / "model_index.json").read_text())
    net = json.loads((folder / "kde_net" / "config.json").read_text())
    for new, old in PEAK_KEYS.items():
        net[old] = index.pop(new)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    (folder / "kde_net" / "config.json").write_text(json.dumps(net, indent=2))


def test_camera_dict_round_trip_and_unknown_keys():
    cam = sd.Camera(pixel_size_nm=100.0, offset=500.0, gain=2.0, read_noise=17.3, qe=0.9)
    assert sd.Camera.from_dict(cam.to_dict()) == cam
    assert json.loads(json.dumps(cam.to_dict())) == cam.to_dict()
    assert sd.Camera.from_dict({"gain": 2}) == sd.Camera(gain=2.0)  # missing keys: the defaults
    with pytest.raises(ValueError, match="readnoise"):
        sd.Camera.from_dict({"readnoise": 1.0})
    assert PAPER_CAMERA == sd.Camera() and PAPER_CAMERA.pixel_size_nm == 108.0 and PAPER_CAMERA.read_noise == 1.6


def test_paper_camera_literals_live_in_one_module():
    """The paper camera's defaults are written in simulation/camera.py only (issue 14)."""
    default = re.compile(r"(pixel_size_nm|read_noise)\s*(:\s*float\s*)?=\s*(108(\.0)?|1\.6)\b")
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "smlm_diffusers").rglob("*.py") if default.search(p.read_text())]
    assert hits == ["smlm_diffusers/simulation/camera.py"]


def test_peak_settings_live_in_the_pipeline_config(frames, tmp_path):
    pipe = tiny_pipeline(threshold=0.1, peak_window=7)
    assert (pipe.config.threshold, pipe.config.peak_refine, pipe.config.peak_window) == (0.1, "gaussian", 7)
    assert not {"threshold", "refine", "refine_window"} & set(pipe.kde_net.config)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert (index["threshold"], index["peak_refine"], index["peak_window"]) == (0.1, "gaussian", 7)
    loaded = sd.SMLMDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    pd.testing.assert_frame_equal(run(loaded, frames).localizations, run(pipe, frames).localizations)


def test_old_format_folder_localizes_identically_and_resaves_in_the_new_format(frames, tmp_path, capfd):
    pipe = tiny_pipeline(threshold=0.1, peak_window=7)
    expected = run(pipe, frames).localizations
    old = tmp_path / "old"
    pipe.save_pretrained(old)
    make_old_format(old)
    capfd.readouterr()
    loaded = sd.SMLMDiffusionPipeline.from_pretrained(old)
    assert "not expected" not in capfd.readouterr().err  # no diffusers warning about the old keys
    loaded.set_progress_bar_config(disable=True)
    assert (loaded.config.threshold, loaded.config.peak_window) == (0.1, 7)
    pd.testing.assert_frame_equal(run(loaded, frames).localizations, expected)
    # an explicit setting wins over the old kde_net value
    assert sd.SMLMDiffusionPipeline.from_pretrained(old, threshold=0.2).config.threshold == 0.2
    new = tmp_path / "new"
    loaded.save_pretrained(new)
    assert not {"threshold", "refine", "refine_window"} & set(json.loads((new / "kde_net" / "config.json").read_text()))
    assert json.loads((new / "model_index.json").read_text())["peak_window"] == 7


OLD_FOLDER_SCRIPT = """
import sys, numpy as np, torch
from diffusers import DiffusionPipeline
folder, frames_path, out_path = sys.argv[1:]
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
out = pipe(np.load(frames_path), num_samples=3, num_inference_steps=2, min_probability=0.0, mixed_precision="no",
           generator=torch.Generator().manual_seed(0))
out.localizations.to_csv(out_path, index=False)
np.save(out_path + ".npy", out.kde_mean)
print(type(pipe).__name__, pipe.config.threshold, pipe.config.peak_window)
"""


@pytest.mark.slow  # a subprocess
def test_diffusers_loads_an_old_format_folder_with_remote_code(frames, tmp_path):
    pipe = tiny_pipeline(threshold=0.1, peak_window=7)
    out = run(pipe, frames)
    expected = out.localizations
    folder = tmp_path / "old"
    pipe.save_pretrained(folder)
    make_old_format(folder)
    np.save(tmp_path / "frames.npy", frames)
    script = tmp_path / "load.py"
    script.write_text(OLD_FOLDER_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "frames.npy"),
                          str(tmp_path / "locs.csv")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["SMLMDiffusionPipeline", "0.1", "7"]
    assert "not expected" not in res.stderr
    # the same samples (a random tiny model: its table may be empty) and the same table
    np.testing.assert_allclose(np.load(tmp_path / "locs.csv.npy"), out.kde_mean, atol=1e-6)
    assert out.kde_mean.std() > 0
    got = pd.read_csv(tmp_path / "locs.csv")
    assert len(got) == len(expected)
    if len(got):
        np.testing.assert_allclose(got[["x_nm", "y_nm"]].to_numpy(), expected[["x_nm", "y_nm"]].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_folders_are_in_the_new_format(name):
    folder = ROOT / "pretrained" / name
    if not folder.is_dir():
        pytest.skip("the shipped weights are not in this checkout")
    net = json.loads((folder / "kde_net" / "config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    assert not {"threshold", "refine", "refine_window"} & set(net)
    assert {"threshold", "peak_refine", "peak_window"} <= set(index)
    # the peak settings are the best of the folder's own tuning table (train/tune_localization.py)
    tuning = pd.read_csv(folder / "kde_net" / "localization_tuning.csv")
    threshold, window = tuning.groupby(["threshold", "window"])["efficiency"].mean().idxmax()
    assert (index["threshold"], index["peak_window"]) == (pytest.approx(threshold), window)


def test_tune_localization_writes_the_pipeline_config_not_the_weights(tmp_path):
    """On a copy of the shipped v1 folder rewritten in the old format."""
    import shutil

    sys.path.insert(0, str(ROOT / "train"))
    import tune_localization

    if not (ROOT / "pretrained" / SHIPPED[0]).is_dir():
        pytest.skip("the shipped weights are not in this checkout")
    folder = tmp_path / "pipe"
    shutil.copytree(ROOT / "pretrained" / SHIPPED[0], folder)
    make_old_format(folder)
    weights = {p: p.read_bytes() for p in folder.rglob("*.safetensors")}
    best = tune_localization.main([str(folder), "--frames", "1", "--densities", "1", "--photons", "2000"])
    index = json.loads((folder / "model_index.json").read_text())
    assert index["threshold"] == pytest.approx(best.threshold) and index["peak_window"] == int(best.window)
    assert not {"threshold", "refine", "refine_window"} & set(json.loads((folder / "kde_net" / "config.json").read_text()))
    assert (folder / "kde_net" / "localization_tuning.csv").is_file()
    assert {p: p.read_bytes() for p in folder.rglob("*.safetensors")} == weights
    assert sd.SMLMDiffusionPipeline.from_pretrained(folder).config.threshold == pytest.approx(best.threshold)
