"""Web demo of smlm-diffusers (also the Hugging Face Space): ``python app.py``.

Simulate or upload SMLM frames; see the DeepSTORM KDE, conditional-DDPM posterior samples,
their mean and variance, per-molecule localizations with uncertainty, a zoomed view of the
uncertainty where the molecules are crowded, and, for simulated data, Jaccard/RMSE and RMSE
against the Cramer-Rao bound. The pipeline is loaded once at start from
``$SMLM_DIFFUSERS_MODEL`` (a folder or Hub repo id), default the shipped
``pretrained/smlm-ddpm-2d`` next to the package (whatever the working directory). The logic
lives in :mod:`smlm_diffusers.app`; this file only builds the page.
"""

from __future__ import annotations

import logging
import math

import gradio as gr

from smlm_diffusers import app as au
from smlm_diffusers.app import views
from smlm_diffusers.app.handlers import FRAME_OUTPUTS, Handlers, cleared

TITLE = "Uncertainty-aware SMLM with a conditional diffusion model"
DESCRIPTION = """
Single-molecule localization microscopy (SMLM) turns blinking-fluorophore camera frames into molecule
coordinates. Here a **DeepSTORM** CNN maps each frame to a kernel density estimate (KDE) of the emitters on a
4x finer grid, and a **conditional DDPM** draws posterior samples of that KDE given the DeepSTORM estimate.
The **mean** of the samples is the super-resolved frame, their per-pixel **variance** shows where the model is
unsure, and localizations found in every sample are linked into molecules with a position uncertainty (sigma)
and a detection probability. Simulate frames (with ground truth, Jaccard, RMSE and the Cramer-Rao bound) or
upload your own TIFF stack.
"""

CSS = """
.gradio-container {max-width: 1500px !important; margin: auto;}
#title h1 {margin-bottom: 0.1em;}
#model-info {font-size: 0.85em; opacity: 0.8;}
#status {min-height: 2.5em;}
#run-progress {min-height: 3.2em;}
/* the sample gallery as tall as its rows of thumbnails (no fixed-height blank area) */
#samples-gallery .grid-wrap.fixed-height {min-height: 0 !important; height: auto !important;}
/* download names in full and unbroken (Gradio cuts the stem with an ellipsis, and an 8rem size column left
   the name 120 px, so names wrapped mid-word): each name on its own line, its size and remove button below */
#downloads tr.file {flex-wrap: wrap; align-items: center;}
#downloads td.filename {flex: 1 0 100%; overflow-x: auto; overflow-y: hidden; font-size: var(--text-sm);}
#downloads td.filename .stem, #downloads td.filename .ext {white-space: nowrap !important; overflow: visible !important;
  text-overflow: clip !important;}
#downloads td.download {margin-left: auto; min-width: 0; width: auto;}
/* slider ends in full: Gradio's range bar keeps 7rem even in a narrow column and pushed the maximum out */
.gradio-container input[type=range] {min-width: 0 !important;}
.gradio-container .min_value, .gradio-container .max_value {flex-shrink: 0;}
/* the molecules table's headers wrap between words only (widths: views.table_column_widths) */
#localizations span.wrap {word-break: normal !important; overflow-wrap: normal !important;}
"""

# images: lossless PNG; the figure carries its own title, so Gradio's label badge is hidden
IMG = dict(format="png", interactive=False, show_label=False, buttons=["download", "fullscreen"])
GALLERY_COLUMNS = 4
HEAVY = dict(concurrency_limit=1, concurrency_id="pipeline")  # one model run at a time
ZOOM_PX = (4, 32)  # range of the zoom window, camera pixels


