"""The Gradio app through gradio_client, against a server on 127.0.0.1 (tiny random pipeline).

Covers the simulate and upload paths, frame switching, the zoomed uncertainty view, downloads
(the CLI's writers, Picasso, calibrated TIFFs, named after the input), bad uploads and bad
camera settings (a clear gr.Error message, and the server keeps serving), range errors that
name the field, DeepSTORM-only runs and two concurrent requests.
"""

import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

import smlm_diffusers as sd
from smlm_diffusers import app as au
from smlm_diffusers.io import read_picasso_hdf5, read_thunderstorm_csv, tiff_pixel_size_nm

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py lives at the repository root
import app  # noqa: E402

# photons, background, density, PSF sigma, frame size, frames, structure, seed
SIM = (2000, 20, 2.0, 1.0, 16, 2, "Random (uniform)", 3)
SAMPLING = (2, 3, 0)  # samples, steps, sampling seed
ZOOM = 8  # zoom window, camera pixels


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tiny_model_dir):
    pipe = au.load_pipeline(tiny_model_dir)  # the app's loading path
    demo = app.build_demo(pipe, model_name="tiny test pipeline")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im)


FRAME_OUTPUTS = ["raw", "deepstorm", "zoom", "zoom_x", "zoom_y", "gallery", "mean", "variance", "table", "metrics"]


