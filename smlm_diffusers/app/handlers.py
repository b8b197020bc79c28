"""The app's event handlers: Gradio in, Gradio out (``app.py`` builds the page and wires these).

The one module of :mod:`smlm_diffusers.app` that uses Gradio: it turns a run
(:mod:`~smlm_diffusers.app.core`) into the page's outputs (PNG files in the run's folder,
``gr.update`` for the panels a mode shows or hides) and every failure into a ``gr.Error``
with a message for the user (the server keeps serving). A run's outputs are, in order:
state, frame slider, status, the frame's panels (:data:`FRAME_OUTPUTS`), the stack's two
sums, the downloads, the drift/FRC picture, the sigma self-check's picture and their note, the
header line (the camera the run used).
"""

from __future__ import annotations

import json
import logging
import math
import traceback
from pathlib import Path

import gradio as gr

from ..render import save_png
from ..visualization import figure_to_array, plot_rmse_vs_crlb
from . import core, inputs, views
from .downloads import run_folder, safe_name, write_outputs

logger = logging.getLogger("smlm_diffusers.app")

FRAME_OUTPUTS = ("raw", "deepstorm", "zoom", "zoom_x", "zoom_y", "gallery", "mean", "variance", "table", "metrics")
ZOOM_INFO_KEY = "smlm_diffusers:zoom"  # PNG text chunk of the zoom picture: what it plots (JSON)


def user_error(err: Exception) -> gr.Error:
    """A message for the page: the input checks' own, or a generic one (the traceback goes to the log)."""
    if isinstance(err, (inputs.InputError, gr.Error)):
        return err if isinstance(err, gr.Error) else gr.Error(str(err), print_exception=False)
    logger.error("request failed:\n%s", traceback.format_exc())
    return gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The server is still running; "
                    "check the inputs and try again.", print_exception=False)


def whole_seed(value, label: str) -> int:
    if value is None or not math.isfinite(float(value)) or float(value) < 0 or float(value) != int(float(value)):
        raise inputs.InputError(f"'{label}' must be a whole number >= 0, got {value}.")
    return int(float(value))


def _png(result: core.RunResult, rgb, name: str, metadata: dict | None = None) -> str:
    """Save a picture in the run's folder under a name that says what it is; its path (the download name)."""
    return str(save_png(rgb, Path(result.folder) / f"{safe_name(result.name)}_{name}.png", metadata))


def _frame(result: core.RunResult, frame) -> int:
    return int(min(max(int(frame), 0), result.n_frames - 1))


def zoom_outputs(result: core.RunResult, frame: int, window) -> tuple:
    """The zoom picture (its plotted data in the PNG's :data:`ZOOM_INFO_KEY` chunk) and its centre, µm."""
    x_um, y_um = views.window_centre_um(result, window)
    rgb, info = views.zoom_image(result, frame, window, return_info=True)
    return _png(result, rgb, f"frame{frame}_zoom", {ZOOM_INFO_KEY: json.dumps(info)}), x_um, y_um


def render_frame(result: core.RunResult, frame: int, window_px: int = 8) -> tuple:
    """The :data:`FRAME_OUTPUTS` of one frame."""
    frame = _frame(result, frame)
    pics = views.frame_images(result, frame)
    zoom = zoom_outputs(result, frame, views.zoom_window(result, frame, window_px))
    if result.has_samples:
        gallery = gr.update(value=[(_png(result, rgb, f"frame{frame}_sample{i + 1}"), caption)
                                   for i, (rgb, caption) in enumerate(pics["gallery"])], visible=True)
        mean = gr.update(value=_png(result, pics["mean"], f"frame{frame}_mean"), visible=True)
        var = gr.update(value=_png(result, pics["variance"], f"frame{frame}_variance"), visible=True)
    else:  # DeepSTORM only: no samples, so no gallery, mean or variance
        gallery, mean, var = (gr.update(value=None, visible=False) for _ in range(3))
    shown = views.frame_table(result, frame)
    table = gr.update(value=shown, label=views.table_label(result), column_widths=views.table_column_widths(shown))
    return (_png(result, pics["raw"], f"frame{frame}_raw"), _png(result, pics["deepstorm"], f"frame{frame}_deepstorm"),
            *zoom, gallery, mean, var, table, views.metrics_markdown(result, frame))


