"""What the command line says: --help of every subcommand matches the code (no retired descriptions), messages
print plain numbers and name the model's camera values when the user typed none, and localize warns when the
frames' optics are far from the model's."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.camera_check import check_camera, plain_number
from smlm_diffusers.cli_optics import MODEL_FIT_TOLERANCE, model_fit_warning, shipped_folders

# descriptions the code no longer matches
RETIRED = [
    "to be replaced",  # deepstorm mode's uncertainty: the refinement exists (the CRLB of the joint fit)
    "sigma model",  # ddpm mode: configurations weighed on the frame, sqrt(E[bound^2] + Var), nothing fitted
    "two factors fitted",
    "the model's PSF sigma",  # sigma [nm] is --psf-sigma / --optics / the model's
]
EXPONENT = re.compile(r"\d(\.\d+)?e[+-]0\d")  # 5e+03: numbers in messages are plain


def subcommand_helps() -> dict[str, str]:
    parser = cli.build_parser()
    helps = {"": parser.format_help()}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        helps[name] = p.format_help()
    return helps


def test_every_subcommand_has_help():
    assert {"", "localize", "estimate", "calibrate-z", "postprocess"} <= set(subcommand_helps())


@pytest.mark.parametrize("name", ["", "localize", "estimate", "calibrate-z", "postprocess"])
def test_help_has_no_retired_words(name):
    text = " ".join(subcommand_helps()[name].split()).lower()  # argparse rewraps: compare words, not lines
    for phrase in RETIRED:
        assert phrase.lower() not in text, (name, phrase)
    assert not EXPONENT.search(text), (name, EXPONENT.search(text))


def test_localize_help_describes_what_the_modes_do():
    text = " ".join(subcommand_helps()["localize"].split())
    # deepstorm mode: the joint fit on the frame and its bound; ddpm mode: configurations and the spread
    assert "sqrt(CRLB) of that fit" in text and "nuisance parameters" in text
    assert "sqrt(E_w[bound_x^2] + Var_w[x])" in text and "weighed by its evidence" in text


def test_mixed_precision_help_names_the_default_the_code_uses():
    parser = cli.build_parser()
    loc = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["localize"]
    action = next(a for a in loc._actions if a.dest == "mixed_precision")
    assert action.help.startswith(f"{action.default} (default)")
    from smlm_diffusers.models.precision import use_bf16

    from smlm_diffusers.models.precision import cpu_has_native_bf16

    # auto: bf16 only where the CPU runs it natively, as the help says
    assert use_bf16(action.default, "cpu") == cpu_has_native_bf16()
    assert "natively" in action.help and "emulated" in action.help


def test_localize_help_states_the_tolerance_it_applies():
    assert f"more than {100 * MODEL_FIT_TOLERANCE:.0f}% from what the model was trained for" in " ".join(
        subcommand_helps()["localize"].split())


def test_estimate_help_states_the_minimum_it_applies():
    from smlm_diffusers.psf_estimation import MIN_SPOTS

    assert f"fewer than {MIN_SPOTS} fitted spots" in " ".join(subcommand_helps()["estimate"].split())


def test_readme_deviations_match_the_code():
    readme = Path(cli.__file__).resolve().parents[1] / "README.md"
    if not readme.is_file():
        pytest.skip("no README beside the package")
    text = " ".join(readme.read_text().split())
    deviations = text.split("## Deviations from the paper", 1)[1]
    assert "two factors fitted" not in deviations and "sigma model" not in deviations
    # what the code does: sqrt(E_w[bound^2] + Var_w[position]) over the weighed configurations
    assert "sqrt(E_w[bound^2] + Var_w[position])" in deviations


# -- numbers and camera values in messages ------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [(5000, "5000"), (5003.4, "5003"), (1e9, "1000000000"), (0.00123, "0.00123"),
                                         (1.2345, "1.23"), (99.96, "100"), (-1e6, "-1000000"), (0.0, "0")])
def test_plain_numbers(value, text):
    assert plain_number(value) == text


@pytest.fixture(scope="module")
def frames():
    """Frames of the paper's camera (offset 100 ADU, gain 1)."""
    return sd.simulate(n_frames=4, shape=(48, 48), density=1.0, photons=2000, background=20, seed=0)[0]


def test_camera_message_names_the_models_offset_when_none_was_typed(frames):
    camera = sd.Camera(offset=5000.0)
    untyped = check_camera(frames, camera, typed=set(), source="the model's")
    msg = untyped.errors[0]
    assert msg.startswith("the model's offset (5000 ADU) is too high") and "pass --offset 1" in msg, msg
    assert "--offset 5000" not in msg and "e+0" not in msg
    typed = check_camera(frames, camera).errors[0]  # typed (the default): the option as the user wrote it
    assert typed.startswith("--offset 5000 ADU is too high") and "suggest --offset" in typed
    assert "e+0" not in typed


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    frames, _ = sd.simulate(n_frames=3, shape=(24, 24), density=1.0, seed=4)
    path = tmp_path_factory.mktemp("words") / "movie.tif"
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
    return path