def value(output):
    """An output's value; outputs the app shows or hides per run come as Gradio updates."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        return output.get("value")
    return output


def unpack(result):
    names = ["frame", "status", *FRAME_OUTPUTS, "sum_mean", "sum_var", "files", "drift", "selfcheck", "drift_note",
             "model_info"]
    assert len(result) == len(names)
    return {k: value(v) for k, v in zip(names, result)}


def test_simulate_path(client):
    out = unpack(client.predict(*SIM, *SAMPLING, ZOOM, api_name="/simulate"))
    assert "2 simulated frames of 16 × 16 px" in out["status"]
    for key in ("raw", "deepstorm", "zoom", "mean", "variance", "sum_mean", "sum_var"):
        img = png(out[key])
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 0
    assert len(out["gallery"]) == SAMPLING[0]
    for item in out["gallery"]:
        png(item["image"])
    assert "Jaccard" in out["metrics"] and "all frames" in out["metrics"]
    table = out["table"]
    assert "σx [nm]" in table["headers"] and "probability" in table["headers"]
    # every download is named after the run (here the simulation and its seed)
    files = {f.rsplit("/", 1)[-1]: f for f in out["files"]}
    stem = f"simulation_seed{SIM[-1]}"
    assert set(files) == {f"{stem}_{n}" for n in ("locs.csv", "locs.hdf5", "locs.yaml", "kde_mean.tif",
                                                  "kde_variance.tif", "super_resolved_sum.tif", "uncertainty_sum.tif")}
    assert {Path(out[k]).name for k in ("raw", "zoom")} == {f"{stem}_frame0_raw.png", f"{stem}_frame0_zoom.png"}
    # the CSV is the command line's (same writer): its extra columns are there
    raw = pd.read_csv(files[f"{stem}_locs.csv"])
    assert list(raw.columns[-4:]) == ["offset [photon]", "kde_mass", "probability", "n_samples"]
    locs = read_thunderstorm_csv(files[f"{stem}_locs.csv"])
    assert set(locs["frame"]) <= {0, 1}
    picasso, info = read_picasso_hdf5(files[f"{stem}_locs.hdf5"])
    assert info[0]["Frames"] == 2 and info[0]["Width"] == 16 and info[1]["Pixelsize"] == 108.0
    np.testing.assert_allclose(picasso["x_nm"], locs["x_nm"], atol=2e-3)
    mean = tifffile.imread(files[f"{stem}_kde_mean.tif"])
    assert mean.dtype == np.float32 and mean.shape == (2, 64, 64)
    var = tifffile.imread(files[f"{stem}_kde_variance.tif"])
    assert var.dtype == np.float32 and var.shape == (2, 64, 64) and (var >= 0).all()
    np.testing.assert_allclose(tifffile.imread(files[f"{stem}_super_resolved_sum.tif"]), mean.sum(0), rtol=1e-5,
                               atol=1e-6)
    for name in ("kde_mean.tif", "kde_variance.tif", "super_resolved_sum.tif", "uncertainty_sum.tif"):
        assert tiff_pixel_size_nm(files[f"{stem}_{name}"]) == pytest.approx(27.0)  # Fiji shows nm

    # the frame slider re-renders from the session's result without running the model again
    shown = {k: value(v) for k, v in zip(FRAME_OUTPUTS, client.predict(1, ZOOM, api_name="/show_frame"))}
    assert png(shown["raw"]).std() > 0 and png(shown["zoom"]).std() > 0
    assert "frame 1" in shown["metrics"]


def test_zoom_view(client):
    out = unpack(client.predict(*SIM, *SAMPLING, ZOOM, api_name="/simulate"))
    # opened on the most crowded 8 x 8 pixel window, centred inside the 16 x 16 px (1.728 um) frame
    assert 0.432 <= out["zoom_x"] <= 1.296 and 0.432 <= out["zoom_y"] <= 1.296
    zoom, x, y = client.predict(0, 0.5, 0.5, 4, api_name="/zoom")  # frame 0, a chosen centre (um), 4 pixels
    assert (x, y) == pytest.approx((0.54, 0.54)) and png(zoom).std() > 0  # the nearest window of whole pixels
    zoom, x, y = client.predict(0, 0.05, 1.7, 4, api_name="/zoom")
    assert (x, y) == pytest.approx((0.216, 1.512))  # kept inside the frame
    zoom, x2, y2 = client.predict(0, ZOOM, api_name="/zoom_crowded")
    assert (x2, y2) == (out["zoom_x"], out["zoom_y"])
    with pytest.raises(AppError, match="'Zoom centre x \\(µm\\)' must be between 0 and"):
        client.predict(0, 50.0, 0.5, ZOOM, api_name="/zoom")


def test_simulate_matches_package(client, tiny_model_dir):
    """The app's table is the package's: same inputs and seeds, same localizations."""
    out = unpack(client.predict(*SIM, *SAMPLING, ZOOM, api_name="/simulate"))
    got = read_thunderstorm_csv(next(f for f in out["files"] if f.endswith(".csv")))
    pipe = au.load_pipeline(tiny_model_dir)
    cam = au.pipeline_camera(pipe)
    frames, gt = au.simulate_frames(au.SimulationSettings(*SIM), cam)
    ref = au.run_pipeline(pipe, frames, *SAMPLING, camera=cam, ground_truth=gt)
    assert len(got) == len(ref.localizations)
    np.testing.assert_allclose(got["x_nm"], ref.localizations["x_nm"], rtol=1e-9)
    np.testing.assert_array_equal(got["frame"], ref.localizations["frame"])
    # DeepSTORM-only mode shows only what applies: no samples, mean or variance; sigma is the CRLB
    out0 = unpack(client.predict(*SIM, 0, 3, 0, ZOOM, api_name="/simulate"))
    assert "DeepSTORM only" in out0["status"] and "0.0 s" not in out0["status"]
    assert not any("variance" in f or "uncertainty" in f for f in out0["files"])
    assert not out0["gallery"] and out0["mean"] is None and out0["variance"] is None and out0["sum_var"] is None
    assert "probability" not in out0["table"]["headers"] and "photons" in out0["table"]["headers"]
    assert png(out0["zoom"]).std() > 0


def test_one_frame_run_says_why_frc_and_drift_were_not_measured(client):
    """No empty FRC axes: a part not measured is "not measured: <reason>" in the note, and with nothing
    measured the drift/FRC picture is hidden."""
    raw = client.predict(*SIM[:5], 1, *SIM[6:], *SAMPLING, ZOOM, api_name="/simulate")
    out = unpack(raw)
    for drift in raw[-4:-2]:  # the drift/FRC and self-check pictures
        assert value(drift) is None and (not isinstance(drift, dict) or drift.get("visible") is False), drift
    note = out["drift_note"]
    assert "FRC not measured: " in note and "Drift not measured: simulations have none" in note
    assert "FRC resolution" not in note and "Sigma self-check not measured: simulations draw new molecules" in note


def _post(frc=None, drift=None, selfcheck=None):
    from types import SimpleNamespace

    return SimpleNamespace(frc=frc, drift=drift, selfcheck=selfcheck)


def test_postprocess_note_reads_the_reasons():
    from types import SimpleNamespace

    from smlm_diffusers.app import core

    result = SimpleNamespace(localizations=pd.DataFrame({"x_nm": np.zeros(300)}), ground_truth=None, n_frames=40)
    frc_reason = SimpleNamespace(resolution_nm=float("nan"), reason="too few localizations (282 < 1000)")
    frc_old = SimpleNamespace(resolution_nm=float("nan"))  # before FRCResult had a reason
    frc_ok = SimpleNamespace(resolution_nm=42.0, reason=None)
    drift_reason = SimpleNamespace(reason="only 0 of 10 segment pairs have a clear correlation peak",
                                   segment_frames=np.zeros(1), x_nm=np.zeros(40), y_nm=np.zeros(40))
    drift_ok = SimpleNamespace(reason=None, segment_frames=np.arange(5) * 8.0, x_nm=np.linspace(0, 12, 40),
                               y_nm=np.zeros(40))
    note = core.postprocess_note(result, _post(frc_reason, drift_reason))
    assert "FRC not measured: too few localizations (282 < 1000)." in note
    assert "Drift not measured: only 0 of 10 segment pairs" in note
    assert core.frc_not_measured(result, _post(frc_old, drift_ok)).startswith("the FRC curve never falls below")
    check_ok = SimpleNamespace(reason=None, line=lambda: "sigma self-check (...): coverage 0.671 (ideal 0.683)")
    note = core.postprocess_note(result, _post(frc_ok, drift_ok, check_ok))
    assert "FRC resolution **42.0 nm**" in note and "range x 12.0 nm" in note and "not measured" not in note
    assert note.endswith("Sigma self-check (...): coverage 0.671 (ideal 0.683).")
    check_none = SimpleNamespace(reason="no blink is seen in two consecutive frames", line=None)
    assert core.postprocess_note(result, _post(frc_ok, drift_ok, check_none)).endswith(
        "Sigma self-check not measured: no blink is seen in two consecutive frames.")
    few = SimpleNamespace(localizations=pd.DataFrame({"x_nm": np.zeros(3)}), ground_truth=None, n_frames=5)
    assert core.postprocess_note(few, None) == ("FRC not measured: too few localizations (3 < 10). Drift not "
                                               "measured: needs at least 20 frames (this stack has 5). Sigma "
                                               "self-check not measured: too few localizations (3 < 10).")


def _blinking_run(n_frames: int, seed: int = 0):
    """A RunResult-like upload (no ground truth) of molecules that stay on for every frame, each frame's
    positions off the truth by their own stated sigma (honest, frame-independent errors)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    n, sigma = 40, 10.0
    true = rng.uniform(1000, 15000, (n, 2))
    rows = [pd.DataFrame({"frame": f, "x_nm": true[:, 0] + rng.normal(0, sigma, n),
                          "y_nm": true[:, 1] + rng.normal(0, sigma, n), "sigma_x_nm": sigma, "sigma_y_nm": sigma,
                          "photons": rng.uniform(1000, 3000, n), "probability": 1.0}) for f in range(n_frames)]
    return SimpleNamespace(localizations=pd.concat(rows, ignore_index=True), ground_truth=None, n_frames=n_frames,
                           seed=0)