def _postprocess_pictures(result: core.RunResult, post, files: list) -> tuple:
    """The drift/FRC picture and the sigma self-check's (``gr.update``s, hidden where nothing was measured);
    the drift CSV joins ``files``. Only what was measured is plotted: a part not measured is the note's
    "not measured: <reason>", never empty axes."""
    trace = post.drift if post is not None and core.drift_not_measured(result, post) is None else None
    frc = post.frc if post is not None and core.frc_not_measured(result, post) is None else None
    drift = check = gr.update(value=None, visible=False)
    if trace is not None or frc is not None:
        from ..postprocess import drift_figure, write_drift

        title = f"{result.name}: drift (RCC)"
        drift = gr.update(value=_png(result, figure_to_array(drift_figure(trace, frc, title=title)), "drift_frc"),
                          visible=True)
        if trace is not None:
            files += [str(p) for p in write_drift(trace, Path(result.folder) / f"{safe_name(result.name)}_drift.csv")]
    if core.selfcheck_not_measured(result, post) is None:
        from ..postprocess import selfcheck_figure

        title = f"{result.name}: sigma self-check, consecutive frames of one blink (blind to errors its frames share)"
        check = gr.update(value=_png(result, figure_to_array(selfcheck_figure(post.selfcheck, title=title)),
                                     "selfcheck"), visible=True)
    return drift, check


def run_outputs(result: core.RunResult, window_px: int, header: str | None = None) -> tuple:
    """Everything a finished run puts on the page (module docstring), its files written first; last, the
    header line naming the camera the run used (``header``; unchanged when None)."""
    result.folder = str(run_folder())
    files = write_outputs(result, result.folder)
    post = core.stack_postprocess(result)
    drift, check = _postprocess_pictures(result, post, files)
    frame_update = gr.update(value=0, maximum=max(result.n_frames - 1, 1), visible=result.n_frames > 1,
                             interactive=result.n_frames > 1)
    s_mean, s_var = views.stack_images(result)
    s_var = (gr.update(value=_png(result, s_var, "uncertainty_sum"), visible=True) if s_var is not None
             else gr.update(value=None, visible=False))
    return (result, frame_update, views.status_markdown(result), *render_frame(result, 0, window_px),
            _png(result, s_mean, "super_resolved_sum"), s_var, files, drift, check, core.postprocess_note(result, post),
            gr.update() if header is None else header)


def cleared(message: str) -> tuple:
    """The state, status and downloads of a page whose last run is gone (a new run starts or one failed)."""
    return None, message, None


def _progress(progress):
    def report(fraction: float, message: str) -> None:
        progress(fraction, desc=message)
    return report


