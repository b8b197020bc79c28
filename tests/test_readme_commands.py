"""The README's "Localize" and "Whole movies" commands, run as a user runs them: from a folder outside the
repository, on a simulated movie and on the public stacks (skipped without ../shared/data), and every table
they write checked for impossible numbers.

Each command is read from the README's code blocks, so a command the README shows is a command tested.
The camera options of a command are replaced by the stack's own camera (the README's values are examples
for another camera: on these stacks the camera check would rightly stop them); the frames are cut with
``--max-frames`` to keep the suite short.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

import smlm_diffusers as sd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CAMERA_OPTIONS = ("--offset", "--gain", "--pixel-size", "--read-noise", "--excess-noise")


def readme_commands(section: str) -> list[list[str]]:
    """The ``smlm-diffusers`` commands of the first bash block after the README heading starting with ``section``."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("smlm-diffusers "):
            commands.append(shlex.split(line)[1:])
    assert commands, f"no smlm-diffusers command under '## {section}'"
    return commands


def with_stack(args: list[str], stack: Path, camera: sd.Camera, max_frames: int) -> list[str] | None:
    """The README command on ``stack`` with its camera; None for a Hub repo id (no network here)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in CAMERA_OPTIONS:
            skip = True
            continue
        out.append(str(stack) if a.endswith(".tif") else a)
    if "--model" in out and "/" in out[out.index("--model") + 1] and not out[out.index("--model") + 1].startswith(
            "pretrained/"):
        return None
    if out[0] in ("localize", "estimate"):
        out += ["--pixel-size", f"{camera.pixel_size_nm:g}", "--offset", f"{camera.offset:g}", "--gain",
                f"{camera.gain:g}"]
    if out[0] == "localize":
        out += ["--read-noise", f"{camera.read_noise:g}", "--max-frames", str(max_frames)]
        if "--samples" in out:
            out[out.index("--samples") + 1] = "2"  # fewer samples: the same code path, a shorter suite
            out += ["--steps", "2"]
    return out


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "smlm_diffusers.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def check_table(path: Path, shape: tuple[int, int], pixel_nm: float) -> int:
    """Every row possible: sigma finite in [0.1 nm, 10 PSF widths], photons >= 1, inside the field, numbers only."""
    h, w = shape
    if path.suffix == ".csv":
        raw = pd.read_csv(path)
        assert all(pd.api.types.is_numeric_dtype(raw[c]) for c in raw.columns), raw.dtypes
        x, y, s = raw["x [nm]"], raw["y [nm]"], raw["uncertainty [nm]"]
        psf_nm, photons = raw["sigma [nm]"], raw["intensity [photon]"]
    else:
        with h5py.File(path) as fh:
            locs = fh["locs"][...]
        x, y = (locs["x"] + 0.5) * pixel_nm, (locs["y"] + 0.5) * pixel_nm
        s = np.sqrt((locs["lpx"] ** 2 + locs["lpy"] ** 2) / 2) * pixel_nm
        psf_nm, photons = locs["sx"] * pixel_nm, locs["photons"]
        assert path.with_suffix(".yaml").is_file()
    x, y, s, psf_nm, photons = (np.asarray(v, np.float64) for v in (x, y, s, psf_nm, photons))
    assert len(x) > 0, f"{path.name}: no localizations"
    assert np.isfinite(s).all() and (s >= 0.1).all(), f"{path.name}: sigma {np.nanmin(s)}"
    assert (s <= 10 * psf_nm).all(), f"{path.name}: sigma up to {s.max():.1f} nm"
    assert (photons >= 1).all(), f"{path.name}: photons down to {photons.min()}"
    assert ((x >= 0) & (x < w * pixel_nm) & (y >= 0) & (y < h * pixel_nm)).all(), f"{path.name}: outside the field"
    return len(x)


def run_sections(stack: Path, camera: sd.Camera, work: Path, max_frames: int) -> dict[str, str]:
    """Run the README's commands on ``stack``; the output of each, by command line."""
    h, w = tifffile.imread(stack, key=0).shape
    outputs = {}
    for section in ("Localize a TIFF stack", "Whole movies"):
        for args in readme_commands(section):
            cmd = with_stack(args, stack, camera, max_frames)
            if cmd is None:
                continue
            res = run_cli(cmd, work)
            line = " ".join(cmd)
            assert "Traceback" not in res.stderr, f"{line}\n{res.stderr[-3000:]}"
            if cmd[0] == "estimate" and res.returncode == 2:  # too crowded for isolated spots: refused, said why
                assert "no estimate written" in res.stderr, res.stderr
                outputs[line] = res.stderr
                continue
            assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
            outputs[line] = res.stderr + res.stdout
            if "-o" in cmd and cmd[0] in ("localize", "postprocess"):
                check_table(work / cmd[cmd.index("-o") + 1], (h, w), camera.pixel_size_nm)
    return outputs


