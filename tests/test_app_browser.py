"""End-to-end: the app in a real, headless Chromium driven by Playwright (tiny random pipeline).

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package; never ``playwright install`` (the system browser is used). Skips otherwise.
"""

import shutil
import socket
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOT_COPY = Path("/tmp/app_screenshot.png")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed "
                                                             "(pip install playwright; no browser download needed)")
pytest.importorskip("gradio")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py lives at the repository root
import app  # noqa: E402
from smlm_diffusers import app_utils as au  # noqa: E402

IMAGE_RENDERED = "(sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }"
# all <img> of the gallery loaded and non-empty
GALLERY_RENDERED = """(n) => {
  const imgs = [...document.querySelectorAll('#samples-gallery img')];
  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulation_in_browser(tmp_path, tiny_model_dir):
    pipe = au.load_pipeline(tiny_model_dir)
    demo = app.build_demo(pipe, model_name="tiny random test pipeline")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs())
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=30_000)
                page.get_by_role("button", name="Simulate and run").click(timeout=20_000)
                page.wait_for_function(GALLERY_RENDERED, arg=au.DEFAULT_SAMPLES, timeout=45_000)
                # the gallery's thumbnails and the mean/variance images decoded as real images
                sizes = page.eval_on_selector_all("#samples-gallery img", "imgs => imgs.map(i => i.naturalWidth)")
                assert len(sizes) >= au.DEFAULT_SAMPLES and min(sizes) > 0
                for elem in ("#mean img", "#variance img", "#raw-frame img"):
                    page.wait_for_function(IMAGE_RENDERED, arg=elem, timeout=15_000)
                page.get_by_text("simulated frame").first.wait_for(timeout=10_000)
                assert "Uncertainty-aware SMLM" in page.content()
                shot = tmp_path / "app.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                shutil.copy(shot, SCREENSHOT_COPY)
                assert not errors, errors
            finally:
                browser.close()
    finally:
        demo.close()