def test_the_note_carries_the_sigma_self_check_of_an_upload():
    """Issue 33: an uploaded stack gets the sigma self-check (consecutive frames of one blink): its coverage,
    robust std and what it cannot see in the note; a one-frame stack says why it was not measured."""
    import re

    from smlm_diffusers.app import core

    run = _blinking_run(6)
    post = core.stack_postprocess(run)
    assert post.selfcheck is not None and post.selfcheck.pairs == 40 * 5
    note = core.postprocess_note(run, post)
    assert core.selfcheck_not_measured(run, post) is None and "not measured: simulations" not in note
    coverage = float(re.search(r"Sigma self-check .*coverage (\d\.\d+) \(ideal 0\.683\)", note).group(1))
    assert coverage == pytest.approx(0.683, abs=0.1)  # honest sigmas: about the ideal
    assert re.search(r"robust std\(z\) \d\.\d\d", note) and "blind to errors a blink's frames share" in note
    one = _blinking_run(1)
    post1 = core.stack_postprocess(one)
    note1 = core.postprocess_note(one, post1)
    assert "Sigma self-check not measured: needs a blink seen in consecutive frames (this stack has 1 frame)." in note1
    assert "coverage" not in note1


def write_stack(path, n=2, size=16, seed=0, still=False):
    """A simulated TIFF stack; ``still``: the same molecules in every frame (one long blink each), fresh noise."""
    if still:
        one, _ = sd.simulate(n_frames=1, shape=(size, size), density=2.0, seed=seed)
        mean = (one[0] - 100.0).clip(0)  # the camera's offset off: photons' worth of ADU above it
        frames = np.random.default_rng(seed).poisson(np.broadcast_to(mean, (n, size, size))) + 100.0
    else:
        frames, _ = sd.simulate(n_frames=n, shape=(size, size), density=2.0, seed=seed)
    tifffile.imwrite(path, np.round(frames).clip(0, 65535).astype(np.uint16), photometric="minisblack")
    return frames


