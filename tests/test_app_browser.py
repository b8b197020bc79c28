"""End-to-end: the app in a real, headless Chromium driven by Playwright.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package; never ``playwright install`` (the system browser is used). Without them the test
skips, except under ``CI=true`` (``.ci/run``), where it fails: CI must run it.

It runs a simulation with the shipped model (the tiny random one when the shipped folder is
missing), in DDPM mode with few samples and steps and then DeepSTORM-only, and saves
screenshots of the zoomed uncertainty view and the whole page into ``$ARTIFACTS`` (default
``tests/artifacts/``, git-ignored) for a reviewer to open. At 1440 px it checks that nothing is cut off
(slider ends, the molecules table's headers, download names on one line), that one 150 nm outlier does
not set the zoom's sigma colour scale and that the legend keys drawn ellipses, that a one-frame run says
why there is no FRC instead of drawing empty axes, that an upload's note carries its sigma self-check (or why
there is none), and that the header names the camera an upload used.
"""

import io
import json
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np

import pytest

pytestmark = pytest.mark.slow  # a real browser on the running app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

try:
    from playwright import sync_api
except ImportError:  # reported by the test itself: a skip here, a failure in CI
    sync_api = None

IMAGE_RENDERED = "(sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }"
IMAGE_CHANGED = """([sel, old]) => {
  const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0 && i.src !== old;
}"""
VISIBLE_PROGRESS = """() => [...document.querySelectorAll('.progress-text')]
  .filter(e => e.offsetParent !== null).map(e => e.innerText)"""
PROGRESS_OR_DONE = """() => [...document.querySelectorAll('.progress-text')].some(e => e.offsetParent !== null
  && e.innerText.includes('frame')) || document.querySelectorAll('#samples-gallery img').length >= 2"""
# elements whose content is cut off: a slider's row wider than its box, or its maximum past the block's edge
SLIDERS_CLIPPED = """() => [...document.querySelectorAll('.slider_input_container')]
  .filter(c => c.offsetParent !== null).filter(c => { const m = c.querySelector('[data-testid=max-value]'), b = c.closest('.block').getBoundingClientRect();
    return c.scrollWidth > c.clientWidth + 1 || (m && m.getBoundingClientRect().right > b.right + 0.5); })
  .map(c => c.closest('.block').innerText.split('\\n')[0])"""
# table headers past the panel's right edge, or wider than their cell (a word that does not fit)
HEADERS_CLIPPED = """() => { const blk = document.querySelector('#localizations');
  const right = blk.getBoundingClientRect().right;
  return [...blk.querySelectorAll('th')].filter(th => { const s = th.querySelector('span.header') || th;
    return th.getBoundingClientRect().right > right + 0.5 || s.scrollWidth > s.clientWidth + 1; })
  .map(th => th.innerText); }"""
# download names cut off or wrapped (over one line: a name has no spaces, so any wrap is mid-word)
NAMES_BROKEN = """() => [...document.querySelectorAll('#downloads td.filename')].filter(td => {
  const stem = td.querySelector('.stem'), st = getComputedStyle(stem);
  const line = parseFloat(st.lineHeight) || 1.6 * parseFloat(st.fontSize);
  return td.scrollWidth > td.clientWidth + 1 || stem.getBoundingClientRect().height > 1.5 * line; })
  .map(td => td.getAttribute('aria-label'))"""