def launch_kwargs() -> dict:
    """Look of the page (Gradio 6 takes theme and CSS at launch)."""
    return dict(theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"), css=CSS)


def checked(component, name: str | None = None):
    """``component`` (a Slider or Number with a range) whose out-of-range values are refused with a
    message naming the field and the range, and no server traceback (Gradio's own check says only
    "Value X is less than minimum value Y" and logs a traceback)."""
    label = name or component.label
    lo, hi, original = component.minimum, component.maximum, component.preprocess

    def preprocess(payload):
        try:
            value = float(payload)
        except (TypeError, ValueError):
            raise gr.Error(f"'{label}' must be a number, got {payload!r}.", print_exception=False) from None
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            allowed = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                       else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
            raise gr.Error(f"'{label}' must be {allowed}, got {payload}.", print_exception=False)
        return original(payload)

    component.preprocess = preprocess
    return component


# -- the page -------------------------------------------------------------------------------
def _input_column(cam, psf: float, s_max: int, pipe) -> dict:
    """The left column: simulate / upload tabs, sampling, progress, status, downloads (components by name)."""
    c = {}
    with gr.Tabs():
        with gr.Tab("Simulate", id="simulate"):
            c["photons"] = checked(gr.Slider(100, 10000, value=2000, step=100, label="Photons per emitter"))
            c["background"] = checked(gr.Slider(0, 200, value=20, step=1, label="Background (photons / pixel)"))
            c["density"] = checked(gr.Slider(0.1, 10.0, value=1.0, step=0.1, label="Density (emitters / µm²)",
                                             elem_id="density"))
            c["sigma"] = checked(gr.Slider(0.6, 2.0, value=psf, step=0.05, label="PSF sigma (camera pixels)",
                                           info=f"the model was trained at {psf:g} px"))
            with gr.Row():
                c["size"] = checked(gr.Slider(16, au.MAX_FRAME_SIZE, value=au.DEFAULT_FRAME_SIZE, step=16,
                                              label="Frame size (px)"))
                c["n_frames"] = checked(gr.Slider(1, au.MAX_FRAMES, value=au.DEFAULT_FRAMES, step=1, label="Frames"))
            c["structure"] = gr.Radio(list(au.STRUCTURES), value="Random (uniform)", label="Structure")
            c["seed"] = gr.Number(0, precision=0, label="Simulation seed", elem_id="seed")
            c["sim_btn"] = gr.Button("Simulate and run", variant="primary", elem_id="simulate-btn")
        with gr.Tab("Upload TIFF", id="upload"):
            c["upload"] = gr.File(label="TIFF stack (grey levels, ADU)", file_types=[".tif", ".tiff"],
                                  type="filepath", elem_id="upload-file")
            c["replace"] = gr.UploadButton("Choose another TIFF", file_types=[".tif", ".tiff"], type="filepath",
                                           size="sm", elem_id="replace-file")
            with gr.Row():
                c["offset"] = gr.Number(cam.offset, label="Camera offset (ADU)", elem_id="offset")
                c["gain"] = gr.Number(cam.gain, label="Gain (ADU / e⁻)")
            with gr.Row():
                c["pixel_size"] = gr.Number(cam.pixel_size_nm, label="Pixel size (nm)", elem_id="pixel-size")
                c["read_noise"] = gr.Number(cam.read_noise, label="Read noise (e⁻ rms)")
            with gr.Accordion("sCMOS per-pixel calibration (optional)", open=False):
                gr.Markdown("Float TIFFs with the frames' rows and columns, measured from dark and flat series: "
                            "each replaces the field of its kind, pixel by pixel (the paper's eq. 4).")
                with gr.Row():
                    c["offset_map"] = gr.File(label="Offset map (ADU)", file_types=[".tif", ".tiff"],
                                              type="filepath", elem_id="offset-map")
                    c["variance_map"] = gr.File(label="Read-noise variance map (ADU²)", file_types=[".tif", ".tiff"],
                                                type="filepath", elem_id="variance-map")
                    c["gain_map"] = gr.File(label="Gain map (ADU / e⁻)", file_types=[".tif", ".tiff"],
                                            type="filepath", elem_id="gain-map")
            gr.Markdown(f"Up to {au.MAX_FRAMES} frames of at most {au.MAX_FRAME_SIZE} × {au.MAX_FRAME_SIZE} px "
                        f"({au.MAX_TOTAL_PIXELS:,} pixels in all). Multi-frame TIFF (ImageJ/OME), 8/16/32-bit grey "
                        "levels. The frames are checked against the camera first: settings that cannot fit them "
                        "are refused with the value the data suggest.")
            c["up_btn"] = gr.Button("Run on upload", variant="primary", elem_id="upload-btn")
    with gr.Group():
        c["num_samples"] = checked(gr.Slider(0, au.MAX_SAMPLES, value=au.DEFAULT_SAMPLES, step=1,
                                             label="DDPM samples per frame",
                                             info=views.samples_info(pipe.call_mode(0).name), elem_id="samples"))
        c["steps"] = checked(gr.Slider(1, s_max, value=min(au.model_steps(pipe), s_max), step=1,
                                       label="Diffusion steps", elem_id="steps"))
        c["sample_seed"] = gr.Number(0, precision=0, label="Sampling seed")
    c["progress_box"] = gr.Markdown("", elem_id="run-progress")
    c["status"] = gr.Markdown("Choose inputs and press **Simulate and run**.", elem_id="status")
    c["downloads"] = gr.File(label="Downloads: localizations (ThunderSTORM CSV; Picasso HDF5 + YAML), "
                                   "mean / variance (float32 TIFF, calibrated in nm), drift (CSV)",
                             file_count="multiple", interactive=False, elem_id="downloads")
    return c


def _result_panels() -> dict:
    """The results of a run (hidden until the first one succeeds; hidden again when a run fails)."""
    c = {}
    with gr.Column(visible=False, elem_id="results") as c["results"]:
        c["frame"] = gr.Slider(0, 1, value=0, step=1, label=f"Frame to display ({views.FRAME_NOTE})",
                               visible=False, elem_id="frame-slider")
        with gr.Row():
            c["raw"] = gr.Image(label="Raw frame with localizations (click to zoom there)", elem_id="raw-frame", **IMG)
            c["deepstorm"] = gr.Image(label="DeepSTORM KDE (conditioning)", elem_id="deepstorm", **IMG)
        with gr.Group():
            c["zoom"] = gr.Image(label="Zoomed uncertainty view", elem_id="zoom", **IMG)
            with gr.Row():
                c["window_px"] = checked(gr.Slider(*ZOOM_PX, value=8, step=1, label="Zoom window (camera pixels)"))
                c["zoom_x"] = gr.Number(None, label="Zoom centre x (µm)", elem_id="zoom-x")
                c["zoom_y"] = gr.Number(None, label="Zoom centre y (µm)", elem_id="zoom-y")
                c["zoom_btn"] = gr.Button("Show this region", elem_id="zoom-btn")
                c["crowded_btn"] = gr.Button("Most crowded region", elem_id="crowded-btn")
            gr.Markdown("The zoom opens on the frame's most crowded region, its molecules framed whole; click the raw "
                        "frame or type a centre to look elsewhere. Ellipses are each molecule's 1σ, coloured by its "
                        "size, drawn to scale or, where that would be too small to see, magnified by the factor in "
                        "the title and legend; dots are the molecule's positions in the individual samples; the "
                        "right panel is where the samples disagree.")
        with gr.Column(visible=False) as c["samples_box"]:  # DDPM runs only
            gr.Markdown(f"**DDPM posterior samples** (up to {au.GALLERY_SAMPLES} shown, on the colour scale of the "
                        "mean)", elem_id="samples-head")
            c["gallery"] = gr.Gallery(show_label=False, format="png", columns=GALLERY_COLUMNS, object_fit="contain",
                                      elem_id="samples-gallery", interactive=False,
                                      buttons=["download", "fullscreen"])
        with gr.Row():
            c["mean"] = gr.Image(label="Mean of samples", elem_id="mean", **IMG)
            c["variance"] = gr.Image(label="Variance of samples", elem_id="variance", **IMG)
        c["metrics"] = gr.Markdown(elem_id="metrics")
        # headers wrap, so every column fits the panel (the last one was cut off at 1440 px)
        c["table"] = gr.Dataframe(label="Molecules in this frame", interactive=False, max_height=300, wrap=True,
                                  elem_id="localizations")
        with gr.Accordion("Whole stack: accumulated super-resolved image, uncertainty, drift, resolution and "
                          "sigma self-check", open=True):
            with gr.Row():
                c["sum_mean"] = gr.Image(label="Super-resolved (sum over frames)", elem_id="sum-mean", **IMG)
                c["sum_var"] = gr.Image(label="Uncertainty (sum of variances)", elem_id="sum-var", **IMG)
            c["drift"] = gr.Image(label="Drift (RCC) and FRC", elem_id="drift", **IMG)
            c["selfcheck"] = gr.Image(label="Sigma self-check (uploaded stacks): consecutive frames of one blink",
                                      elem_id="selfcheck", **IMG)
            c["drift_note"] = gr.Markdown(elem_id="drift-note")
    return c


def _sweep_panel() -> dict:
    c = {}
    with gr.Accordion("Localization error vs the Cramér-Rao bound (photon sweep)", open=False):
        gr.Markdown(f"Isolated emitters at {', '.join(f'{p:g}' for p in au.SWEEP_PHOTONS)} photons, with the "
                    "background and PSF sigma of the *Simulate* tab. The line is the Cramér-Rao lower bound from the "
                    "Fisher information of the Poisson-normal camera model (x, y, photons, background estimated); "
                    "points are the measured lateral RMSE.")
        with gr.Row():
            c["use_ddpm"] = gr.Checkbox(False, label="Use the DDPM mean (samples / steps above; about a minute per "
                                                     "level on CPU) instead of DeepSTORM alone")
            c["crlb_btn"] = gr.Button("Compute RMSE vs CRLB", elem_id="crlb-btn")
        c["crlb_img"] = gr.Image(label="RMSE vs sqrt(CRLB)", elem_id="crlb-plot", **IMG)
        c["crlb_table"] = gr.Dataframe(label="Sweep", interactive=False)
    return c


FAILED = ("⚠️ **The last run failed** (the message says why); nothing on the page is from it. Change the inputs "
          "and run again.")


def _wire(h: Handlers, c: dict, state) -> None:
    """Connect the buttons, slider, clicks and uploads to the handlers."""
    frame_outputs = [c[k] for k in FRAME_OUTPUTS]
    run_outputs = [state, c["frame"], c["status"], *frame_outputs, c["sum_mean"], c["sum_var"], c["downloads"],
                   c["drift"], c["selfcheck"], c["drift_note"], c["model_info"]]
    model_header = h.header()  # what the header says with no run on the page
    zoom_outputs = [c["zoom"], c["zoom_x"], c["zoom_y"]]
    sampling = [c["num_samples"], c["steps"], c["sample_seed"], c["window_px"]]
    runs = (
        ("sim_btn", h.simulate, [c[k] for k in ("photons", "background", "density", "sigma", "size", "n_frames",
                                                "structure", "seed")], "simulate", "Simulating and running", []),
        ("up_btn", h.upload, [c[k] for k in ("upload", "offset", "gain", "pixel_size", "read_noise")], "upload",
         "Reading the upload and running", [c[k] for k in ("offset_map", "variance_map", "gain_map")]),
    )
    for button, fn, inputs, api_name, message, optional in runs:
        # the page forgets the last run before a new one: a failure never leaves old results or downloads
        run = (c[button].click(lambda message=message: (*cleared(f"{message} …"), model_header), None,
                               [state, c["status"], c["downloads"], c["model_info"]], queue=False,
                               api_visibility="private")
               .then(fn, inputs + sampling + optional, run_outputs, api_name=api_name, show_progress="full",
                     show_progress_on=[c["progress_box"]], **HEAVY))
        run.success(lambda result: (gr.update(visible=True), gr.update(visible=result is not None and result.has_samples),
                                    gr.update(visible=False)),
                    state, [c["results"], c["samples_box"], c["placeholder"]], queue=False, api_visibility="private")
        run.failure(lambda: (gr.update(visible=False), gr.update(visible=True), *cleared(FAILED), model_header), None,
                    [c["results"], c["placeholder"], state, c["status"], c["downloads"], c["model_info"]],
                    queue=False, api_visibility="private")
    c["replace"].upload(lambda f: f, c["replace"], c["upload"], queue=False, api_visibility="private")
    light = dict(show_progress="minimal", show_progress_on=[c["zoom"]], concurrency_limit=2)
    c["frame"].release(h.show_frame, [state, c["frame"], c["window_px"]], frame_outputs, api_name="show_frame",
                       show_progress="hidden", concurrency_limit=2)
    c["crowded_btn"].click(h.zoom_crowded, [state, c["frame"], c["window_px"]], zoom_outputs,
                           api_name="zoom_crowded", **light)
    c["zoom_btn"].click(h.zoom_at, [state, c["frame"], c["zoom_x"], c["zoom_y"], c["window_px"]], zoom_outputs,
                        api_name="zoom", **light)
    c["raw"].select(h.zoom_click, [state, c["frame"], c["window_px"]], zoom_outputs, **light)
    c["crlb_btn"].click(h.crlb_sweep, [c["background"], c["sigma"], c["use_ddpm"], c["num_samples"], c["steps"],
                                       c["sample_seed"]], [c["crlb_img"], c["crlb_table"]], api_name="crlb_sweep",
                        show_progress="full", show_progress_on=[c["crlb_img"]], **HEAVY)


def build_demo(pipe=None, model_name: str | None = None) -> gr.Blocks:
    """The Gradio app. ``pipe``: an ``SMLMDiffusionPipeline`` (loaded from the default location if None)."""
    if pipe is None:
        location, is_default = au.model_location()
        pipe = au.load_pipeline()
        model_name = model_name or (f"pretrained/{au.DEFAULT_MODEL}" if is_default else location)
    au.warmup(pipe)
    pipe.set_progress_bar_config(disable=True)  # progress goes to the page (frames and steps), not to a tqdm bar
    model_name = model_name or "custom pipeline"
    cam = au.pipeline_camera(pipe)
    psf = float(getattr(pipe.kde_net.config, "psf_sigma_px", 1.0))
    # delete_cache: Gradio's copies of uploads and outputs older than an hour go, checked hourly
    with gr.Blocks(title="smlm-diffusers: uncertainty-aware SMLM", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=3600)  # a user's last result, kept for the frame slider
        gr.Markdown(f"# {TITLE}", elem_id="title")
        gr.Markdown(DESCRIPTION)
        handlers = Handlers(pipe, cam, model_name)
        # the camera the results on the page used: the model's until a run (an upload's own afterwards)
        header = gr.Markdown(handlers.header(), elem_id="model-info")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                c = _input_column(cam, psf, au.max_inference_steps(pipe), pipe)
            with gr.Column(scale=3):
                c["placeholder"] = gr.Markdown("Results appear here after a run: press **Simulate and run**, or "
                                               "upload a TIFF stack.", elem_id="placeholder")
                c |= _result_panels()
                c |= _sweep_panel()
        c["model_info"] = header
        _wire(handlers, c, state)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    try:
        demo = build_demo()
    except (FileNotFoundError, OSError) as err:  # no model: say so, without a traceback
        raise SystemExit(f"smlm-diffusers app: {err}") from None
    demo.launch(max_file_size=f"{au.MAX_UPLOAD_MB}mb", **launch_kwargs())


if __name__ == "__main__":
    main()