def test_upload_path(client, tmp_path):
    path = tmp_path / "movie.tif"
    write_stack(path, n=3, still=True)
    out = unpack(client.predict(handle_file(str(path)), 100.0, 1.0, 108.0, 1.6, *SAMPLING, ZOOM, api_name="/upload"))
    assert "3 uploaded (movie.tif) frames of 16 × 16 px" in out["status"] and "Camera check" not in out["status"]
    # the sigma self-check of the upload: a coverage in the note, its picture beside the drift/FRC one
    assert re.search(r"Sigma self-check \(consecutive frames of \d+ blink pairs\): coverage \d\.\d{3}",
                     out["drift_note"]), out["drift_note"]
    assert "blind to errors a blink's frames share" in out["drift_note"]
    assert Path(out["selfcheck"]).name == "movie_selfcheck.png" and png(out["selfcheck"]).std() > 0
    assert "No ground truth" in out["metrics"]
    assert len(out["gallery"]) == SAMPLING[0]
    assert all(Path(f).name.startswith("movie_") for f in out["files"])  # downloads carry the input's name
    mean = tifffile.imread(next(f for f in out["files"] if f.endswith("kde_mean.tif")))
    assert mean.shape == (3, 64, 64)
    # pixel size from the form: coordinates scale with it, and so does the TIFFs' calibration
    out2 = unpack(client.predict(handle_file(str(path)), 100.0, 1.0, 216.0, 1.6, 0, 3, 0, ZOOM, api_name="/upload"))
    assert "216 nm pixels" in out2["status"]
    # the header names the camera the results used, not the model's default
    assert "camera 216 nm pixels" in out2["model_info"] and "the model's: 108 nm pixels" in out2["model_info"]
    assert "KDE grid 54 nm" in out2["model_info"]
    assert "camera 108 nm pixels" in out["model_info"] and "the model's" not in out["model_info"]
    assert tiff_pixel_size_nm(next(f for f in out2["files"] if f.endswith("kde_mean.tif"))) == pytest.approx(54.0)


def test_upload_camera_check(client, tmp_path):
    """Camera settings that cannot fit the frames are refused, naming the field and the value the data suggest."""
    path = tmp_path / "cam.tif"
    write_stack(path, n=2, size=32)
    for offset, gain, field in ((1e9, 1.0, "'Camera offset (ADU)'"), (-1e6, 1.0, "'Camera offset (ADU)'"),
                                (100.0, 1e9, "'Gain (ADU / e⁻)'"), (100.0, 1e-9, "'Gain (ADU / e⁻)'")):
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(path)), offset, gain, 108.0, 1.6, 0, 3, 0, ZOOM, api_name="/upload")
        assert f"suggest {field}" in str(err.value), str(err.value)
    with pytest.raises(AppError, match="'Read noise \\(e⁻ rms\\)' must be between 0 and 100"):
        client.predict(handle_file(str(path)), 100.0, 1.0, 108.0, -1.0, 0, 3, 0, ZOOM, api_name="/upload")
    # a doubtful camera runs, with a warning in the status
    out = unpack(client.predict(handle_file(str(path)), 100.0, 2.2, 108.0, 1.6, 0, 3, 0, ZOOM, api_name="/upload"))
    assert "Camera check" in out["status"] and "'Gain (ADU / e⁻)'" in out["status"]


