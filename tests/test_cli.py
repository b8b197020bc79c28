"""The smlm-diffusers command line, run in-process on a small simulated movie and a tiny random model."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

import smlm_diffusers as sd
from smlm_diffusers import cli
from smlm_diffusers.io import read_thunderstorm_csv

TS_HEADER = ('"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","uncertainty [nm]","offset [photon]",'
             '"kde_mass","probability"')
# the tiny random DeepSTORM's KDE peaks at about 1e-5, below a bfloat16 step of its output, so it runs in
# float32 here, in both modes (DDPM mode starts from the same molecules and weighs what its samples add)
DEEPSTORM = ["--mode", "deepstorm", "--threshold", "3e-6", "--mixed-precision", "no", "-q"]
DDPM = ["--mode", "ddpm", "--samples", "2", "--steps", "2", "--threshold", "3e-6", "--mixed-precision", "no", "-q"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """40 frames of 24 x 24 pixels, uint16 ADU, as a camera writes them."""
    frames, _ = sd.simulate(n_frames=40, shape=(24, 24), density=1.0, seed=0)
    path = tmp_path_factory.mktemp("stack") / "movie.tif"
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16))
    return path


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    """10 frames of 16 x 16 pixels for the (slower) DDPM runs."""
    frames, _ = sd.simulate(n_frames=10, shape=(16, 16), density=2.0, seed=1)
    path = tmp_path_factory.mktemp("small") / "small.tif"
    tifffile.imwrite(path, frames)
    return path


def localize(stack, csv, model, *extra):
    return cli.main(["localize", str(stack), "-o", str(csv), "--model", str(model), *extra])


def outputs(csv):
    """Bytes of the CSV and render PNGs, arrays of the render TIFFs, of one run."""
    base = csv.with_name(csv.stem + "_render")
    out = {"csv": csv.read_bytes(), "png": base.with_suffix(".png").read_bytes(),
           "tif": tifffile.imread(base.with_suffix(".tif"))}
    var = base.with_name(base.name + "_uncertainty")
    if var.with_suffix(".tif").exists():
        out |= {"var_png": var.with_suffix(".png").read_bytes(), "var_tif": tifffile.imread(var.with_suffix(".tif"))}
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_deepstorm_mode_writes_table_and_render(stack, tiny_model_dir, tmp_path):
    csv = tmp_path / "run" / "locs.csv"  # the folder is created
    assert localize(stack, csv, tiny_model_dir, *DEEPSTORM, "--batch-size", "16") == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == TS_HEADER
    locs = read_thunderstorm_csv(csv)
    raw = pd.read_csv(csv)
    assert len(locs) > 0 and raw["frame"].min() >= 1 and raw["frame"].max() <= 40
    assert (raw["frame"] - 1 == locs["frame"]).all()
    assert locs["frame"].is_monotonic_increasing and locs["frame"].nunique() > 30
    # photons fitted on the frame (or NaN where a frame is too crowded for the joint fit) and the CRLB
    # from them (real values: test_picasso_export_matches_the_csv, on the shipped model)
    photons, unc = raw["intensity [photon]"], raw["uncertainty [nm]"]
    assert (photons.isna() | (photons >= 0)).all() and (photons.isna() == unc.isna()).all()
    assert (unc.dropna() > 0).all()
    assert (raw["sigma [nm]"] == 108.0 * sd.SMLMDiffusionPipeline.from_pretrained(tiny_model_dir).kde_net.config
            .psf_sigma_px).all()
    # nm, inside the field (up to one KDE pixel: the random model's peaks sit on the border too)
    assert locs["x_nm"].between(-27, 24 * 108 + 27).all() and locs["y_nm"].between(-27, 24 * 108 + 27).all()
    # render: the DeepSTORM KDE summed over all frames, float32 TIFF + PNG
    render = tifffile.imread(tmp_path / "run" / "locs_render.tif")
    assert render.dtype == np.float32 and render.shape == (96, 96)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(tiny_model_dir)
    expected = pipe(tifffile.imread(stack), num_samples=0, threshold=1.0, mixed_precision="no").kde_mean
    expected = expected.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(render, expected, rtol=1e-4, atol=1e-9)
    assert (tmp_path / "run" / "locs_render.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "run" / "locs_render_uncertainty.tif").exists()
    assert not (tmp_path / "run" / "locs.csv.partial").exists()  # cleaned up once the stack is done


def test_picasso_export_matches_the_csv(stack, tmp_path):
    """-o locs.hdf5 writes Picasso's HDF5 + YAML pair; Picasso reads it, and it holds the CSV's molecules with
    their fitted photons, background and uncertainty (DeepSTORM mode with the arbitration, the shipped model's
    default: every molecule, those its pairs added too)."""
    from smlm_diffusers.defaults import default_model_path

    io_picasso = pytest.importorskip("picasso.io")
    if default_model_path() is None:
        pytest.skip("the shipped pipeline folder is not in this checkout")
    csv, h5 = tmp_path / "locs.csv", tmp_path / "locs.hdf5"
    opts = ["--mode", "deepstorm", "-q", "--max-frames", "12"]
    assert localize(stack, csv, default_model_path(), *opts) == 0
    assert localize(stack, h5, default_model_path(), *opts) == 0
    assert (tmp_path / "locs.yaml").is_file() and (tmp_path / "locs_render.tif").is_file()
    table = pd.read_csv(csv)
    assert table["intensity [photon]"].between(500, 5000).all() and table["offset [photon]"].between(10, 30).all()
    # sqrt(CRLB) of 2000 photons on 20 background: ~3 nm (an undecided molecule's sigma holds the configurations' spread)
    assert table.loc[table["probability"] >= 0.5, "uncertainty [nm]"].between(1, 20).all()
    locs, info = io_picasso.load_locs(str(h5))
    meta = {k: v for d in info for k, v in d.items()}
    assert (meta["Frames"], meta["Height"], meta["Width"], meta["Pixelsize"]) == (12, 24, 24, 108.0)
    # Picasso drops what lies within half a pixel of the top or left edge (x or y < 0 in its convention)
    inside = table[(table["x [nm]"] >= 54) & (table["y [nm]"] >= 54)].reset_index(drop=True)
    assert len(locs) == len(inside) > 0
    locs = locs.reset_index(drop=True)
    np.testing.assert_array_equal(locs["frame"], inside["frame"] - 1)
    np.testing.assert_allclose((locs["x"] + 0.5) * 108, inside["x [nm]"], atol=2e-3)
    np.testing.assert_allclose((locs["y"] + 0.5) * 108, inside["y [nm]"], atol=2e-3)
    np.testing.assert_allclose(locs["photons"], inside["intensity [photon]"], rtol=1e-5)
    np.testing.assert_allclose(locs["bg"], inside["offset [photon]"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sqrt((locs["lpx"] ** 2 + locs["lpy"] ** 2) / 2) * 108, inside["uncertainty [nm]"],
                               rtol=1e-5)
    np.testing.assert_allclose(locs["sx"] * 108, inside["sigma [nm]"], rtol=1e-6)


def test_renders_carry_their_pixel_size(stack, tiny_model_dir, tmp_path):
    from smlm_diffusers.io import tiff_pixel_size_nm

    csv = tmp_path / "locs.csv"
    assert localize(stack, csv, tiny_model_dir, *DEEPSTORM, "--max-frames", "4", "--pixel-size", "100") == 0
    assert tiff_pixel_size_nm(tmp_path / "locs_render.tif") == pytest.approx(25.0)
    with tifffile.TiffFile(tmp_path / "locs_render.tif") as tif:
        assert tif.imagej_metadata["unit"] == "nm"


def test_doubtful_camera_warns(stack, tiny_model_dir, tmp_path, capsys):
    assert localize(stack, tmp_path / "l.csv", tiny_model_dir, "--mode", "deepstorm", "--max-frames", "2",
                    "--gain", "2.2") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--gain" in err
    # the normal camera: nothing to say
    assert localize(stack, tmp_path / "m.csv", tiny_model_dir, "--mode", "deepstorm", "--max-frames", "2") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_max_frames_and_option_change(stack, tiny_model_dir, tmp_path, capsys):
    full = tmp_path / "full.csv"
    localize(stack, full, tiny_model_dir, *DEEPSTORM, "--batch-size", "8")
    part = tmp_path / "part.csv"
    # 20 frames: batches [0, 8) and [8, 16) are committed, [16, 20) is a tail redone later
    localize(stack, part, tiny_model_dir, *DEEPSTORM, "--batch-size", "8", "--max-frames", "20")
    progress = json.loads((tmp_path / "part.csv.partial" / "progress.json").read_text())
    assert progress["frames_done"] == 16 and progress["signature"]["options"]["mode"] == "DeepSTORM"
    assert read_thunderstorm_csv(part)["frame"].max() == 19
    localize(stack, part, tiny_model_dir, "--mode", "deepstorm", "--threshold", "3e-6", "--mixed-precision", "no",
             "--batch-size", "8")
    assert "resuming" in capsys.readouterr().err
    assert_same(outputs(full), outputs(part))
    assert not (tmp_path / "part.csv.partial").exists()

    # a changed option discards the partial results, with a message
    other = tmp_path / "other.csv"
    localize(stack, other, tiny_model_dir, *DEEPSTORM, "--batch-size", "8", "--max-frames", "10")
    localize(stack, other, tiny_model_dir, "--mode", "deepstorm", "--threshold", "2e-6", "--mixed-precision", "no",
             "--batch-size", "8")
    err = capsys.readouterr().err
    assert "starting from scratch" in err and "threshold" in err


@pytest.mark.slow
def test_ddpm_resume_after_failure_is_identical(small_stack, tiny_model_dir, tmp_path, monkeypatch):
    full = tmp_path / "full.csv"
    localize(small_stack, full, tiny_model_dir, *DDPM, "--batch-size", "4")
    out = outputs(full)
    assert "var_tif" in out and out["var_tif"].shape == (64, 64) and out["var_tif"].max() > 0
    raw = pd.read_csv(full)
    assert list(raw.columns[-4:]) == ["offset [photon]", "kde_mass", "probability", "n_samples"]
    # photons and background fitted on the frame, as ThunderSTORM's intensity and offset (their accuracy:
    # test_photometry.py; this random model's positions are arbitrary)
    assert (raw["intensity [photon]"] >= 0).all() and (raw["offset [photon]"] >= 0).all()
    assert raw["intensity [photon]"].notna().all() and raw["offset [photon]"].notna().all()
    assert raw["probability"].between(0, 1).all() and raw["frame"].min() >= 1

    # the second batch fails: the first stays committed, a re-run continues after it
    calls = {"n": 0}
    original = sd.SMLMDiffusionPipeline.__call__

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "__call__", failing)
    resumed = tmp_path / "resumed.csv"
    with pytest.raises(RuntimeError, match="simulated failure"):
        localize(small_stack, resumed, tiny_model_dir, *DDPM, "--batch-size", "4")
    state = json.loads((tmp_path / "resumed.csv.partial" / "rank0.json").read_text())
    assert state["batches"] == [0] and state["frames_done"] == 4
    monkeypatch.setattr(sd.SMLMDiffusionPipeline, "__call__", original)
    calls["n"] = 0
    localize(small_stack, resumed, tiny_model_dir, *DDPM, "--batch-size", "4")
    assert_same(out, outputs(resumed))


class FakeState:
    """Two 'processes' as threads: accelerate.PartialState's interface used by the command."""

    barrier = None

    def __init__(self, cpu=False, **kwargs):
        self.process_index = int(threading.current_thread().name[-1])
        self.num_processes = 2
        self.is_main_process = self.process_index == 0
        self.device = "cpu"

    def wait_for_everyone(self):
        FakeState.barrier.wait(timeout=120)

    def split_between_processes(self, items):
        import contextlib

        n, r = divmod(len(items), self.num_processes)
        start = self.process_index * n + min(self.process_index, r)
        return contextlib.nullcontext(items[start:start + n + (self.process_index < r)])