def test_localize_camera_error_names_where_the_camera_came_from(small_stack, tiny_model_dir, tmp_path, capsys):
    # frames of a camera with offset 0: the model's offset of 100 ADU sits above most pixels
    cam0 = sd.Camera(offset=0.0)
    frames, _ = sd.simulate(n_frames=3, shape=(24, 24), density=1.0, seed=5, background=5, camera=cam0)
    dark = tmp_path / "dark.tif"
    tifffile.imwrite(dark, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
    with pytest.raises(SystemExit) as exc:
        cli.main(["localize", str(dark), "-o", str(tmp_path / "a.csv"), "--model", str(tiny_model_dir), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "the model's offset (100 ADU) is too high" in err and "pass --offset" in err, err
    assert "--offset 100" not in err

    # a camera from --optics with offset 5000: named as the file's, printed as 5000
    optics = tmp_path / "optics.yaml"
    optics.write_text(yaml.safe_dump({"optics": {"camera": {"pixel_size_nm": 108.0, "offset": 5000.0},
                                                 "psf": {"type": "gaussian", "sigma_px": 1.0}}}))
    with pytest.raises(SystemExit) as exc:
        cli.main(["localize", str(small_stack), "-o", str(tmp_path / "b.csv"), "--model", str(tiny_model_dir),
                  "--optics", str(optics), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "the --optics file's offset (5000 ADU)" in err, err
    assert "e+0" not in err and "Traceback" not in err


# -- frames whose optics are far from the model's ------------------------------------------------------------
def test_localize_warns_when_the_pixel_size_is_far_from_the_models(small_stack, tiny_model_dir, tmp_path, capsys):
    args = ["localize", str(small_stack), "--model", str(tiny_model_dir), "--mode", "deepstorm", "--max-frames",
            "1", "--mixed-precision", "no", "--threshold", "3e-6", "--restart"]
    assert cli.main(args + ["-o", str(tmp_path / "a.csv"), "--pixel-size", "160"]) == 0
    err = capsys.readouterr().err
    assert "warning: these frames have pixels of 160 nm (the model's: 108 nm)" in err, err
    assert "accelerate launch train/train_ddpm.py --config" in err  # no shipped folder is trained for 160 nm
    # the model's own optics (and a 100 nm camera whose PSF is as wide in nm): nothing to say
    assert cli.main(args + ["-o", str(tmp_path / "b.csv")]) == 0
    assert "these frames have" not in capsys.readouterr().err
    assert cli.main(args + ["-o", str(tmp_path / "c.csv"), "--pixel-size", "100", "--psf-sigma", "1.09"]) == 0
    assert "these frames have" not in capsys.readouterr().err


def test_warning_compares_the_psf_in_nm():
    folders = [{"name": "smlm-ddpm-2d", "pixel_nm": 108.0, "sigma_px": 1.0, "psf_nm": 108.0, "ddpm": True},
               {"name": "smlm-ddpm-2d-100nm", "pixel_nm": 100.0, "sigma_px": 1.1, "psf_nm": 110.0, "ddpm": True}]
    # 100 nm pixels and 1.09 px: 109 nm, as wide as the 108 nm model's 1 px
    assert model_fit_warning("smlm-ddpm-2d", 108.0, 1.0, 100.0, 1.09, folders=folders) is None
    # 1.3 px of 100 nm: 130 nm, 20% wider than 108 nm (and than the 100 nm folder's 110 nm)
    wide = model_fit_warning("smlm-ddpm-2d", 108.0, 1.0, 100.0, 1.3, folders=folders)
    assert wide and "PSF sigma of 130 nm" in wide and "train/train_ddpm.py" in wide
    # 1.25 px of 100 nm: 125 nm, within 15% of the 100 nm folder: it is named
    named = model_fit_warning("smlm-ddpm-2d", 108.0, 1.0, 100.0, 1.25, folders=folders)
    assert named and named.endswith("--model smlm-ddpm-2d-100nm")
    assert MODEL_FIT_TOLERANCE == pytest.approx(0.15)


def test_shipped_folders_are_judged_by_their_own_configs():
    folders = {f["name"]: f for f in shipped_folders()}
    if "smlm-ddpm-2d" not in folders or "smlm-ddpm-2d-100nm" not in folders:
        pytest.skip("the shipped pipeline folders are not in this checkout")
    assert not any(f["name"].startswith("smlm-3d") for f in folders.values())  # 3D folders are not offered
    a, b = folders["smlm-ddpm-2d"], folders["smlm-ddpm-2d-100nm"]
    assert a["pixel_nm"] == 108.0 and b["pixel_nm"] == 100.0
    warning = model_fit_warning("smlm-ddpm-2d", a["pixel_nm"], a["sigma_px"], 100.0, 1.25)
    assert warning and "--model smlm-ddpm-2d-100nm" in warning
    # the matching folder itself: no warning
    assert model_fit_warning("smlm-ddpm-2d-100nm", b["pixel_nm"], b["sigma_px"], 100.0, 1.09) is None
    # 160 nm pixels: no shipped folder fits, the recipe is named
    far = model_fit_warning("smlm-ddpm-2d", a["pixel_nm"], a["sigma_px"], 160.0, a["sigma_px"])
    assert far and "No shipped folder fits" in far and "train/train_deepstorm.py" in far
