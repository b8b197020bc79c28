"""The logic behind the web demo (``app.py``): runs of the pipeline, their results, metrics, the CRLB sweep.

``app.py`` only wires widgets to these functions. Everything here works without Gradio,
raises :class:`~smlm_diffusers.app.inputs.InputError` (a ``ValueError``) with a message meant
for the user on bad input, and follows docs/conventions.md: coordinates in nm, frames 0-based, ADU only
at the camera. Loading is in :mod:`~smlm_diffusers.app.model`, the checks of every input in
:mod:`~smlm_diffusers.app.inputs`; :mod:`smlm_diffusers.app` names them all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..defaults import APP_SAMPLES as DEFAULT_SAMPLES
from ..defaults import APP_STEPS as DEFAULT_STEPS
from ..fisher import crlb_at_truth, crlb_position_averaged
from ..localization import evaluate
from ..localization.crlb_uncertainty import add_crlb_uncertainty
from ..movie import localize_frames
from ..simulation import Camera, simulate
from .inputs import (GALLERY_SAMPLES, MAX_STORED_SAMPLE_VALUES, SWEEP_FRAMES, SWEEP_PHOTONS, check_sampling,
                     check_stack, check_work, frames_per_chunk)
from .model import _PIPE_LOCK, pipeline_camera
from .progress import report_steps
from .zoom import localize_samples


@dataclass
class RunResult:
    """Everything the app shows of one run (numpy arrays on the 4x KDE grid, nm tables).

    ``samples`` keeps at most :data:`GALLERY_SAMPLES` samples per frame, as float16 (for
    display only; ``kde_mean``/``kde_var`` come from all samples in float32), and
    ``sample_localizations`` their localizations (frame, sample, x_nm, y_nm) for the zoomed
    uncertainty view; ``kde_var`` is None in DeepSTORM mode (``num_samples == 0``), where the
    molecules' sigmas are the CRLB at their fitted photons and background, weighed against pair proposals
    when ``arbitrated`` (the folder's ``deepstorm_arbitrate``). ``name`` is the
    stem of the download files (the input file's, or ``simulation_seed<N>``).
    """

    frames: np.ndarray  # [F, H, W] ADU
    localizations: pd.DataFrame
    kde_mean: np.ndarray  # [F, uH, uW]
    kde_var: np.ndarray | None
    samples: np.ndarray | None  # [F, k <= GALLERY_SAMPLES, uH, uW]
    deepstorm_kde: np.ndarray
    camera: Camera
    upsampling: int
    num_samples: int
    num_inference_steps: int
    seed: int
    seconds: float
    ground_truth: pd.DataFrame | None = None
    source: str = "simulation"
    sum_mean: np.ndarray = field(init=False)
    sum_var: np.ndarray | None = field(init=False)
    sample_localizations: pd.DataFrame | None = None
    psf_sigma_px: float = 1.0
    name: str = "simulation"
    warnings: list = field(default_factory=list)  # camera check, shown with the status
    folder: str | None = None  # where this run's download and picture files are written
    arbitrated: bool = False  # DeepSTORM mode weighed its molecules against pair proposals (the pipeline's default)

    def __post_init__(self):
        self.sum_mean = self.kde_mean.sum(axis=0)
        self.sum_var = None if self.kde_var is None else self.kde_var.sum(axis=0)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def kde_pixel_nm(self) -> float:
        return self.camera.pixel_size_nm / self.upsampling

    @property
    def mode(self) -> str:
        if self.num_samples == 0:
            return "DeepSTORM + arbitration" if self.arbitrated else "DeepSTORM only"
        return f"DDPM, {self.num_samples} samples x {self.num_inference_steps} steps"

    @property
    def has_samples(self) -> bool:
        return self.num_samples > 0

    @property
    def has_probability(self) -> bool:
        """The molecules were weighed (DDPM mode or the arbitration): their probability says something."""
        return self.has_samples or self.arbitrated

    def frame_localizations(self, frame: int) -> pd.DataFrame:
        return self.localizations[self.localizations["frame"] == frame].reset_index(drop=True)

    def frame_ground_truth(self, frame: int) -> pd.DataFrame | None:
        if self.ground_truth is None:
            return None
        return self.ground_truth[self.ground_truth["frame"] == frame].reset_index(drop=True)


def run_pipeline(
    pipe,
    frames: np.ndarray,
    num_samples: int = DEFAULT_SAMPLES,
    num_inference_steps: int | None = DEFAULT_STEPS,
    seed: int = 0,
    camera: Camera | None = None,
    ground_truth: pd.DataFrame | None = None,
    source: str = "simulation",
    progress: Callable[[float, str], None] | None = None,
    name: str | None = None,
) -> RunResult:
    """Run the pipeline chunk by chunk, keeping what the app displays.

    The sampling noise comes from one ``torch.Generator`` seeded with ``seed``: same
    inputs and seed, same result. ``progress(fraction, message)`` is called after each chunk
    of frames and, with DDPM samples, after each diffusion step ("2 of 5 frames done; DDPM
    step 7 of 10, batch 1 of 2"). In DeepSTORM mode each molecule's sigma is the CRLB at the
    photons and background fitted on the frame
    (:func:`~smlm_diffusers.localization.crlb_uncertainty.add_crlb_uncertainty`).
    """
    frames = check_stack(frames)
    k, steps = check_sampling(num_samples, num_inference_steps, pipe)
    check_work(pipe, frames.shape, k, steps)
    optics = pipe.resolve_optics(None, camera or pipeline_camera(pipe))  # resolved once, passed as one value
    camera, psf = optics.camera, float(optics.psf.sigma_px)
    n = frames.shape[0]
    # samples kept for display: at most GALLERY_SAMPLES per frame, float16, bounded in all
    per_sample = n * frames.shape[1] * frames.shape[2] * int(pipe.kde_net.config.upsampling) ** 2
    keep = max(1, min(GALLERY_SAMPLES, MAX_STORED_SAMPLE_VALUES // max(per_sample, 1)))
    chunk = frames_per_chunk(pipe, frames.shape[1:], k)
    gen = torch.Generator().manual_seed(int(seed))
    locs, means, variances, samples, deepstorm, per_sample_locs = [], [], [], [], [], []
    t0 = time.perf_counter()
    what = "DDPM" if k else "DeepSTORM"

    def say(done: int, inner: float = 0.0, detail: str = "") -> None:
        if progress is not None:
            stop = min(done + chunk, n)
            progress((done + inner * (stop - done)) / n,
                     f"{what}: {done} of {n} frame{'s' if n > 1 else ''} done" + (f" · {detail}" if detail else ""))

    def crlb(found, windows, camera=camera):  # DeepSTORM mode: photometry and the CRLB on the raw frames
        return add_crlb_uncertainty(found, windows, camera, psf)

    say(0)
    for start in range(0, n, chunk):
        part = frames[start:start + chunk]

        def on_step(fraction, step, n_steps, batch, batches, start=start):
            more = f", batch {batch} of {batches}" if batches > 1 else ""
            say(start, fraction, f"DDPM step {step} of {n_steps}{more}")

        with _PIPE_LOCK, report_steps(pipe, max(steps, 1), on_step if k else None):
            # the movie runner's chunk step (tiles for large frames, bounded calls), as the CLI runs it
            out = localize_frames(pipe, part, start, num_samples=k, num_inference_steps=max(steps, 1),
                                  generator=gen, optics=optics, batch_size=64, keep_images=True,
                                  postprocess=None if k else crlb, sample_everywhere=True)
        locs.append(out.localizations)
        means.append(out.images["kde_mean"])
        deepstorm.append(out.images["deepstorm_kde"])
        if k > 0:
            variances.append(out.images["kde_var"])
            kept = out.images["samples"][:, :keep]
            samples.append(kept.astype(np.float16))
            sl = localize_samples(pipe, kept, camera.pixel_size_nm)
            sl["frame"] += start
            per_sample_locs.append(sl)
        say(min(start + chunk, n))
    seconds = time.perf_counter() - t0
    table = pd.concat(locs, ignore_index=True) if locs else pd.DataFrame()
    return RunResult(
        frames=frames,
        localizations=table,
        kde_mean=np.concatenate(means).astype(np.float32),
        kde_var=np.concatenate(variances).astype(np.float32) if k > 0 else None,
        samples=np.concatenate(samples) if k > 0 else None,
        deepstorm_kde=np.concatenate(deepstorm).astype(np.float32),
        camera=camera,
        upsampling=int(pipe.kde_net.config.upsampling),
        num_samples=k,
        num_inference_steps=steps,
        seed=int(seed),
        seconds=seconds,
        ground_truth=ground_truth,
        source=source,
        sample_localizations=pd.concat(per_sample_locs, ignore_index=True) if k > 0 else None,
        psf_sigma_px=psf,
        arbitrated=pipe.call_mode(k).arbitrate,
        name=name or (Path(source).stem if source != "simulation" else f"simulation_seed{int(seed)}"),
    )


# -- metrics ------------------------------------------------------------------------------
def run_metrics(result: RunResult, frame: int | None = None, tolerance_nm: float = 250.0) -> dict | None:
    """``smlm_diffusers.evaluate`` against the ground truth (one frame, or all with None)."""
    if result.ground_truth is None:
        return None
    gt, pred = result.ground_truth, result.localizations
    if frame is not None:
        gt, pred = result.frame_ground_truth(frame), result.frame_localizations(frame)
    return evaluate(gt[["frame", "x_nm", "y_nm"]], pred, tolerance_nm=tolerance_nm)




# -- drift and resolution of the stack --------------------------------------------------------------
DRIFT_MIN_FRAMES = 20  # below this, a stack is too short to cut into time segments for RCC
DRIFT_SEGMENTS = 5  # a stack is cut into about this many segments (the CLI's default is 200 frames each)


MIN_POSTPROCESS_ROWS = 10  # fewer molecules than this: neither drift nor FRC is attempted


def _kept(result: RunResult) -> pd.DataFrame:
    """The molecules the metrics and renders keep (probability >= 0.5 where there is one)."""
    locs = result.localizations
    return locs[locs["probability"] >= 0.5] if "probability" in locs else locs


def stack_postprocess(result: RunResult):
    """Drift (RCC, on uploaded stacks of at least :data:`DRIFT_MIN_FRAMES` frames), the sigma self-check
    (uploaded stacks) and FRC resolution of a run's localizations, as ``smlm-diffusers postprocess --undrift``
    measures them; measured, not applied to the table (:class:`~smlm_diffusers.postprocess.PostprocessResult`;
    None with fewer than :data:`MIN_POSTPROCESS_ROWS` molecules).

    The app's simulations have no drift and draw new molecules in every frame, so there is nothing for
    RCC to correlate between segments, nor a blink seen in two frames for the self-check: they get the FRC only.
    """
    from ..postprocess import postprocess_localizations

    locs = _kept(result)
    if len(locs) < MIN_POSTPROCESS_ROWS:
        return None
    upload = result.ground_truth is None
    undrift = result.n_frames >= DRIFT_MIN_FRAMES and upload
    return postprocess_localizations(locs, result.n_frames, link=False, undrift=undrift, frc=True,
                                     segment_frames=max(result.n_frames // DRIFT_SEGMENTS, 4),
                                     drift_uncertainty=False, selfcheck=upload and result.n_frames > 1,
                                     seed=result.seed)


def frc_not_measured(result: RunResult, post) -> str | None:
    """Why the stack's FRC resolution was not measured (the FRC result's ``reason``); None when it was."""
    if post is None:
        return f"too few localizations ({len(_kept(result))} < {MIN_POSTPROCESS_ROWS})"
    frc = post.frc
    if frc is None:
        return "not computed"
    reason = getattr(frc, "reason", None)
    if reason:
        return reason
    return None if math.isfinite(frc.resolution_nm) else "the FRC curve never falls below 1/7 (too few localizations)"


def drift_not_measured(result: RunResult, post) -> str | None:
    """Why the stack's drift was not measured (the trace's ``reason``, or why RCC was not run); None when it was."""
    if result.ground_truth is not None:
        return "simulations have none (upload a stack)"
    if result.n_frames < DRIFT_MIN_FRAMES:
        return f"needs at least {DRIFT_MIN_FRAMES} frames (this stack has {result.n_frames})"
    if post is None or post.drift is None:
        return f"too few localizations ({len(_kept(result))} < {MIN_POSTPROCESS_ROWS})"
    reason = getattr(post.drift, "reason", None)
    if reason:
        return reason
    if len(post.drift.segment_frames) < 2:
        return "too few localizations to cut this stack into time segments (RCC needs two or more)"
    return None


def selfcheck_not_measured(result: RunResult, post) -> str | None:
    """Why the sigma self-check (:func:`~smlm_diffusers.postprocess.sigma_selfcheck`) was not made (its
    ``reason``, or why it was not run); None when it was."""
    if result.ground_truth is not None:
        return "simulations draw new molecules in every frame, so no blink is seen twice (upload a stack)"
    if result.n_frames < 2:
        return f"needs a blink seen in consecutive frames (this stack has {result.n_frames} frame)"
    if post is None:
        return f"too few localizations ({len(_kept(result))} < {MIN_POSTPROCESS_ROWS})"
    check = getattr(post, "selfcheck", None)
    return "not computed" if check is None else (check.reason or None)


def postprocess_note(result: RunResult, post) -> str:
    """What the drift/FRC and self-check panels show, and for each part not measured, ``not measured:
    <reason>`` instead of a number or a plot."""
    frc_why, drift_why = frc_not_measured(result, post), drift_not_measured(result, post)
    frc = (f"FRC not measured: {frc_why}." if frc_why else
           f"FRC resolution **{post.frc.resolution_nm:.1f} nm** (of the localizations as found).")
    if drift_why:
        note = f"{frc} Drift not measured: {drift_why}."
    else:
        d = post.drift
        note = (f"{frc} Drift (RCC, {len(d.segment_frames)} segments): range x {np.ptp(d.x_nm):.1f} nm, "
                f"y {np.ptp(d.y_nm):.1f} nm. Measured, not applied to the table: "
                "`smlm-diffusers postprocess locs.csv --undrift --link` corrects and links a table.")
    check_why = selfcheck_not_measured(result, post)
    if check_why:
        return f"{note} Sigma self-check not measured: {check_why}."
    # the check's own sentence: coverage, robust std(z), and what it cannot see (errors a blink's frames share)
    line = post.selfcheck.line()
    return f"{note} {line[0].upper()}{line[1:]}."


# -- RMSE against the CRLB ---------------------------------------------------------------------
def rmse_crlb_sweep(
    pipe,
    photon_levels=SWEEP_PHOTONS,
    background: float = 20.0,
    sigma_px: float = 1.0,
    n_frames: int = SWEEP_FRAMES,
    num_samples: int = 0,
    num_inference_steps: int | None = DEFAULT_STEPS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Lateral RMSE and sqrt(CRLB_x + CRLB_y) over a photon sweep of isolated emitters.

    Returns a DataFrame with photons, rmse_nm, sqrt_crlb_nm, ratio (docs/conventions.md's RMSE/CRLB
    ratio), jaccard, n_gt, tp.
    """
    camera = pipeline_camera(pipe)
    rows = []
    levels = [float(p) for p in photon_levels]
    for i, p in enumerate(levels):
        frames, gt = simulate(n_frames=n_frames, shape=(64, 64), photons=p, background=background, sigma_px=sigma_px,
                              seed=int(seed) + 1000 * i, camera=camera, structure="grid")
        res = run_pipeline(pipe, frames, num_samples, num_inference_steps, seed=seed, camera=camera,
                           ground_truth=gt)
        cx, cy = crlb_at_truth(gt, sigma_px, camera)
        m = evaluate(gt, res.localizations[["frame", "x_nm", "y_nm"]], crlb_nm2=(cx, cy))
        rows.append({"photons": p, "rmse_nm": m["rmse_nm"], "sqrt_crlb_nm": math.sqrt(float(np.mean(cx + cy))),
                     "ratio": m.get("rmse_crlb_ratio", math.nan), "jaccard": m["jaccard"], "n_gt": m["n_gt"],
                     "tp": m["tp"]})
        if progress is not None:
            progress(i + 1, len(levels))
    return pd.DataFrame(rows)


def crlb_curve(background: float, sigma_px: float, camera: Camera, lo: float, hi: float, n: int = 40,
               n_sub: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(photons, sqrt(CRLB_x + CRLB_y) nm) on a log grid, averaged over sub-pixel positions."""
    photons = np.geomspace(lo, hi, n)
    return photons, crlb_position_averaged(photons, background, sigma_px, camera, n_sub)