@pytest.mark.slow
def test_readme_commands_on_a_simulated_movie(tmp_path):
    camera = sd.Camera()  # the shipped model's camera
    frames, _ = sd.simulate(n_frames=16, shape=(40, 40), density=0.4, photons=2000, background=20, seed=3)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.clip(np.rint(frames), 0, 65535).astype(np.uint16))
    work = tmp_path / "elsewhere"
    work.mkdir()
    outputs = run_sections(stack, camera, work, max_frames=6)
    assert not any(line.startswith("estimate") and "no estimate written" in o for line, o in outputs.items())
    linked = [o for line, o in outputs.items() if "--link" in line and line.startswith("localize")]
    assert linked and all("not measured" in o for o in linked)  # 6 frames: no drift, no FRC to report
    for o in linked:  # one count: the localizations found are the ones linked
        found = int(re.search(r"(\d+) localizations in \d+ frames", o).group(1))
        assert f"linked {found} localizations into" in o


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="no public data at ../shared/data")
@pytest.mark.parametrize("name", ["bundled_tubes_hd"])
def test_readme_commands_on_the_public_stacks(tmp_path, name):
    from benchmarks.public import DATASETS

    movie = DATASETS[name].test
    run_sections(DATA / movie.tiff, movie.camera, tmp_path, max_frames=4)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="no public data at ../shared/data")
@pytest.mark.parametrize("name", ["bundled_tubes_hd", "nairr_hd"])
def test_whole_movie_link_undrift_on_the_public_stacks(tmp_path, name):
    """The README's whole-movie command on the public stacks that crashed it (the first 32 frames: Bundled Tubes'
    225 molecules a frame make the frame fit the cost; the whole stacks were run by hand): no traceback, every
    row possible, the rows left out counted, drift and FRC measured or said why not."""
    from benchmarks.public import DATASETS

    movie = DATASETS[name].test
    cam = movie.camera
    h, w = tifffile.imread(DATA / movie.tiff, key=0).shape
    res = run_cli(["localize", str(DATA / movie.tiff), "-o", "t.hdf5", "--mode", "deepstorm", "--link", "--undrift",
                   "--pixel-size", f"{cam.pixel_size_nm:g}", "--offset", f"{cam.offset:g}", "--gain", f"{cam.gain:g}",
                   "--read-noise", f"{cam.read_noise:g}", "--max-frames", "32"], tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert check_table(tmp_path / "t.hdf5", (h, w), cam.pixel_size_nm) > 100
    found = int(re.search(r"(\d+) localizations in 32 frames", res.stderr).group(1))
    assert f"linked {found} localizations into" in res.stderr
    assert re.search(r"drift (not measured|corrected)", res.stderr) and re.search(r"FRC (not measured|resolution)",
                                                                                  res.stderr)
    assert "Rows left out:" in (tmp_path / "t.yaml").read_text()
