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
import traceback
from pathlib import Path

import gradio as gr

from smlm_diffusers import app as au
from smlm_diffusers.app import views
from smlm_diffusers.app.downloads import run_folder, safe_name
from smlm_diffusers.render import save_png
from smlm_diffusers.visualization import plot_rmse_vs_crlb

logger = logging.getLogger("smlm_diffusers.app")

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


def _user_error(err: Exception) -> gr.Error:
    if isinstance(err, (au.InputError, gr.Error)):
        return err if isinstance(err, gr.Error) else gr.Error(str(err), print_exception=False)
    logger.error("request failed:\n%s", traceback.format_exc())
    return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The server is still running; "
                    "check the inputs and try again.", print_exception=False)


def _seed(value, label: str) -> int:
    if value is None or not math.isfinite(float(value)) or float(value) < 0 or float(value) != int(float(value)):
        raise au.InputError(f"'{label}' must be a whole number >= 0, got {value}.")
    return int(float(value))


# -- one result on the page -------------------------------------------------------------------------
def _png(result: au.RunResult, rgb, name: str) -> str:
    """Save a picture in the run's folder under a name that says what it is; its path (the download name)."""
    return str(save_png(rgb, Path(result.folder) / f"{safe_name(result.name)}_{name}.png"))


def _zoom(result: au.RunResult, frame: int, window) -> tuple:
    x_um, y_um = views.window_centre_um(result, window)
    return _png(result, views.zoom_image(result, frame, window), f"frame{frame}_zoom"), x_um, y_um


def render_frame(result: au.RunResult, frame: int, window_px: int = 8):
    """Raw frame, DeepSTORM KDE, zoom (+ its centre), gallery, mean, variance, table, metrics of one frame."""
    frame = int(min(max(int(frame), 0), result.n_frames - 1))
    pics = views.frame_images(result, frame)
    zoom = _zoom(result, frame, views.zoom_window(result, frame, window_px))
    ddpm = result.has_samples
    if ddpm:
        gallery = gr.update(value=[(_png(result, rgb, f"frame{frame}_sample{i + 1}"), caption)
                                   for i, (rgb, caption) in enumerate(pics["gallery"])], visible=True)
        mean = gr.update(value=_png(result, pics["mean"], f"frame{frame}_mean"), visible=True)
        var = gr.update(value=_png(result, pics["variance"], f"frame{frame}_variance"), visible=True)
    else:  # DeepSTORM only: no samples, so no gallery, mean or variance
        gallery, mean, var = (gr.update(value=None, visible=False) for _ in range(3))
    table = gr.update(value=views.frame_table(result, frame), label=views.table_label(result))
    return (_png(result, pics["raw"], f"frame{frame}_raw"), _png(result, pics["deepstorm"], f"frame{frame}_deepstorm"),
            *zoom, gallery, mean, var, table, views.metrics_markdown(result, frame))


def _outputs(result: au.RunResult, window_px: int):
    result.folder = str(run_folder())
    files = au.write_outputs(result, result.folder)
    frame_update = gr.update(value=0, maximum=max(result.n_frames - 1, 1), visible=result.n_frames > 1,
                             interactive=result.n_frames > 1)
    s_mean, s_var = views.stack_images(result)
    s_var = (gr.update(value=_png(result, s_var, "uncertainty_sum"), visible=True) if s_var is not None
             else gr.update(value=None, visible=False))
    return (result, frame_update, views.status_markdown(result), *render_frame(result, 0, window_px),
            _png(result, s_mean, "super_resolved_sum"), s_var, files)


def _progress(progress):
    def report(fraction: float, message: str) -> None:
        progress(fraction, desc=message)
    return report