def bad_files(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    four_d = tmp_path / "4d.tif"
    tifffile.imwrite(four_d, np.zeros((2, 3, 16, 16), np.uint16), metadata={"axes": "TZYX"}, imagej=True)
    nan = tmp_path / "nan.tif"
    a = np.full((2, 16, 16), 100.0, np.float32)
    a[1, 3, 4] = np.nan
    tifffile.imwrite(nan, a)
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.zeros((1, au.MAX_FRAME_SIZE + 8, 16), np.uint16))
    long = tmp_path / "long.tif"
    tifffile.imwrite(long, np.zeros((au.MAX_FRAMES + 5, 8, 8), np.uint16))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    fake = tmp_path / "fake.tif"
    fake.write_text("this is not an image")
    return {
        rgb: "colour",
        four_d: "4D",
        nan: "NaN",
        big: "too large",
        long: f"more than {au.MAX_FRAMES} frames",
        empty: "empty",
        fake: "not a readable TIFF",
    }


@pytest.mark.slow
def test_bad_uploads_give_messages_and_server_keeps_serving(client, tmp_path):
    for path, expected in bad_files(tmp_path).items():
        with pytest.raises(AppError) as err:
            client.predict(handle_file(str(path)), 100.0, 1.0, 108.0, 1.6, *SAMPLING, ZOOM, api_name="/upload")
        msg = str(err.value)
        assert expected in msg, (path.name, msg)
        assert "Traceback" not in msg
    # wrong file type (by name) is refused, by Gradio's file_types check or by the app
    png_file = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png_file)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(png_file)), 100.0, 1.0, 108.0, 1.6, *SAMPLING, ZOOM, api_name="/upload")
    assert "TIFF" in str(err.value) or "file type" in str(err.value).lower()
    # bad camera fields
    good = tmp_path / "good.tif"
    write_stack(good, n=1)
    with pytest.raises(AppError, match="'Gain \\(ADU / e⁻\\)' must be > 0"):
        client.predict(handle_file(str(good)), 100.0, 0.0, 108.0, 1.6, *SAMPLING, ZOOM, api_name="/upload")
    # ... and the next request still works
    out = unpack(client.predict(handle_file(str(good)), 100.0, 1.0, 108.0, 1.6, *SAMPLING, ZOOM, api_name="/upload"))
    assert out["status"].startswith("Done:")


@pytest.mark.slow
def test_two_concurrent_requests_both_succeed(url):
    clients = [Client(url, verbose=False) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(c.predict, *SIM[:7], seed, *SAMPLING, ZOOM, api_name="/simulate")
                   for c, seed in zip(clients, (5, 6))]
        results = [unpack(f.result(timeout=120)) for f in futures]
    for r in results:
        assert r["status"].startswith("Done:") and len(r["gallery"]) == SAMPLING[0]
    # different seeds, different frames
    assert not np.array_equal(png(results[0]["raw"]), png(results[1]["raw"]))


def test_crlb_sweep(client):
    img, table = client.predict(20, 1.0, False, 2, 3, 0, api_name="/crlb_sweep")
    assert png(img).std() > 0
    df = pd.DataFrame(table["data"], columns=table["headers"])
    assert list(df["photons"]) == list(au.SWEEP_PHOTONS)
    # the bound falls with more photons
    assert df["√CRLB [nm]"].is_monotonic_decreasing


def test_missing_default_model_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv(au.MODEL_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="Model folder not found.*SMLM_DIFFUSERS_MODEL"):
        au.load_pipeline(default_root=tmp_path)
    (tmp_path / "pretrained" / au.DEFAULT_MODEL / "kde_net").mkdir(parents=True)  # half-written: DeepSTORM only
    with pytest.raises(FileNotFoundError, match="incomplete.*SMLM_DIFFUSERS_MODEL"):
        au.load_pipeline(default_root=tmp_path)


def test_model_from_environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(au.MODEL_ENV, str(tiny_model_dir))
    location, is_default = au.model_location()
    assert location == str(tiny_model_dir) and not is_default
    pipe = au.load_pipeline()
    assert pipe.config.tile_size == 32  # the folder's own setting