@pytest.mark.slow
def test_frames_split_between_processes(stack, tiny_model_dir, tmp_path, monkeypatch):
    import accelerate

    single = tmp_path / "single.csv"
    localize(stack, single, tiny_model_dir, *DEEPSTORM, "--batch-size", "8")
    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    FakeState.barrier = threading.Barrier(2)
    # Real ranks are processes. These are threads of one process, and loading a model patches
    # torch.nn.Module globally (accelerate's init_empty_weights): two loads at once would leave
    # every later module on the meta device, so the fake ranks load one at a time.
    lock, load = threading.Lock(), cli.load_model

    def load_one_at_a_time(location):
        with lock:
            return load(location)

    monkeypatch.setattr(cli, "load_model", load_one_at_a_time)
    multi = tmp_path / "multi.csv"
    errors = []

    def run():
        try:
            localize(stack, multi, tiny_model_dir, *DEEPSTORM, "--batch-size", "8")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
            FakeState.barrier.abort()

    threads = [threading.Thread(target=run, name=f"rank{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    a, b = outputs(single), outputs(multi)
    assert a["csv"] == b["csv"]  # same rows in frame order
    np.testing.assert_allclose(a["tif"], b["tif"], rtol=1e-6)


def test_estimate_subcommand(tmp_path, capsys):
    cam = sd.Camera(pixel_size_nm=100.0, offset=200.0, gain=2.0, read_noise=2.0)
    frames, _ = sd.simulate(n_frames=60, shape=(48, 48), density=0.1, photons=1500, background=30, sigma_px=1.3,
                            seed=3, camera=cam)
    path = tmp_path / "beads.tiff"
    tifffile.imwrite(path, frames)
    out = tmp_path / "psf.yaml"
    assert cli.main(["estimate", str(path), "--pixel-size", "100", "--offset", "200", "--gain", "2",
                     "--read-noise", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSF sigma" in text and "nm" in text and "photons per emitter" in text
    doc = yaml.safe_load(out.read_text())
    est = doc["estimate"]
    assert est["psf_sigma_px"] == pytest.approx(1.3, rel=0.05)
    assert est["psf_sigma_nm"] == pytest.approx(130, rel=0.05)
    assert est["background_photons_per_px"] == pytest.approx(30, rel=0.05)
    assert est["photons_median"] == pytest.approx(1500, rel=0.1)
    assert est["n_spots"] >= 30
    assert doc["data"]["camera"] == {"pixel_size_nm": 100.0, "offset": 200.0, "gain": 2.0, "read_noise": 2.0,
                                     "qe": 1.0}
    assert doc["data"]["sigma_px"] == pytest.approx(1.3, rel=0.05)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["localize", "{missing}", "-o", "{tmp}/l.csv", "--model", "{model}"], "input file not found"),
        (["localize", "{text}", "-o", "{tmp}/l.csv", "--model", "{model}"], "must be a TIFF"),
        (["localize", "{fake_tif}", "-o", "{tmp}/l.csv", "--model", "{model}"], "not a readable TIFF"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{tmp}/nowhere"], "cannot load the model"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--steps", "5000"], "--steps must be"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--samples", "0"], "must be >= 1"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--gain", "-1"], "must be > 0"),
        (["localize", "{stack}", "--model", "{model}"], "required: -o"),
        (["localize", "{stack}", "-o", "{tmp}/l.txt", "--model", "{model}"], "must end in .csv"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--offset", "1e9"], "suggest --offset"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--offset=-1e6"], "suggest --offset"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--gain", "1e9"], "suggest --gain"),
        (["localize", "{stack}", "-o", "{tmp}/l.csv", "--model", "{model}", "--gain", "1e-9"], "suggest --gain"),
        (["estimate", "{missing}"], "input file not found"),
        (["estimate", "{stack}", "--max-frames", "x"], "whole number"),
    ],
)
def test_errors_exit_with_a_message(argv, message, stack, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.tif").write_text("not a tiff")
    fill = {"missing": tmp_path / "missing.tif", "text": tmp_path / "notes.txt", "fake_tif": tmp_path / "fake.tif",
            "tmp": tmp_path, "model": tiny_model_dir, "stack": stack}
    with pytest.raises(SystemExit) as exc:
        cli.main([a.format(**fill) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_default_model(stack, tmp_path, monkeypatch, capsys):
    from smlm_diffusers import defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    monkeypatch.setattr(defaults, "default_model_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(SystemExit):
        cli.main(["localize", str(stack), "-o", "l.csv"])
    err = capsys.readouterr().err
    assert "--model" in err and defaults.HUB_MODEL_ID in err and cli.MODEL_ENV in err


def test_default_model_is_found_relative_to_the_package(monkeypatch):
    from smlm_diffusers import defaults

    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    repo = Path(cli.__file__).resolve().parents[1]
    assert defaults.default_model_candidates()[0] == repo / "pretrained" / defaults.DEFAULT_MODEL
    monkeypatch.setenv(cli.MODEL_ENV, "someone/else")
    assert defaults.resolve_model() == ("someone/else", "env")
    assert defaults.resolve_model("here") == ("here", "given")


def _console_script():
    beside = Path(sys.executable).with_name("smlm-diffusers")
    return str(beside) if beside.is_file() else shutil.which("smlm-diffusers")


@pytest.mark.slow
@pytest.mark.skipif(_console_script() is None, reason="console script not installed (pip install -e .)")
def test_console_script_localizes_from_another_folder(tmp_path):
    """The README's command, without --model, from a folder that is not the repository: the shipped weights."""
    from smlm_diffusers.defaults import default_model_path

    if default_model_path() is None:
        pytest.skip("the shipped pipeline folder is not in this checkout")
    frames, _ = sd.simulate(n_frames=3, shape=(24, 24), density=1.0, seed=2)
    tifffile.imwrite(tmp_path / "stack.tif", np.round(frames).astype(np.uint16), photometric="minisblack")
    env = {k: v for k, v in os.environ.items() if k != cli.MODEL_ENV} | {"HF_HUB_OFFLINE": "1"}
    res = subprocess.run([_console_script(), "localize", "stack.tif", "-o", "locs.csv", "--mode", "deepstorm", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(read_thunderstorm_csv(tmp_path / "locs.csv")) > 0 and (tmp_path / "locs_render.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(_console_script() is None, reason="console script not installed (pip install -e .)")
def test_console_script_help():
    res = subprocess.run([_console_script(), "localize", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resume" in res.stdout and "accelerate launch" in res.stdout and "--max-frames" in res.stdout
