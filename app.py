"""Web demo of smlm-diffusers (also the Hugging Face Space): ``python app.py``.

Simulate or upload SMLM frames; see the DeepSTORM KDE, conditional-DDPM posterior samples,
their mean and variance, per-molecule localizations with uncertainty, and, for simulated
data, Jaccard/RMSE and RMSE against the Cramer-Rao bound. The pipeline is loaded once at
start from ``$SMLM_DIFFUSERS_MODEL`` (a folder or Hub repo id), default the shipped
``pretrained/smlm-ddpm-2d`` next to the package (whatever the working directory). All the science lives in ``smlm_diffusers`` (``app_utils``,
``visualization``); this file only builds the page.
"""

from __future__ import annotations

import logging
import math
import os
import traceback
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from smlm_diffusers import app_utils as au
from smlm_diffusers.visualization import Markers, percentile_range, placeholder, plot_rmse_vs_crlb, render_image

_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the app
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
/* the sample gallery as tall as its rows of thumbnails (no fixed-height blank area) */
#samples-gallery .grid-wrap.fixed-height {min-height: 0 !important; height: auto !important;}
"""

TABLE_COLUMNS = {
    "frame": "frame",
    "x_nm": "x [nm]",
    "y_nm": "y [nm]",
    "sigma_x_nm": "σx [nm]",
    "sigma_y_nm": "σy [nm]",
    "probability": "probability",
    "n_samples": "samples",
    "kde_mass": "KDE mass",
}
# images: lossless PNG; the figure carries its own title, so Gradio's label badge is hidden
IMG = dict(format="png", interactive=False, show_label=False, buttons=["download", "fullscreen"])
GALLERY_COLUMNS = 4
HEAVY = dict(concurrency_limit=1, concurrency_id="pipeline")  # one model run at a time


def launch_kwargs() -> dict:
    """Look of the page (Gradio 6 takes theme and CSS at launch)."""
    return dict(theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"), css=CSS)


# -- rendering of one result ----------------------------------------------------------------------
def _markers(result: au.RunResult, frame: int) -> list[Markers]:
    out = []
    gt = result.frame_ground_truth(frame)
    if gt is not None:
        out.append(Markers(gt["x_nm"].to_numpy(), gt["y_nm"].to_numpy(), "ground truth", color="#00e5ff",
                           marker="o", size=70, filled=False))
    loc = result.frame_localizations(frame)
    out.append(Markers(loc["x_nm"].to_numpy(), loc["y_nm"].to_numpy(), "localizations", color="#ff3b30",
                       marker="+", size=70))
    return out


def _table(result: au.RunResult, frame: int) -> pd.DataFrame:
    loc = result.frame_localizations(frame)
    loc = loc[[c for c in TABLE_COLUMNS if c in loc.columns]].copy()
    for c in ("x_nm", "y_nm", "sigma_x_nm", "sigma_y_nm", "kde_mass"):
        if c in loc:
            loc[c] = loc[c].astype(float).round(1)
    if "probability" in loc:
        loc["probability"] = loc["probability"].astype(float).round(2)
    return loc.rename(columns=TABLE_COLUMNS)


def _fmt(v, spec=".3f", unit=""):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:{spec}}{unit}"


def _metrics_markdown(result: au.RunResult, frame: int) -> str:
    if result.ground_truth is None:
        n = len(result.localizations)
        return (f"**{len(result.frame_localizations(frame))}** molecules in frame {frame}, **{n}** in the stack.  \n"
                "No ground truth for uploaded data: metrics are shown for simulations.")
    rows = []
    for name, m in (("frame " + str(frame), au.run_metrics(result, frame)), ("all frames", au.run_metrics(result))):
        rows.append(f"| {name} | {m['n_gt']} | {m['tp']} / {m['fp']} / {m['fn']} | {_fmt(m['jaccard'])} | "
                    f"{_fmt(m['rmse_nm'], '.1f', ' nm')} | {_fmt(m['efficiency'], '.1f')} | "
                    f"{_fmt(m.get('coverage_1sigma'), '.2f')} |")
    return ("| | true emitters | TP / FP / FN | Jaccard | lateral RMSE | efficiency | 1σ coverage |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            "\n\nMatching: Hungarian, 250 nm tolerance. 1σ coverage: fraction of errors within the predicted "
            "sigma (ideal 0.68; DDPM mode only).")


def render_frame(result: au.RunResult, frame: int):
    """Images, gallery, table and metrics of one frame."""
    frame = int(min(max(int(frame), 0), result.n_frames - 1))
    a, ka = result.camera.pixel_size_nm, result.kde_pixel_nm
    kde_unit = f"emitters per ({ka:g} nm)² pixel"
    raw = render_image(result.frames[frame], a, f"Raw frame {frame} (ADU)", cmap="gray", colorbar_label="ADU",
                       markers=_markers(result, frame))
    ds = result.deepstorm_kde[frame]
    ds_img = render_image(ds, ka, "DeepSTORM KDE", colorbar_label=kde_unit, vmin=0.0,
                          vmax=percentile_range([ds], 99.9)[1])
    if result.samples is not None:
        lo, hi = 0.0, percentile_range([result.samples[frame], result.kde_mean[frame]], 99.9)[1]
        gallery = [render_image(s.astype(np.float32), ka, f"DDPM sample {i + 1}", colorbar_label=kde_unit, vmin=lo,
                                vmax=hi, target_px=256) for i, s in enumerate(result.samples[frame])]
        mean = render_image(result.kde_mean[frame], ka, f"Mean of {result.num_samples} samples",
                            colorbar_label=kde_unit, vmin=lo, vmax=hi)
        var = render_image(result.kde_var[frame], ka, "Per-pixel variance of the samples", cmap="magma",
                           colorbar_label="variance (KDE units²)", vmin=0.0,
                           vmax=percentile_range([result.kde_var[frame]], 99.9)[1])
    else:
        gallery = []  # DeepSTORM-only mode: no samples
        mean = render_image(ds, ka, "Mean = DeepSTORM KDE (no samples)", colorbar_label=kde_unit, vmin=0.0,
                            vmax=percentile_range([ds], 99.9)[1])
        var = placeholder("No variance without DDPM samples.\nSet samples > 0.")
    return raw, ds_img, gallery, mean, var, _table(result, frame), _metrics_markdown(result, frame)


def render_stack(result: au.RunResult):
    ka = result.kde_pixel_nm
    n = result.n_frames
    s_mean = render_image(result.sum_mean, ka, f"Super-resolved: Σ of {n} mean{'s' if n > 1 else ''}",
                          colorbar_label="emitters per pixel", vmin=0.0,
                          vmax=percentile_range([result.sum_mean], 99.9)[1])
    if result.sum_var is None:
        s_var = placeholder("No uncertainty map without DDPM samples.\nSet samples > 0.")
    else:
        s_var = render_image(result.sum_var, ka, f"Uncertainty: Σ of {n} variance{'s' if n > 1 else ''}",
                             cmap="magma", colorbar_label="variance (KDE units²)", vmin=0.0,
                             vmax=percentile_range([result.sum_var], 99.9)[1])
    return s_mean, s_var


def _status(result: au.RunResult) -> str:
    f, h, w = result.frames.shape
    src = "simulated" if result.source == "simulation" else f"uploaded ({result.source})"
    return (f"Done: **{result.mode}** on {f} {src} frame{'s' if f > 1 else ''} of {h} × {w} px "
            f"({result.camera.pixel_size_nm:g} nm pixels) in **{result.seconds:.1f} s**; "
            f"{len(result.localizations)} molecules.")


def _outputs(result: au.RunResult):
    frame_update = gr.update(value=0, maximum=max(result.n_frames - 1, 1), visible=result.n_frames > 1,
                             interactive=result.n_frames > 1)
    per_frame = render_frame(result, 0)
    stack = render_stack(result)
    files = au.write_outputs(result)
    return (result, frame_update, _status(result), *per_frame, *stack, files)


def _user_error(err: Exception) -> gr.Error:
    if isinstance(err, (au.InputError, gr.Error)):
        return err if isinstance(err, gr.Error) else gr.Error(str(err), print_exception=False)
    logger.error("request failed:\n%s", traceback.format_exc())
    return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The server is still running; "
                    "check the inputs and try again.", print_exception=False)


def _progress_fn(progress, desc):
    def fn(done, total):
        progress((done, total), desc=desc, unit="frames")
    return fn


# -- the page -------------------------------------------------------------------------------
def build_demo(pipe=None, model_name: str | None = None) -> gr.Blocks:
    """The Gradio app. ``pipe``: an ``SMLMDiffusionPipeline`` (loaded from the default location if None)."""
    if pipe is None:
        location, is_default = au.model_location()
        pipe = au.load_pipeline()
        model_name = model_name or (f"pretrained/{au.DEFAULT_MODEL}" if is_default else location)
    au.warmup(pipe)
    # the pipeline's own tqdm bar (one tick per diffusion step) feeds the page's progress bar
    # (gr.Progress(track_tqdm=True)); nothing is printed to the server's terminal
    pipe.set_progress_bar_config(disable=False, leave=False, desc="DDPM sampling", file=_DEVNULL)
    model_name = model_name or "custom pipeline"
    cam = au.pipeline_camera(pipe)
    psf = float(getattr(pipe.kde_net.config, "psf_sigma_px", 1.0))
    s_max = au.max_inference_steps(pipe)

    def simulate_run(photons, background, density, sigma_px, size, n_frames, structure, seed, num_samples, steps,
                     sample_seed, progress=gr.Progress(track_tqdm=True)):
        try:
            settings = au.SimulationSettings(photons, background, density, sigma_px, size, n_frames, structure, seed)
            progress(0, desc="Simulating frames")
            frames, gt = au.simulate_frames(settings, cam)
            result = au.run_pipeline(pipe, frames, num_samples, steps, seed=sample_seed, camera=cam,
                                     ground_truth=gt, source="simulation",
                                     progress=_progress_fn(progress, "Running DeepSTORM + DDPM"))
            progress(1.0, desc="Rendering")
            return _outputs(result)
        except Exception as err:  # every failure becomes a message; the server keeps serving
            raise _user_error(err) from None

    def upload_run(file, offset, gain, pixel_size, num_samples, steps, sample_seed,
                   progress=gr.Progress(track_tqdm=True)):
        try:
            camera = au.check_camera(offset, gain, pixel_size, read_noise=cam.read_noise)
            progress(0, desc="Reading the TIFF stack")
            frames = au.read_upload(file)
            result = au.run_pipeline(pipe, frames, num_samples, steps, seed=sample_seed, camera=camera,
                                     source=Path(file).name,
                                     progress=_progress_fn(progress, "Running DeepSTORM + DDPM"))
            progress(1.0, desc="Rendering")
            return _outputs(result)
        except Exception as err:
            raise _user_error(err) from None

    def show_frame(result, frame):
        if result is None:
            raise gr.Error("Run a simulation or an upload first.", print_exception=False)
        try:
            return render_frame(result, frame)
        except Exception as err:
            raise _user_error(err) from None

    def crlb_sweep(background, sigma_px, use_ddpm, num_samples, steps, sample_seed,
                   progress=gr.Progress(track_tqdm=True)):
        try:
            k = int(num_samples) if use_ddpm else 0
            if use_ddpm and k < 2:
                raise au.InputError("The DDPM mode of the sweep needs at least 2 samples: set 'DDPM samples per frame' to 2 or more.")
            au.check_sampling(k, steps, pipe)
            n_frames = au.SWEEP_FRAMES if k == 0 else au.SWEEP_FRAMES_DDPM
            table = au.rmse_crlb_sweep(pipe, au.SWEEP_PHOTONS, float(background), float(sigma_px), n_frames,
                                       num_samples=k, num_inference_steps=steps, seed=int(sample_seed),
                                       progress=_progress_fn(progress, "Photon sweep"))
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
                        photons = gr.Slider(100, 10000, value=2000, step=100, label="Photons per emitter")
                        background = gr.Slider(0, 200, value=20, step=1, label="Background (photons / pixel)")
                        density = gr.Slider(0.1, 10.0, value=1.0, step=0.1, label="Density (emitters / µm²)")
                        sigma = gr.Slider(0.6, 2.0, value=psf, step=0.05, label="PSF sigma (camera pixels)",
                                          info=f"the model was trained at {psf:g} px")
                        with gr.Row():
                            size = gr.Slider(16, au.MAX_FRAME_SIZE, value=au.DEFAULT_FRAME_SIZE, step=16,
                                             label="Frame size (px)")
                            n_frames = gr.Slider(1, au.MAX_FRAMES, value=au.DEFAULT_FRAMES, step=1, label="Frames")
                        structure = gr.Radio(list(au.STRUCTURES), value="Random (uniform)", label="Structure")
                        seed = gr.Number(0, precision=0, label="Simulation seed", minimum=0)
                        sim_btn = gr.Button("Simulate and run", variant="primary", elem_id="simulate-btn")
                    with gr.Tab("Upload TIFF", id="upload"):
                        upload = gr.File(label="TIFF stack (grey levels, ADU)", file_types=[".tif", ".tiff"],
                                         type="filepath")
                        with gr.Row():
                            offset = gr.Number(cam.offset, label="Camera offset (ADU)")
                            gain = gr.Number(cam.gain, label="Gain (ADU / e⁻)", minimum=0)
                        pixel_size = gr.Number(cam.pixel_size_nm, label="Pixel size (nm)", minimum=1)
                        gr.Markdown(f"Up to {au.MAX_FRAMES} frames of at most {au.MAX_FRAME_SIZE} × "
                                    f"{au.MAX_FRAME_SIZE} px ({au.MAX_TOTAL_PIXELS:,} pixels in all). Multi-frame "
                                    "TIFF (ImageJ/OME), 8/16/32-bit grey levels.")
                        up_btn = gr.Button("Run on upload", variant="primary", elem_id="upload-btn")
                with gr.Group():
                    num_samples = gr.Slider(0, au.MAX_SAMPLES, value=au.DEFAULT_SAMPLES, step=1,
                                            label="DDPM samples per frame", info="0 = DeepSTORM only (fastest)")
                    steps = gr.Slider(1, s_max, value=min(au.DEFAULT_STEPS, s_max), step=1,
                                      label="Diffusion steps")
                    sample_seed = gr.Number(0, precision=0, label="Sampling seed", minimum=0)
                status = gr.Markdown("Choose inputs and press **Simulate and run**.", elem_id="status")
                downloads = gr.File(label="Downloads: localizations (ThunderSTORM CSV), mean / variance (float32 TIFF)",
                                    file_count="multiple", interactive=False)
            # ---------------- outputs ----------------
            with gr.Column(scale=3):
                frame = gr.Slider(0, 1, value=0, step=1, label="Frame to display", visible=False,
                                  elem_id="frame-slider")
                with gr.Row():
                    raw_img = gr.Image(label="Raw frame with localizations", elem_id="raw-frame", **IMG)
                    ds_img = gr.Image(label="DeepSTORM KDE (conditioning)", elem_id="deepstorm", **IMG)
                gallery = gr.Gallery(label=f"DDPM posterior samples (up to {au.GALLERY_SAMPLES} shown)", format="png",
                                     columns=GALLERY_COLUMNS, object_fit="contain",
                                     elem_id="samples-gallery", interactive=False, buttons=["download", "fullscreen"])
                with gr.Row():
                    mean_img = gr.Image(label="Mean of samples", elem_id="mean", **IMG)
                    var_img = gr.Image(label="Variance of samples", elem_id="variance", **IMG)
                metrics = gr.Markdown(elem_id="metrics")
                table = gr.Dataframe(label="Localizations in this frame (σ: per-molecule uncertainty from the "
                                           "samples; probability: fraction of samples with the molecule)",
                                     interactive=False, max_height=300, elem_id="localizations")
                with gr.Accordion("Whole stack: accumulated super-resolved image and uncertainty", open=True):
                    with gr.Row():
                        sum_mean_img = gr.Image(label="Super-resolved (sum of means)", **IMG)
                        sum_var_img = gr.Image(label="Uncertainty (sum of variances)", **IMG)
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

        run_outputs = [state, frame, status, raw_img, ds_img, gallery, mean_img, var_img, table, metrics,
                       sum_mean_img, sum_var_img, downloads]
        sim_btn.click(simulate_run, [photons, background, density, sigma, size, n_frames, structure, seed,
                                     num_samples, steps, sample_seed], run_outputs, api_name="simulate", **HEAVY)
        up_btn.click(upload_run, [upload, offset, gain, pixel_size, num_samples, steps, sample_seed], run_outputs,
                     api_name="upload", **HEAVY)
        frame.release(show_frame, [state, frame], [raw_img, ds_img, gallery, mean_img, var_img, table, metrics],
                      api_name="show_frame", concurrency_limit=2)
        crlb_btn.click(crlb_sweep, [background, sigma, use_ddpm, num_samples, steps, sample_seed],
                       [crlb_img, crlb_table], api_name="crlb_sweep", **HEAVY)
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
