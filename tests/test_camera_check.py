"""The camera check: implausible offsets and gains are refused with the option to fix and a value that fits."""

import re

import numpy as np
import pytest

import smlm_diffusers as sd
from smlm_diffusers.camera_check import CameraMismatchError, check_camera, require_plausible_camera


@pytest.fixture(scope="module")
def frames():
    """Five 64 x 64 frames of the paper's camera (offset 100 ADU, gain 1, read noise 1.6 e-)."""
    return sd.simulate(n_frames=5, shape=(64, 64), density=1.0, photons=2000, background=20, seed=0)[0]


def suggested(message: str, option: str) -> float:
    return float(re.search(rf"{re.escape(option)} (-?[0-9.e+-]+)", message.split("suggest", 1)[1]).group(1))


@pytest.mark.parametrize("change, option, truth", [
    (dict(offset=1e9), "--offset", 100.0),
    (dict(offset=-1e6), "--offset", 100.0),
    (dict(gain=1e9), "--gain", 1.0),
    (dict(gain=1e-9), "--gain", 1.0),
])
def test_implausible_camera_is_rejected_with_the_fix(frames, change, option, truth):
    camera = sd.Camera(**change)
    with pytest.raises(CameraMismatchError) as err:
        require_plausible_camera(frames, camera)
    msg = str(err.value)
    assert f"suggest {option}" in msg
    assert suggested(msg, option) == pytest.approx(truth, rel=0.1, abs=3.0)
    other = {"--offset", "--gain"} - {option}
    assert not any(f"suggest {o}" in msg or f"or {o}" in msg for o in other), msg


@pytest.mark.parametrize("density, photons, background", [(1.0, 2000, 20), (0.05, 200, 5), (5.0, 6000, 60),
                                                          (5.0, 6000, 5), (2.0, 500, 60)])
def test_normal_data_pass_silently(density, photons, background):
    frames, _ = sd.simulate(n_frames=5, shape=(64, 64), density=density, photons=photons, background=background,
                            seed=1)
    for data in (frames, np.round(frames).clip(0, 65535).astype(np.uint16)):  # float, and integer counts
        check = check_camera(data, sd.Camera())
        assert check.ok and not check.warnings, (check.errors, check.warnings)
        assert check.noise_ratio == pytest.approx(1.0, abs=0.4)


@pytest.mark.parametrize("camera", [sd.Camera(offset=400, gain=2.5, read_noise=3.0),
                                    sd.Camera(offset=0, gain=0.23, read_noise=1.2),
                                    sd.Camera(offset=1000, gain=50.0, read_noise=0.1)])
def test_other_cameras_pass_with_their_own_settings(camera):
    frames, _ = sd.simulate(n_frames=5, shape=(64, 64), density=2.0, seed=2, camera=camera)
    check = require_plausible_camera(frames, camera)
    assert not check.warnings
    assert check.suggested["gain"] == pytest.approx(camera.gain, rel=0.15)


def test_borderline_camera_warns(frames):
    check = require_plausible_camera(frames, sd.Camera(gain=2.0))  # twice the true gain: no error
    assert any("--gain" in w for w in check.warnings)
    check = check_camera(frames, sd.Camera(read_noise=30.0))  # a read noise no sCMOS has
    assert check.errors and "--read-noise 1." in check.errors[0]


def test_option_names_follow_the_caller(frames):
    names = {"offset": "'Camera offset (ADU)'", "gain": "'Gain (ADU / e-)'", "read_noise": "'Read noise (e-)'"}
    check = check_camera(frames, sd.Camera(offset=1e9), options=names)
    assert "'Camera offset (ADU)'" in check.errors[0] and "--offset" not in check.errors[0]
