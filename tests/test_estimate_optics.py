"""``estimate`` refuses an estimate of too few spots (nothing written, exit 2, what to change), and
``localize --optics`` refuses a file with a key without a value, naming the key and the file."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.optics import Optics
from smlm_diffusers.psf_estimation import MIN_SPOTS

NAIRR_HD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nairr_smlm_2dgauss" / "HD" / \
    "2DGauss_HD_Validate_Frame.tif"


def write(path, frames):
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
    return path


def estimate(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(["estimate", *map(str, argv)])
    out = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in out.err
    return out


def test_minimum_is_sensible():
    assert 10 <= MIN_SPOTS <= 50


def test_no_spots_exits_2_writes_nothing_and_says_what_to_change(tmp_path, capsys):
    # background only: no spot anywhere
    frames, _ = sd.simulate(n_frames=6, shape=(32, 32), density=0.0, background=30, seed=0)
    out_yaml = tmp_path / "optics.yaml"
    out = estimate(capsys, write(tmp_path / "empty.tif", frames), "--out", out_yaml)
    assert not out_yaml.exists()
    assert f"0 spots fitted, fewer than the {MIN_SPOTS}" in out.err
    assert "--threshold-snr" in out.err and "--offset" in out.err and "sparser frames" in out.err
    assert "spots fitted: 0" in out.out and "PSF sigma" not in out.out


def test_a_few_spots_are_refused_too(tmp_path, capsys):
    # about ten isolated emitters in all: an estimate of them is noise
    frames, _ = sd.simulate(n_frames=4, shape=(48, 48), density=0.1, photons=3000, background=20, seed=3)
    out_yaml = tmp_path / "optics.yaml"
    out = estimate(capsys, write(tmp_path / "few.tif", frames), "--out", out_yaml, "--max-frames", "3")
    assert not out_yaml.exists()
    n = int(out.err.split(" spot", 1)[0].rsplit(" ", 1)[-1])
    assert 0 < n < MIN_SPOTS, out.err
    assert "--max-frames 4 (now 3 of 4)" in out.err  # more frames of the movie are there


def test_enough_spots_still_write_the_estimate(tmp_path, capsys):
    cam = sd.Camera(pixel_size_nm=100.0)
    frames, _ = sd.simulate(n_frames=40, shape=(48, 48), density=0.1, photons=2000, background=20, sigma_px=1.2,
                            seed=2, camera=cam)
    out_yaml = tmp_path / "optics.yaml"
    assert cli.main(["estimate", str(write(tmp_path / "ok.tif", frames)), "--pixel-size", "100", "--out",
                     str(out_yaml)]) == 0
    doc = yaml.safe_load(out_yaml.read_text())
    assert doc["estimate"]["n_spots"] >= MIN_SPOTS
    assert Optics.from_yaml(out_yaml).psf.sigma_px == pytest.approx(1.2, rel=0.05)


@pytest.mark.skipif(not NAIRR_HD.is_file(), reason="public data not here")
def test_nairr_hd_is_too_crowded(tmp_path, capsys):
    """The reported case: 65 emitters per 32 x 32 frame. Offset 500 ADU (SOURCE.md), 100 nm pixels."""
    out_yaml = tmp_path / "hd.yaml"
    out = estimate(capsys, NAIRR_HD, "--pixel-size", "100", "--offset", "500", "--max-frames", "100",
                   "--out", out_yaml)
    assert not out_yaml.exists() and f"fewer than the {MIN_SPOTS}" in out.err


# -- localize --optics with a key without a value -------------------------------------------------------------
def null_sigma_file(path):
    """What 'estimate --out' used to write when it found no spot."""
    path.write_text("# smlm-diffusers estimate\n" + yaml.safe_dump({
        "estimate": {"psf_sigma_px": None, "n_spots": 0},
        "optics": {"camera": {"pixel_size_nm": 100.0, "offset": 100.0, "gain": 1.0, "read_noise": 1.6, "qe": 1.0},
                   "psf": {"type": "gaussian", "sigma_px": None}}}, sort_keys=False))
    return path


def test_localize_refuses_a_null_value_naming_key_and_file(tmp_path, tiny_model_dir, capsys):
    frames, _ = sd.simulate(n_frames=2, shape=(16, 16), density=1.0, seed=1)
    stack = write(tmp_path / "movie.tif", frames)
    optics = null_sigma_file(tmp_path / "optics.yaml")
    with pytest.raises(SystemExit) as exc:
        cli.main(["localize", str(stack), "-o", str(tmp_path / "l.csv"), "--model", str(tiny_model_dir),
                  "--optics", str(optics), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "'optics.psf.sigma_px' has no value" in err and str(optics) in err, err
    assert "NoneType" not in err and not (tmp_path / "l.csv").exists()


@pytest.mark.parametrize("doc, key", [
    ({"optics": {"camera": {"offset": None}}}, "'optics.camera.offset' has no value"),
    ({"optics": {"psf": None}}, "'optics.psf' has no value"),
    ({"camera": {"gain": float("nan")}}, "'camera.gain' must be a finite number"),
    ({"optics": {"psf": {"type": "gaussian", "sigma_px": None}}}, "'optics.psf.sigma_px' has no value"),
])
def test_optics_names_the_key_without_a_value(tmp_path, doc, key):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=key.replace("(", r"\(").replace(".", r"\.")):
        Optics.from_yaml(path)


def test_missing_keys_still_take_the_defaults(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump({"optics": {"camera": {"pixel_size_nm": 100.0}, "psf": {"type": "gaussian"}}}))
    optics = Optics.from_yaml(path)
    assert optics.camera.pixel_size_nm == 100.0 and optics.camera.offset == sd.Camera().offset
    assert optics.psf.sigma_px == 1.0