# -- the page -------------------------------------------------------------------------------
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
    s_max = au.max_inference_steps(pipe)

    def simulate_run(photons, background, density, sigma_px, size, n_frames, structure, seed, num_samples, steps,
                     sample_seed, window_px, progress=gr.Progress()):
        try:
            seed, sample_seed = _seed(seed, "Simulation seed"), _seed(sample_seed, "Sampling seed")
            settings = au.SimulationSettings(photons, background, density, sigma_px, size, n_frames, structure, seed)
            progress(0, desc="Simulating frames")
            frames, gt = au.simulate_frames(settings, cam)
            result = au.run_pipeline(pipe, frames, num_samples, steps, seed=sample_seed, camera=cam,
                                     ground_truth=gt, source="simulation", progress=_progress(progress),
                                     name=f"simulation_seed{seed}")
            progress(1.0, desc="Drawing the results")
            return _outputs(result, window_px)
        except Exception as err:  # every failure becomes a message; the server keeps serving
            raise _user_error(err) from None

    def upload_run(file, offset, gain, pixel_size, read_noise, num_samples, steps, sample_seed, window_px,
                   progress=gr.Progress()):
        try:
            sample_seed = _seed(sample_seed, "Sampling seed")
            camera = au.check_camera(offset, gain, pixel_size, read_noise=read_noise)
            progress(0, desc="Reading the TIFF stack")
            frames = au.read_upload(file)
            warnings = au.check_camera_fits(frames, camera)
            result = au.run_pipeline(pipe, frames, num_samples, steps, seed=sample_seed, camera=camera,
                                     source=Path(file).name, progress=_progress(progress))
            result.warnings = warnings
            progress(1.0, desc="Drawing the results")
            return _outputs(result, window_px)
        except Exception as err:
            raise _user_error(err) from None

    def _need(result):
        if result is None:
            raise gr.Error("Run a simulation or an upload first.", print_exception=False)

    def show_frame(result, frame, window_px):
        _need(result)
        try:
            return render_frame(result, frame, window_px)
        except Exception as err:
            raise _user_error(err) from None

    def zoom_crowded(result, frame, window_px):
        _need(result)
        try:
            frame = int(min(max(int(frame), 0), result.n_frames - 1))
            return _zoom(result, frame, views.zoom_window(result, frame, window_px))
        except Exception as err:
            raise _user_error(err) from None

    def zoom_at(result, frame, x_um, y_um, window_px):
        _need(result)
        try:
            frame = int(min(max(int(frame), 0), result.n_frames - 1))
            f, h, w = result.frames.shape
            a = result.camera.pixel_size_nm
            for label, v, n in (("Zoom centre x (µm)", x_um, w), ("Zoom centre y (µm)", y_um, h)):
                if v is None or not 0 <= float(v) <= n * a / 1000:
                    raise au.InputError(f"'{label}' must be between 0 and {n * a / 1000:g} µm (the frame), got {v}.")
            return _zoom(result, frame, views.zoom_window(result, frame, window_px,
                                                          (float(x_um) * 1000, float(y_um) * 1000)))
        except Exception as err:
            raise _user_error(err) from None

    def zoom_click(result, frame, window_px, evt: gr.SelectData):
        _need(result)
        try:
            frame = int(min(max(int(frame), 0), result.n_frames - 1))
            where = views.click_to_nm(result, frame, *evt.index[:2])
            window = views.zoom_window(result, frame, window_px, where)  # outside the image: the crowded region
            return _zoom(result, frame, window)
        except Exception as err:
            raise _user_error(err) from None

    def crlb_sweep(background, sigma_px, use_ddpm, num_samples, steps, sample_seed, progress=gr.Progress()):
        try:
            k = int(num_samples) if use_ddpm else 0
            if use_ddpm and k < 2:
                raise au.InputError("The DDPM mode of the sweep needs at least 2 samples: set 'DDPM samples per "
                                    "frame' to 2 or more.")
            au.check_sampling(k, steps, pipe)
            n_frames = au.SWEEP_FRAMES if k == 0 else au.SWEEP_FRAMES_DDPM

            def report(done, total):
                progress(done / total, desc=f"Photon sweep: {done} of {total} levels done")

            table = au.rmse_crlb_sweep(pipe, au.SWEEP_PHOTONS, float(background), float(sigma_px), n_frames,
                                       num_samples=k, num_inference_steps=steps,
                                       seed=_seed(sample_seed, "Sampling seed"), progress=report)
            mode = "DeepSTORM only" if k == 0 else f"DDPM mean of {k} samples x {int(steps)} steps"
            p, curve = au.crlb_curve(float(background), float(sigma_px), cam, au.SWEEP_PHOTONS[0] / 1.5,
                                     au.SWEEP_PHOTONS[-1] * 1.5)
            title = (f"RMSE vs CRLB, isolated emitters: {mode}\n"
                     f"background {float(background):g} photons/px, PSF σ {float(sigma_px):g} px, "
                     f"{n_frames} frame{'s' if n_frames > 1 else ''} x 16 emitters per level")
            img = plot_rmse_vs_crlb(table["photons"].to_numpy(), table["rmse_nm"].to_numpy(), p, curve, title,
                                    ratio=table["ratio"].to_numpy())
            shown = table.rename(columns={"rmse_nm": "RMSE [nm]", "sqrt_crlb_nm": "√CRLB [nm]",
                                          "ratio": "RMSE/√CRLB", "n_gt": "emitters", "tp": "matched"}).round(3)
            return img, shown
        except Exception as err:
            raise _user_error(err) from None

    # delete_cache: Gradio's copies of uploads and outputs older than an hour go, checked hourly
    with gr.Blocks(title="smlm-diffusers: uncertainty-aware SMLM", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=3600)  # a user's last result, kept for the frame slider
        gr.Markdown(f"# {TITLE}", elem_id="title")
        gr.Markdown(DESCRIPTION)
        gr.Markdown(
            f"Model: `{model_name}` · camera {cam.pixel_size_nm:g} nm pixels, offset {cam.offset:g} ADU, "
            f"gain {cam.gain:g} ADU/e⁻, read noise {cam.read_noise:g} e⁻ · trained PSF σ {psf:g} px · "
            f"KDE grid {cam.pixel_size_nm / pipe.kde_net.config.upsampling:g} nm · runs on CPU: "
            f"frames ≤ {au.MAX_FRAME_SIZE}² px, ≤ {au.MAX_FRAMES} frames.",
            elem_id="model-info",
        )
        with gr.Row(equal_height=False):
            # ---------------- inputs ----------------
            with gr.Column(scale=1, min_width=320):
                with gr.Tabs():
                    with gr.Tab("Simulate", id="simulate"):
                        photons = checked(gr.Slider(100, 10000, value=2000, step=100, label="Photons per emitter"))
                        background = checked(gr.Slider(0, 200, value=20, step=1, label="Background (photons / pixel)"))
                        density = checked(gr.Slider(0.1, 10.0, value=1.0, step=0.1, label="Density (emitters / µm²)",
                                                       elem_id="density"))
                        sigma = checked(gr.Slider(0.6, 2.0, value=psf, step=0.05, label="PSF sigma (camera pixels)",
                                                  info=f"the model was trained at {psf:g} px"))
                        with gr.Row():
                            size = checked(gr.Slider(16, au.MAX_FRAME_SIZE, value=au.DEFAULT_FRAME_SIZE, step=16,
                                                     label="Frame size (px)"))
                            n_frames = checked(gr.Slider(1, au.MAX_FRAMES, value=au.DEFAULT_FRAMES, step=1,
                                                         label="Frames"))
                        structure = gr.Radio(list(au.STRUCTURES), value="Random (uniform)", label="Structure")
                        seed = gr.Number(0, precision=0, label="Simulation seed")
                        sim_btn = gr.Button("Simulate and run", variant="primary", elem_id="simulate-btn")
                    with gr.Tab("Upload TIFF", id="upload"):
                        upload = gr.File(label="TIFF stack (grey levels, ADU)", file_types=[".tif", ".tiff"],
                                         type="filepath")
                        with gr.Row():
                            offset = gr.Number(cam.offset, label="Camera offset (ADU)")
                            gain = gr.Number(cam.gain, label="Gain (ADU / e⁻)")
                        with gr.Row():
                            pixel_size = gr.Number(cam.pixel_size_nm, label="Pixel size (nm)")
                            read_noise = gr.Number(cam.read_noise, label="Read noise (e⁻ rms)")
                        gr.Markdown(f"Up to {au.MAX_FRAMES} frames of at most {au.MAX_FRAME_SIZE} × "
                                    f"{au.MAX_FRAME_SIZE} px ({au.MAX_TOTAL_PIXELS:,} pixels in all). Multi-frame "
                                    "TIFF (ImageJ/OME), 8/16/32-bit grey levels. The frames are checked against the "
                                    "camera first: settings that cannot fit them are refused with the value the "
                                    "data suggest.")
                        up_btn = gr.Button("Run on upload", variant="primary", elem_id="upload-btn")
                with gr.Group():
                    num_samples = checked(gr.Slider(0, au.MAX_SAMPLES, value=au.DEFAULT_SAMPLES, step=1,
                                                    label="DDPM samples per frame",
                                                    info="0 = DeepSTORM only (fastest; σ is then the CRLB)",
                                                    elem_id="samples"))
                    steps = checked(gr.Slider(1, s_max, value=min(au.model_steps(pipe), s_max), step=1,
                                              label="Diffusion steps", elem_id="steps"))
                    sample_seed = gr.Number(0, precision=0, label="Sampling seed")
                progress_box = gr.Markdown("", elem_id="run-progress")
                status = gr.Markdown("Choose inputs and press **Simulate and run**.", elem_id="status")
                downloads = gr.File(label="Downloads: localizations (ThunderSTORM CSV; Picasso HDF5 + YAML), "
                                          "mean / variance (float32 TIFF, calibrated in nm)",
                                    file_count="multiple", interactive=False, elem_id="downloads")
            # ---------------- outputs ----------------
            with gr.Column(scale=3):
                frame = gr.Slider(0, 1, value=0, step=1, label=f"Frame to display ({views.FRAME_NOTE})",
                                  visible=False, elem_id="frame-slider")
                with gr.Row():
                    raw_img = gr.Image(label="Raw frame with localizations (click to zoom there)",
                                       elem_id="raw-frame", **IMG)
                    ds_img = gr.Image(label="DeepSTORM KDE (conditioning)", elem_id="deepstorm", **IMG)
                with gr.Group():
                    zoom_img = gr.Image(label="Zoomed uncertainty view", elem_id="zoom", **IMG)
                    with gr.Row():
                        window_px = checked(gr.Slider(*ZOOM_PX, value=8, step=1, label="Zoom window (camera pixels)"))
                        zoom_x = gr.Number(None, label="Zoom centre x (µm)", elem_id="zoom-x")
                        zoom_y = gr.Number(None, label="Zoom centre y (µm)", elem_id="zoom-y")
                        zoom_btn = gr.Button("Show this region", elem_id="zoom-btn")
                        crowded_btn = gr.Button("Most crowded region", elem_id="crowded-btn")
                    gr.Markdown("The zoom opens on the frame's most crowded region; click the raw frame or type a "
                                "centre to look elsewhere. Ellipses are each molecule's 1σ, drawn to scale and "
                                "coloured by its size; dots are the molecule's positions in the individual samples; "
                                "the right panel is where the samples disagree.")
                gallery = gr.Gallery(label=f"DDPM posterior samples (up to {au.GALLERY_SAMPLES} shown; the colour "
                                           "scale of the mean)", format="png", columns=GALLERY_COLUMNS,
                                     object_fit="contain", elem_id="samples-gallery", interactive=False,
                                     buttons=["download", "fullscreen"])
                with gr.Row():
                    mean_img = gr.Image(label="Mean of samples", elem_id="mean", **IMG)
                    var_img = gr.Image(label="Variance of samples", elem_id="variance", **IMG)
                metrics = gr.Markdown(elem_id="metrics")
                table = gr.Dataframe(label="Molecules in this frame", interactive=False, max_height=300,
                                     elem_id="localizations")
                with gr.Accordion("Whole stack: accumulated super-resolved image and uncertainty", open=True):
                    with gr.Row():
                        sum_mean_img = gr.Image(label="Super-resolved (sum over frames)", elem_id="sum-mean", **IMG)
                        sum_var_img = gr.Image(label="Uncertainty (sum of variances)", elem_id="sum-var", **IMG)
                with gr.Accordion("Localization error vs the Cramér-Rao bound (photon sweep)", open=False):
                    gr.Markdown(
                        f"Isolated emitters at {', '.join(f'{p:g}' for p in au.SWEEP_PHOTONS)} photons, with the "
                        "background and PSF sigma of the *Simulate* tab. The line is the Cramér-Rao lower bound "
                        "from the Fisher information of the Poisson-normal camera model (x, y, photons, background "
                        "estimated); points are the measured lateral RMSE.")
                    with gr.Row():
                        use_ddpm = gr.Checkbox(False, label="Use the DDPM mean (samples / steps above; about a minute "
                                                              "per level on CPU) instead of DeepSTORM alone")
                        crlb_btn = gr.Button("Compute RMSE vs CRLB", elem_id="crlb-btn")
                    crlb_img = gr.Image(label="RMSE vs sqrt(CRLB)", elem_id="crlb-plot", **IMG)
                    crlb_table = gr.Dataframe(label="Sweep", interactive=False)

        frame_outputs = [raw_img, ds_img, zoom_img, zoom_x, zoom_y, gallery, mean_img, var_img, table, metrics]
        run_outputs = [state, frame, status, *frame_outputs, sum_mean_img, sum_var_img, downloads]
        zoom_outputs = [zoom_img, zoom_x, zoom_y]
        one_bar = dict(show_progress="full", show_progress_on=[progress_box])  # one progress display per run
        sim_btn.click(simulate_run, [photons, background, density, sigma, size, n_frames, structure, seed,
                                     num_samples, steps, sample_seed, window_px], run_outputs, api_name="simulate",
                      **one_bar, **HEAVY)
        up_btn.click(upload_run, [upload, offset, gain, pixel_size, read_noise, num_samples, steps, sample_seed,
                                  window_px], run_outputs, api_name="upload", **one_bar, **HEAVY)
        frame.release(show_frame, [state, frame, window_px], frame_outputs, api_name="show_frame",
                      show_progress="hidden", concurrency_limit=2)
        crowded_btn.click(zoom_crowded, [state, frame, window_px], zoom_outputs, api_name="zoom_crowded",
                          show_progress="minimal", show_progress_on=[zoom_img], concurrency_limit=2)
        zoom_btn.click(zoom_at, [state, frame, zoom_x, zoom_y, window_px], zoom_outputs, api_name="zoom",
                       show_progress="minimal", show_progress_on=[zoom_img], concurrency_limit=2)
        raw_img.select(zoom_click, [state, frame, window_px], zoom_outputs, show_progress="minimal",
                       show_progress_on=[zoom_img], concurrency_limit=2)
        crlb_btn.click(crlb_sweep, [background, sigma, use_ddpm, num_samples, steps, sample_seed],
                       [crlb_img, crlb_table], api_name="crlb_sweep", show_progress="full",
                       show_progress_on=[crlb_img], **HEAVY)
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