def test_limits_give_messages(client):
    """Requests over the configured limits fail with a message, before any model work."""
    with pytest.raises(AppError, match="more work than this CPU demo allows"):
        client.predict(2000, 20, 1.0, 1.0, 64, au.MAX_FRAMES, "Random (uniform)", 0, au.MAX_SAMPLES, 50, 0, ZOOM,
                       api_name="/simulate")
    with pytest.raises(AppError, match="exceed the demo's limit"):
        client.predict(2000, 20, 1.0, 1.0, au.MAX_FRAME_SIZE, au.MAX_FRAMES, "Random (uniform)", 0, 0, 10, 0, ZOOM,
                       api_name="/simulate")
    out = unpack(client.predict(*SIM, *SAMPLING, ZOOM, api_name="/simulate"))
    assert out["status"].startswith("Done:")


@pytest.mark.parametrize("position, value, message", [
    (4, 1000, "'Frame size (px)' must be between 16 and 256, got 1000"),
    (0, -5, "'Photons per emitter' must be between 100 and 10000, got -5"),
    (8, 99, f"'DDPM samples per frame' must be between 0 and {au.MAX_SAMPLES}, got 99"),
    (7, -1, "'Simulation seed' must be a whole number >= 0, got -1"),
])
def test_range_errors_name_the_field(client, capfd, position, value, message):
    """Our own range check, before Gradio's generic one, and no traceback on the server."""
    args = [*SIM, *SAMPLING, ZOOM]
    args[position] = value
    capfd.readouterr()
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name="/simulate")
    assert message in str(err.value)
    assert "Traceback" not in "".join(capfd.readouterr())


def test_default_ddpm_settings_take_an_ordinary_upload():
    """5 frames of 64 x 64 at the app's default samples and steps fit the CPU demo's budget (shipped model)."""
    from smlm_diffusers.defaults import default_model_path

    if default_model_path() is None:
        pytest.skip("the shipped pipeline folder is not in this checkout")
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(default_model_path())
    assert au.DEFAULT_STEPS is None and au.model_steps(pipe) == pipe.config.default_inference_steps
    assert au.check_work(pipe, (5, 64, 64), au.DEFAULT_SAMPLES, au.model_steps(pipe)) <= au.MAX_DDPM_MPX_STEPS


def test_progress_counts_frames_and_steps(tiny_model_dir):
    pipe = au.load_pipeline(tiny_model_dir)
    frames, gt = au.simulate_frames(au.SimulationSettings(*SIM[:5], 3, SIM[6], 0), au.pipeline_camera(pipe))
    seen = []
    result = au.run_pipeline(pipe, frames, 2, 3, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert seen[-1][1] == "DDPM: 3 of 3 frames done"
    assert any(m.startswith("DDPM: 0 of 3 frames done · DDPM step 3 of 3") for _, m in seen), seen
    assert result.sample_localizations is not None and set(result.sample_localizations["sample"]) <= {0, 1}


def test_app_utils_is_a_deprecated_alias_of_the_app_package():
    sys.modules.pop("smlm_diffusers.app_utils", None)
    with pytest.warns(DeprecationWarning, match="smlm_diffusers.app"):
        from smlm_diffusers import app_utils
    assert app_utils.run_pipeline is au.run_pipeline and app_utils.InputError is au.InputError
    assert set(au.__all__) <= set(dir(app_utils))


@pytest.mark.parametrize("layout", ["kde", "camera"])
def test_tile_count_is_what_the_pipeline_samples(layout):
    """The app's work measure counts the tiles the pipeline really runs, on the UNet's own grid
    (KDE pixels for v1, camera pixels for v2)."""
    from tiny_models import tiny_pipeline

    pipe = tiny_pipeline(layout=layout)
    seen = []
    denoise = pipe.denoise
    pipe.denoise = lambda tiles, *a, **k: seen.append(tiles.shape) or denoise(tiles, *a, **k)
    frames, _ = sd.simulate(n_frames=1, shape=(20, 28), seed=0)
    pipe(frames, num_samples=2, num_inference_steps=1, generator=torch.Generator().manual_seed(0),
         sample_everywhere=True)  # as the app calls it: the variance map covers the frame
    assert sum(s[0] for s in seen) == 2 * au.tiles_per_frame(pipe, (20, 28)) > 2
    u = 4 if layout == "camera" else 1  # a camera-layout tile pixel holds 4 x 4 KDE pixels
    assert au.tile_pixels_per_frame(pipe, (20, 28)) == au.tiles_per_frame(pipe, (20, 28)) * seen[0][-2] * seen[0][-1] * u * u
