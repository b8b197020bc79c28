"""The frames' optics are one value, resolved once per call (call's ``optics=``, else the folder's) and passed
down; nothing rewrites the network's config to pass a PSF, and resuming compares the resolved optics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.optics import GaussianPSF
from tiny_models import tiny_pipeline

DEEPSTORM = ["--mode", "deepstorm", "--threshold", "3e-6", "--mixed-precision", "no"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    frames, _ = sd.simulate(n_frames=12, shape=(16, 16), density=1.0, seed=0)
    path = tmp_path_factory.mktemp("stack") / "movie.tif"
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16))
    return path


def test_call_optics_equals_the_old_rewritten_config():
    pipe = tiny_pipeline(threshold=3e-6)
    frames, _ = sd.simulate(n_frames=2, shape=(16, 16), density=1.0, seed=3)
    before = dict(pipe.kde_net.config)
    optics = pipe.optics.replace(psf=GaussianPSF(1.4))
    given = pipe(frames, num_samples=0, optics=optics, mixed_precision="no").localizations
    assert dict(pipe.kde_net.config) == before  # the call read the PSF from its optics, not the network
    pipe.kde_net.register_to_config(psf_sigma_px=1.4)  # the way the CLI passed it before
    rewritten = pipe(frames, num_samples=0, mixed_precision="no").localizations
    assert len(given) > 0
    pd.testing.assert_frame_equal(given, rewritten)


def test_camera_replaces_the_camera_of_the_resolved_optics():
    pipe = tiny_pipeline()
    camera = sd.Camera(pixel_size_nm=120.0)
    resolved = pipe.resolve_optics(pipe.optics.replace(psf=GaussianPSF(1.3)), camera)
    assert resolved.camera == camera and resolved.psf.sigma_px == 1.3
    assert pipe.resolve_optics() == pipe.optics


def test_cli_psf_sigma_leaves_the_network_config_and_resumes_by_optics(stack, tiny_model_dir, tmp_path,
                                                                        monkeypatch, capsys):
    loaded = []
    load = cli.load_model

    def recording(*args, **kwargs):
        out = load(*args, **kwargs)
        loaded.append((out[0], dict(out[0].kde_net.config)))
        return out

    monkeypatch.setattr(cli, "load_model", recording)
    csv = tmp_path / "out.csv"

    def run(sigma, *extra):
        return cli.main(["localize", str(stack), "-o", str(csv), "--model", str(tiny_model_dir), *DEEPSTORM,
                         "--batch-size", "4", "--psf-sigma", str(sigma), *extra])

    assert run(1.3, "--max-frames", "6", "-q") == 0
    pipe, before = loaded[-1]
    assert dict(pipe.kde_net.config) == before  # no register_to_config to pass --psf-sigma
    capsys.readouterr()
    assert run(1.3, "--max-frames", "10") == 0  # the same optics: resumed
    err = capsys.readouterr().err
    assert "resuming" in err and "scratch" not in err
    csv2 = tmp_path / "other.csv"
    assert cli.main(["localize", str(stack), "-o", str(csv2), "--model", str(tiny_model_dir), *DEEPSTORM,
                     "--batch-size", "4", "--psf-sigma", "1.3", "--max-frames", "6", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["localize", str(stack), "-o", str(csv2), "--model", str(tiny_model_dir), *DEEPSTORM,
                     "--batch-size", "4", "--psf-sigma", "1.6"]) == 0  # other optics: starts again, with a message
    err = capsys.readouterr().err
    assert "starting from scratch" in err and "optics" in err