class Handlers:
    """The page's callbacks for one pipeline (``camera``: the upload tab's default and the simulations';
    ``model_name``: as the header names the model)."""

    def __init__(self, pipe, camera, model_name: str = "custom pipeline"):
        self.pipe, self.camera, self.model_name = pipe, camera, model_name

    def header(self, camera=None) -> str:
        """The header line for results made with ``camera`` (default: the model's, as before any run)."""
        cfg = self.pipe.kde_net.config
        return views.header_markdown(self.model_name, camera or self.camera, float(getattr(cfg, "psf_sigma_px", 1.0)),
                                     int(cfg.upsampling), self.camera)

    def simulate(self, photons, background, density, sigma_px, size, n_frames, structure, seed, num_samples, steps,
                 sample_seed, window_px, progress=gr.Progress()):
        try:
            seed, sample_seed = whole_seed(seed, "Simulation seed"), whole_seed(sample_seed, "Sampling seed")
            settings = inputs.SimulationSettings(photons, background, density, sigma_px, size, n_frames, structure,
                                                 seed)
            progress(0, desc="Simulating frames")
            frames, gt = inputs.simulate_frames(settings, self.camera)
            result = core.run_pipeline(self.pipe, frames, num_samples, steps, seed=sample_seed, camera=self.camera,
                                       ground_truth=gt, source="simulation", progress=_progress(progress),
                                       name=f"simulation_seed{seed}")
            progress(1.0, desc="Drawing the results")
            return run_outputs(result, window_px, self.header(result.camera))
        except Exception as err:  # every failure becomes a message; the server keeps serving
            raise user_error(err) from None

    def upload(self, file, offset, gain, pixel_size, read_noise, num_samples, steps, sample_seed, window_px,
               offset_map=None, variance_map=None, gain_map=None, progress=gr.Progress()):
        try:
            sample_seed = whole_seed(sample_seed, "Sampling seed")
            camera = inputs.check_camera(offset, gain, pixel_size, read_noise=read_noise)
            progress(0, desc="Reading the TIFF stack")
            frames = inputs.read_upload(file)
            # an sCMOS camera's per-pixel maps, if uploaded: they replace the fields of their kind
            camera = inputs.add_camera_maps(camera, frames.shape[1:], offset_map, variance_map, gain_map)
            warnings = inputs.check_camera_fits(frames, camera)
            result = core.run_pipeline(self.pipe, frames, num_samples, steps, seed=sample_seed, camera=camera,
                                       source=Path(file).name, progress=_progress(progress))
            result.warnings = warnings
            progress(1.0, desc="Drawing the results")
            return run_outputs(result, window_px, self.header(result.camera))
        except Exception as err:
            raise user_error(err) from None

    @staticmethod
    def _need(result):
        if result is None:
            raise gr.Error("Run a simulation or an upload first.", print_exception=False)

    def show_frame(self, result, frame, window_px):
        self._need(result)
        try:
            return render_frame(result, frame, window_px)
        except Exception as err:
            raise user_error(err) from None

    def zoom_crowded(self, result, frame, window_px):
        self._need(result)
        try:
            frame = _frame(result, frame)
            return zoom_outputs(result, frame, views.zoom_window(result, frame, window_px))
        except Exception as err:
            raise user_error(err) from None

    def zoom_at(self, result, frame, x_um, y_um, window_px):
        self._need(result)
        try:
            frame = _frame(result, frame)
            f, h, w = result.frames.shape
            a = result.camera.pixel_size_nm
            for label, v, n in (("Zoom centre x (µm)", x_um, w), ("Zoom centre y (µm)", y_um, h)):
                if v is None or not 0 <= float(v) <= n * a / 1000:
                    raise inputs.InputError(f"'{label}' must be between 0 and {n * a / 1000:g} µm (the frame), "
                                            f"got {v}.")
            return zoom_outputs(result, frame, views.zoom_window(result, frame, window_px,
                                                                 (float(x_um) * 1000, float(y_um) * 1000)))
        except Exception as err:
            raise user_error(err) from None

    def zoom_click(self, result, frame, window_px, evt: gr.SelectData):
        self._need(result)
        try:
            frame = _frame(result, frame)
            where = views.click_to_nm(result, frame, *evt.index[:2])
            window = views.zoom_window(result, frame, window_px, where)  # outside the image: the crowded region
            return zoom_outputs(result, frame, window)
        except Exception as err:
            raise user_error(err) from None

    def crlb_sweep(self, background, sigma_px, use_ddpm, num_samples, steps, sample_seed, progress=gr.Progress()):
        try:
            k = int(num_samples) if use_ddpm else 0
            if use_ddpm and k < 2:
                raise inputs.InputError("The DDPM mode of the sweep needs at least 2 samples: set 'DDPM samples "
                                        "per frame' to 2 or more.")
            inputs.check_sampling(k, steps, self.pipe)
            n_frames = inputs.SWEEP_FRAMES if k == 0 else inputs.SWEEP_FRAMES_DDPM

            def report(done, total):
                progress(done / total, desc=f"Photon sweep: {done} of {total} levels done")

            levels = inputs.SWEEP_PHOTONS
            table = core.rmse_crlb_sweep(self.pipe, levels, float(background), float(sigma_px), n_frames,
                                         num_samples=k, num_inference_steps=steps,
                                         seed=whole_seed(sample_seed, "Sampling seed"), progress=report)
            mode = (f"DDPM mean of {k} samples x {int(steps)} steps" if k else
                    "DeepSTORM + arbitration" if self.pipe.call_mode(0).arbitrate else "DeepSTORM only")
            p, curve = core.crlb_curve(float(background), float(sigma_px), self.camera, levels[0] / 1.5,
                                       levels[-1] * 1.5)
            title = (f"RMSE vs CRLB, isolated emitters: {mode}\n"
                     f"background {float(background):g} photons/px, PSF σ {float(sigma_px):g} px, "
                     f"{n_frames} frame{'s' if n_frames > 1 else ''} x 16 emitters per level")
            img = plot_rmse_vs_crlb(table["photons"].to_numpy(), table["rmse_nm"].to_numpy(), p, curve, title,
                                    ratio=table["ratio"].to_numpy())
            shown = table.rename(columns={"rmse_nm": "RMSE [nm]", "sqrt_crlb_nm": "√CRLB [nm]",
                                          "ratio": "RMSE/√CRLB", "n_gt": "emitters", "tp": "matched"}).round(3)
            return img, shown
        except Exception as err:
            raise user_error(err) from None