GALLERY_RENDERED = """(n) => {
  const imgs = [...document.querySelectorAll('#samples-gallery img')];
  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def _require_browser():
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium)")
    if sync_api is None:
        missing.append("the playwright Python package is not installed (pip install playwright; no browser download)")
    if missing:
        (pytest.fail if IN_CI else pytest.skip)("; ".join(missing))
    pytest.importorskip("gradio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pipeline(tiny_model_dir):
    from smlm_diffusers import app as au
    from smlm_diffusers.defaults import default_model_path

    shipped = default_model_path()
    return au.load_pipeline(shipped or tiny_model_dir), "shipped" if shipped else "tiny random"


def _set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _page_point(page, selector: str, xy_um, pixel_size_nm: float, size_px: int) -> tuple[float, float]:
    """Where on the page the raw-frame picture (object-fit: contain) shows the sample point (x, y) in µm."""
    from smlm_diffusers.app import views
    from smlm_diffusers.visualization import image_axes_px

    box = page.locator(selector).bounding_box()
    nat_w, nat_h = page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]")
    scale = min(box["width"] / nat_w, box["height"] / nat_h)
    off_x, off_y = (box["width"] - nat_w * scale) / 2, (box["height"] - nat_h * scale) / 2
    left, top, mag = image_axes_px((size_px, size_px), views.RAW_TARGET_PX, title=True, markers=True)
    col, row = (v * 1000 / pixel_size_nm for v in xy_um)
    return box["x"] + off_x + (left + col * mag) * scale, box["y"] + off_y + (top + row * mag) * scale


def _zoom_info(page) -> tuple[dict, float]:
    """What the zoom picture on the page plots (its PNG's text chunk) and the browser's scale of it."""
    from PIL import Image

    from smlm_diffusers.app.handlers import ZOOM_INFO_KEY

    src = page.eval_on_selector("#zoom img", "i => i.src")
    with Image.open(io.BytesIO(page.request.get(src).body())) as im:
        info = json.loads(im.text[ZOOM_INFO_KEY])
    box = page.locator("#zoom img").bounding_box()
    nat_w = page.eval_on_selector("#zoom img", "i => i.naturalWidth")
    return info, box["width"] / nat_w


def _assert_cleared_after_failure(page, message: str) -> None:
    """The error's message is shown; the status, the downloads and the results of the last run are gone."""
    page.get_by_text(message).first.wait_for(timeout=60_000)
    page.get_by_text("The last run failed").first.wait_for(timeout=30_000)
    assert "Done" not in page.locator("#status").inner_text()
    assert page.locator("#downloads a").count() == 0
    page.locator("#results").wait_for(state="hidden", timeout=10_000)


def _upload(page, selector: str, path: Path) -> None:
    """Choose ``path`` through the file dialog that a click on ``selector`` opens, as a user does."""
    with page.expect_file_chooser(timeout=30_000) as chooser:
        page.locator(selector).first.click()
    chooser.value.set_files(str(path))
    page.locator("#upload-file").get_by_text(path.stem).first.wait_for(timeout=30_000)


OUTLIER_SIGMA_NM = 400.0  # above any real sigma of the run (the unresolved-neighbour term reaches ~170 nm)


def _with_outlier(run_pipeline, window_px: int):
    """``core.run_pipeline`` whose first frame has one molecule of :data:`OUTLIER_SIGMA_NM` in the window the
    zoom opens on (positions unchanged, so it opens on the same window)."""
    from smlm_diffusers.app import views

    def run(*args, **kwargs):
        result = run_pipeline(*args, **kwargs)
        locs, a = result.localizations, result.camera.pixel_size_nm
        if result.ground_truth is not None and len(locs) and result.has_samples:
            r0, c0, r1, c1 = views.zoom_window(result, 0, window_px)
            inside = ((locs["frame"] == 0) & locs["x_nm"].between(c0 * a, c1 * a)
                      & locs["y_nm"].between(r0 * a, r1 * a))
            if inside.any():
                i = locs.index[inside][0]
                locs.loc[i, ["sigma_x_nm", "sigma_y_nm"]] = OUTLIER_SIGMA_NM
        return result

    return run


def _assert_not_cut_off(page) -> None:
    assert not page.evaluate(SLIDERS_CLIPPED), page.evaluate(SLIDERS_CLIPPED)


def test_simulation_in_browser(tiny_model_dir, tmp_path, monkeypatch):
    _require_browser()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py lives at the repository root
    import app

    from smlm_diffusers import app as au
    from smlm_diffusers.app import core

    monkeypatch.setattr(core, "run_pipeline", _with_outlier(core.run_pipeline, window_px=8))
    pipe, which = _pipeline(tiny_model_dir)
    demo = app.build_demo(pipe, model_name=f"{which} pipeline (browser test)")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=30_000)
                page.get_by_role("button", name="Simulate and run").wait_for(timeout=20_000)
                a = pipe.kde_net.camera.pixel_size_nm
                assert f"camera {a:g} nm pixels" in page.locator("#model-info").inner_text()
                _assert_not_cut_off(page)  # the sliders' maximum labels (Frame size, Frames) were cut off
                # a crowded frame, two samples of three steps (the DDPM runs on this CPU)
                _set_slider(page, "density", 4)
                _set_slider(page, "samples", 2)
                _set_slider(page, "steps", 3)
                page.get_by_role("button", name="Simulate and run").click()
                # one progress display, in frames (and diffusion steps), not one per panel
                page.wait_for_function(PROGRESS_OR_DONE, timeout=240_000)
                shown = page.evaluate(VISIBLE_PROGRESS)
                if shown:  # the run can end before the first poll on a fast machine
                    assert len(shown) == 1, shown  # "DDPM: 0 of 1 frame done · DDPM step 2 of 3" (or the time)
                page.wait_for_function(GALLERY_RENDERED, arg=2, timeout=240_000)
                for elem in ("#zoom img", "#mean img", "#variance img", "#raw-frame img"):
                    page.wait_for_function(IMAGE_RENDERED, arg=elem, timeout=30_000)
                page.get_by_text("simulated frame").first.wait_for(timeout=10_000)
                assert "made by DDPM, 2 samples x 3 steps" in page.locator("#localizations").inner_text()
                assert "Uncertainty-aware SMLM" in page.content()
                page.locator("#zoom").screenshot(path=str(ARTIFACTS / "zoom_ddpm.png"))
                page.screenshot(path=str(ARTIFACTS / "app_ddpm.png"), full_page=True)

                # the crowded window frames its molecules whole, and their ellipses can be seen
                info, scale = _zoom_info(page)
                x0, y0, x1, y1 = info["window_nm"]
                mol = np.asarray(info["molecules_nm"])
                assert len(mol) >= 2, info
                gap = np.minimum.reduce([mol[:, 0] - x0, x1 - mol[:, 0], mol[:, 1] - y0, y1 - mol[:, 1]])
                assert gap.min() >= 0.5 * pipe.kde_net.camera.pixel_size_nm, info  # half a pixel off the border
                assert info["min_ellipse_px"] * scale >= 4, info  # to scale or magnified (factor in the title)
                # one 400 nm outlier: it saturates the sigma colour scale instead of setting it, and the legend's
                # keys are the colour and style of drawn ellipses
                sig = np.array([e["sigma_nm"] for e in info["ellipses"]])
                assert sig.max() == pytest.approx(OUTLIER_SIGMA_NM), info
                top = info["sigma_colour_range_nm"][1]
                assert top < 0.5 * OUTLIER_SIGMA_NM, info  # it was the outlier's 400 nm
                assert info["ellipses"][int(np.argmax(sig))]["colour"] == "#f0f921"  # plasma's top colour
                drawn = {(e["colour"], e["linestyle"]) for e in info["ellipses"]}
                assert info["legend"] and all((k["colour"], k["linestyle"]) in drawn for k in info["legend"]), info

                # nothing cut off at 1440 px: slider ends, the table's headers, download names (one line each)
                _assert_not_cut_off(page)
                assert not page.evaluate(HEADERS_CLIPPED), page.evaluate(HEADERS_CLIPPED)
                assert page.locator("#downloads td.filename").count() >= 7
                assert not page.evaluate(NAMES_BROKEN), page.evaluate(NAMES_BROKEN)
                # one frame: no FRC to measure, so no drift/FRC picture (no empty axes) and the reason in words
                note = page.locator("#drift-note").inner_text()
                assert "FRC not measured: " in note and "FRC resolution" not in note, note
                assert not page.locator("#drift").is_visible()
                # nor a sigma self-check: a simulation's molecules are new in every frame
                assert "Sigma self-check not measured: simulations" in note, note
                assert not page.locator("#selfcheck").is_visible()

                # a click on the raw frame moves the zoom there: to the quadrant opposite the crowded region
                old = page.eval_on_selector("#zoom img", "i => i.src")
                x_um = float(page.locator("#zoom-x input").input_value())
                y_um = float(page.locator("#zoom-y input").input_value())
                size_px = au.DEFAULT_FRAME_SIZE
                target = [(0.2 if v > size_px * a / 2000 else 0.8) * size_px * a / 1000 for v in (x_um, y_um)]
                page.locator("#raw-frame img").scroll_into_view_if_needed()
                page.mouse.click(*_page_point(page, "#raw-frame img", target, a, size_px))
                page.wait_for_function(IMAGE_CHANGED, arg=["#zoom img", old], timeout=30_000)
                new = [float(page.locator(f"#zoom-{axis} input").input_value()) for axis in "xy"]
                assert all(abs(n - t) < 0.5 for n, t in zip(new, target)), (new, target)
                page.locator("#zoom").screenshot(path=str(ARTIFACTS / "zoom_clicked.png"))

                # DeepSTORM mode (with the arbitration where the folder has it, the pipeline's default): no gallery,
                # mean or variance; the zoom shows the fits' ellipses; the table's label names the mode
                old = page.eval_on_selector("#zoom img", "i => i.src")
                _set_slider(page, "samples", 0)
                page.get_by_role("button", name="Simulate and run").click()
                page.wait_for_function(IMAGE_CHANGED, arg=["#zoom img", old], timeout=120_000)
                mode = "DeepSTORM + arbitration" if pipe.call_mode(0).arbitrate else "DeepSTORM only"
                page.get_by_text(mode).first.wait_for(timeout=30_000)
                assert f"made by {mode}" in page.locator("#localizations").inner_text()
                assert not page.locator("#samples-gallery").is_visible()
                assert not page.locator("#variance").is_visible()
                page.locator("#zoom").screenshot(path=str(ARTIFACTS / "zoom_deepstorm.png"))
                page.screenshot(path=str(ARTIFACTS / "app_deepstorm.png"), full_page=True)
                # an error after a successful run clears the page: no old status, downloads or results
                assert page.locator("#downloads a").count() > 0
                page.locator("#seed input").fill("-1")
                page.get_by_role("button", name="Simulate and run").click()
                _assert_cleared_after_failure(page, "'Simulation seed' must be a whole number")
                page.locator("#seed input").fill("0")

                # an upload, then another file over it (no clear button), which fails: its message, nothing old
                import tifffile

                import smlm_diffusers as sd

                frames, _ = sd.simulate(n_frames=40, shape=(32, 32), density=2.0, seed=4, structure="filaments")
                good, fake = tmp_path / "stack40.tif", tmp_path / "fake.tif"
                tifffile.imwrite(good, np.round(frames).clip(0, 65535).astype(np.uint16))
                fake.write_text("this is not an image")
                page.get_by_role("tab", name="Upload TIFF").click()
                _upload(page, "#upload-file", good)
                page.locator("#pixel-size input").fill("100")  # another camera than the model's
                page.get_by_role("button", name="Run on upload").click()
                page.get_by_text("uploaded (stack40.tif)").first.wait_for(timeout=120_000)
                header = page.locator("#model-info").inner_text()
                assert "camera 100 nm pixels" in header and "KDE grid 25 nm" in header, header
                page.wait_for_function(IMAGE_RENDERED, arg="#drift img", timeout=30_000)  # drift trace (and FRC)
                note = page.locator("#drift-note").inner_text()
                assert "Drift (RCC" in note, note
                # a part not measured says why, and is not drawn: one panel (6 x 3.2 in) for the drift alone
                if "FRC not measured: " in note:
                    w, h = page.eval_on_selector("#drift img", "i => [i.naturalWidth, i.naturalHeight]")
                    assert w < 2.5 * h, (w, h, note)
                else:
                    assert "FRC resolution" in note, note
                assert page.locator("#downloads").get_by_text("stack40_drift").count() == 1
                page.locator("#drift").screenshot(path=str(ARTIFACTS / "drift_upload.png"))
                # the sigma self-check of the upload: its coverage and what it cannot see, its picture beside the
                # drift's; or, where no blink was seen in two frames, why not (and no picture)
                if "Sigma self-check not measured: " in note:
                    assert not page.locator("#selfcheck").is_visible(), note
                else:
                    assert re.search(r"Sigma self-check \(consecutive frames of \d+ blink pairs\): coverage "
                                     r"\d\.\d{3} \(ideal 0\.683\), robust std\(z\) \d", note), note
                    assert "blind to errors a blink's frames share" in note, note
                    page.wait_for_function(IMAGE_RENDERED, arg="#selfcheck img", timeout=30_000)
                    page.locator("#selfcheck").screenshot(path=str(ARTIFACTS / "selfcheck_upload.png"))
                page.screenshot(path=str(ARTIFACTS / "app_upload.png"), full_page=True)
                _upload(page, "#replace-file", fake)
                page.get_by_role("button", name="Run on upload").click()
                _assert_cleared_after_failure(page, "'fake.tif' is not a readable TIFF file: it has no TIFF header")
                # nothing on the page is from the upload any more: the header is back to the model's camera
                assert f"camera {a:g} nm pixels" in page.locator("#model-info").inner_text()
                page.screenshot(path=str(ARTIFACTS / "app_failed.png"), full_page=True)
                for name in ("zoom_ddpm.png", "zoom_clicked.png", "zoom_deepstorm.png", "drift_upload.png"):
                    assert (ARTIFACTS / name).stat().st_size > 10_000
                assert not errors, errors
            finally:
                browser.close()
    finally:
        demo.close()
