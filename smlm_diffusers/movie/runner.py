"""Whole movies: streamed in batches, checkpointed, split between processes, merged in order."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..defaults import DEFAULT_STEPS, model_steps
from .chunks import CALL_PIXELS, FORWARD_PIXELS, FORWARD_PIXELS_GPU, localize_frames
from .resume import MovieError, WorkFolder, batch_seed, empty_localizations
from .sink import LocalizationWriter


class SingleProcess:
    """The interface of ``accelerate.PartialState`` that the runner uses, for one process."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def split_between_processes(self, items):
        return nullcontext(items)


@dataclass
class MovieRun:
    """What :func:`localize_movie` did; the main process merges and writes from it.

    ``frames_total`` frames are in the input, ``frames_run`` were asked for (``max_frames``),
    ``frames_new`` processed by this process now in ``seconds``.
    """

    work: WorkFolder
    frames_total: int
    frames_run: int
    height: int
    width: int
    upsampling: int
    with_variance: bool
    frames_new: int
    seconds: float
    is_main_process: bool = True
    localizations_written: int | None = None
    _render: tuple | None = field(default=None, repr=False)
    _rejected: dict | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether the whole input is done (not cut short by ``max_frames``)."""
        return self.frames_run == self.frames_total

    @property
    def frames_per_second(self) -> float:
        return self.frames_new / self.seconds if self.seconds > 0 else float("nan")

    def render(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The KDE summed over all frames run (float64 [uH, uW]) and, with samples, its variance."""
        if self._render is None:
            shape = (self.height * self.upsampling, self.width * self.upsampling)
            self._render = self.work.merge_render(shape, self.with_variance)
        return self._render[0], self._render[1]

    @property
    def rejected(self) -> dict[str, int]:
        """Rows left out of the table because their numbers were impossible, by reason
        (:mod:`smlm_diffusers.screening`), over every frame run (read once: :meth:`finish` may
        delete the checkpoints)."""
        if self._rejected is None:
            self._rejected = self.work.rejected()
        return self._rejected

    def iter_localizations(self) -> Iterator[pd.DataFrame]:
        """The localizations of every frame run, in frame order, one batch at a time."""
        return self.work.iter_localizations()

    def localizations(self) -> pd.DataFrame:
        """All localizations as one table (for short movies; else :meth:`iter_localizations`)."""
        tables = list(self.iter_localizations())
        return pd.concat(tables, ignore_index=True) if tables else empty_localizations()

    def write_table(self, path, **kwargs) -> list[Path]:
        """Stream the localizations into a table file (:class:`LocalizationWriter` arguments);
        returns the files written and sets :attr:`localizations_written`."""
        with LocalizationWriter(path, **kwargs) as out:
            for table in self.iter_localizations():
                out.write(table)
            if out.rows == 0:
                out.write(empty_localizations())
            paths = out.close()
        self.localizations_written = out.rows
        return paths

    def finish(self) -> None:
        """Delete the checkpoints once the whole input is done; else record what they cover."""
        if self.complete:
            shutil.rmtree(self.work.folder, ignore_errors=True)
        else:
            self.render()
            self.work.set_frames_done(int(self._render[2]))


def _plain(obj):
    """JSON types only (as read back from progress.json)."""
    return json.loads(json.dumps(obj, default=str))


def run_signature(pipe, source_info: dict, options: dict, model_id: str | None) -> dict:
    """What the results depend on: the model, the options and the input (compared on resume)."""
    ddpm = options.get("num_samples", 0) > 0
    model = {"location": model_id, "kde_net": dict(pipe.kde_net.config),
             "unet": dict(pipe.unet.config) if ddpm else None,
             "pipeline": {k: v for k, v in dict(pipe.config).items() if not k.startswith("_")}}
    return _plain({"model": model, "options": options, "stack": source_info})


def _frame_source(stack):
    """(shape, source description, reader of ranges) of a TIFF path or an in-memory [F, H, W] array."""
    from ..io.tiff import iter_tiff_frames, tiff_shape

    if isinstance(stack, (str, os.PathLike)):
        path = Path(stack)
        try:
            shape = tiff_shape(path)
        except ValueError as err:
            raise MovieError(str(err)) from None
        st = path.stat()
        info = {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                "frames": shape[0], "height": shape[1], "width": shape[2]}

        def read(ranges):
            try:
                yield from iter_tiff_frames(path, ranges=ranges)
            except ValueError as err:
                raise MovieError(str(err)) from None

        return shape, info, read
    if not (hasattr(stack, "shape") and len(stack.shape) == 3):
        raise MovieError("the movie must be a TIFF path or an array [frames, H, W]")
    shape = tuple(int(s) for s in stack.shape)
    info = {"array": list(shape), "dtype": str(getattr(stack, "dtype", "")), "frames": shape[0],
            "height": shape[1], "width": shape[2]}
    return shape, info, lambda ranges: (np.asarray(stack[a:b], dtype=np.float32) for a, b in ranges)


def localize_movie(
    pipe, stack, work_folder: str | os.PathLike, *,
    num_samples: int = 0, num_inference_steps: int | None = DEFAULT_STEPS, batch_size: int = 32, seed: int = 0,
    camera=None, optics=None, threshold: float | None = None, min_probability: float | None = None,
    mixed_precision: str = "auto", sparse_windows: bool | None = None, arbitrate: bool | None = None,
    tile_size: int = 256, tile_margin: int = 16, call_pixels: int = CALL_PIXELS, forward_pixels: int | None = None,
    max_frames: int | None = None, restart: bool = False, state=None,
    postprocess: Callable[[pd.DataFrame, np.ndarray], pd.DataFrame] | None = None,
    signature: dict | None = None, model_id: str | None = None, progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
) -> MovieRun:
    """Localize a whole movie in bounded memory, resumably, on one or several processes.

    The movie is read ``batch_size`` frames at a time (a TIFF page by page: never the whole
    stack), each batch goes through :func:`~smlm_diffusers.movie.chunks.localize_frames`
    (tiles for large frames, calls of at most ``call_pixels`` camera pixels), and is
    committed to ``work_folder`` (:class:`~smlm_diffusers.movie.resume.WorkFolder`): its
    localizations appended to a CSV, its KDE added to the render. Run again with the same
    arguments after an interruption, it does only the batches not committed, and the merged
    results are identical to an uninterrupted run's (each batch's sampling noise is seeded
    from ``seed`` and the batch index). Under ``accelerate launch`` / ``torchrun`` pass
    ``state=accelerate.PartialState()``: the batches are split between the processes and the
    main one merges them in frame order.

    Parameters
    ----------
    pipe : SMLMDiffusionPipeline
    stack : str, path-like or array [F, H, W]
        A grey-level TIFF movie (raw ADU), or frames in memory (or a memory map).
    work_folder : str or path-like
        Checkpoint folder (created; reused when compatible, else cleared with a message).
    num_samples, num_inference_steps, threshold, min_probability, mixed_precision, arbitrate
        The pipeline's arguments; ``num_samples=0`` is DeepSTORM mode, with the arbitration of its pair
        proposals where ``arbitrate`` (None: the folder's ``deepstorm_arbitrate``) says so;
        ``num_inference_steps=None`` is the folder's ``default_inference_steps``.
    batch_size : int
        Frames per batch (the unit of checkpoints and seeds), and the pipeline's batch size.
    seed, camera : int, Camera (optional)
        Seed of the sampling noise; the frames' camera (replacing the camera of ``optics``).
    optics : Optics, optional
        The frames' camera + PSF, default the folder's (``pipe.resolve_optics``): resolved once, passed to every
        call, and recorded in the checkpoint's signature (a run resumed under other optics starts again).
    sparse_windows : bool, optional
        DeepSTORM mode: the network only around candidate spots of sparse frames (the pipeline's
        argument; default the folder's ``sparse_windows``).
    tile_size, tile_margin, call_pixels, forward_pixels
        Tiling and memory bounds (:func:`~smlm_diffusers.movie.chunks.localize_frames`).
    max_frames, restart : int (optional), bool
        Run only the first frames (partial results are kept to continue later); discard compatible
        partial results too.
    state : accelerate.PartialState, optional
        Several processes (default one).
    postprocess : callable, optional
        ``postprocess(localizations, windows)`` per pipeline call (describe it in ``signature``).
    signature, model_id : dict, str (optional)
        More of what the results depend on (compared on resume), e.g. the postprocessing; the model's
        location, recorded in the checkpoint's signature.
    progress, on_progress, log
        A progress bar (frames/s, time left) on stderr; ``on_progress(frames_done, frames_run)`` after each
        batch; ``log(message)`` receives messages (resuming, discarded partial results).

    Returns
    -------
    MovieRun
        On the main process: :meth:`~MovieRun.render`, :meth:`~MovieRun.iter_localizations`,
        :meth:`~MovieRun.write_table`, then :meth:`~MovieRun.finish`.
    """
    state = state or SingleProcess()
    log = log or (lambda message: None)
    optics = pipe.resolve_optics(optics, camera)
    (total, height, width), source_info, read = _frame_source(stack)
    run_frames = total if max_frames is None else min(total, int(max_frames))
    bs = int(batch_size)
    ddpm = num_samples > 0
    options, call = _options_and_call(pipe, optics, num_samples, num_inference_steps, bs, seed, threshold,
                                      min_probability, mixed_precision, sparse_windows, arbitrate, tile_size,
                                      tile_margin, call_pixels, forward_pixels, postprocess)
    full_signature = run_signature(pipe, source_info, options | {"extra": signature or {}}, model_id)

    work = WorkFolder(work_folder, state.process_index)
    mine, n_done = _claim_batches(work, state, full_signature, restart, run_frames, bs, total, log)
    own = work.load_own()
    ranges = [(b * bs, min((b + 1) * bs, run_frames)) for b in mine]
    n_new = sum(b - a for a, b in ranges)
    bar = _progress_bar(progress, n_new, num_samples, state)
    t0, now = time.perf_counter(), 0
    try:
        for frames_now in _run_batches(pipe, read, mine, ranges, bs, total, seed, call, work, own):
            bar.update(frames_now)
            now += frames_now
            if on_progress is not None:
                on_progress(n_done + now, run_frames)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    state.wait_for_everyone()
    return MovieRun(work, total, run_frames, height, width, int(pipe.kde_net.config.upsampling), ddpm, n_new,
                    seconds, state.is_main_process)


def _claim_batches(work, state, signature, restart, run_frames, bs, total, log) -> tuple[list[int], int]:
    """Prepare the work folder (main process), then this process's share of the batches not yet committed,
    and the frames already done."""
    if state.is_main_process:
        work.prepare(signature, restart, run_frames, bs, log)
    state.wait_for_everyone()
    done = work.committed_batches()
    state.wait_for_everyone()  # every process has read the same committed set before anyone commits
    todo = [b for b in range(math.ceil(run_frames / bs)) if b not in done]
    n_done = sum(min((b + 1) * bs, total) - b * bs for b in done)
    if done and state.is_main_process:
        log(f"resuming from {work.folder}: {n_done} of {run_frames} frames already done")
    with state.split_between_processes(todo) as mine:
        return list(mine), n_done


def _options_and_call(pipe, optics, num_samples, num_inference_steps, bs, seed, threshold, min_probability,
                      mixed_precision, sparse_windows, arbitrate, tile_size, tile_margin, call_pixels, forward_pixels,
                      postprocess) -> tuple[dict, dict]:
    """The options a checkpoint records (defaults resolved: what ran; the mode by name, so that a run resumed
    in another mode, such as one begun under the earlier default, DDPM mode, starts again with a message) and the
    arguments of every :func:`~smlm_diffusers.movie.chunks.localize_frames` call."""
    ddpm = num_samples > 0
    mode = pipe.call_mode(num_samples, None if ddpm else arbitrate)
    if forward_pixels is None:
        forward_pixels = FORWARD_PIXELS if pipe.device.type == "cpu" else FORWARD_PIXELS_GPU
    options = {"mode": mode.name, "num_samples": int(num_samples), "batch_size": bs,
               "seed": int(seed), "threshold": threshold, "mixed_precision": mixed_precision,
               "optics": optics.to_dict(), "tile_size": int(tile_size), "tile_margin": int(tile_margin),
               "call_pixels": int(call_pixels), "forward_pixels": int(forward_pixels)}
    call = dict(num_samples=int(num_samples), optics=optics, tile_size=tile_size, tile_margin=tile_margin,
                batch_size=bs, call_pixels=call_pixels, forward_pixels=forward_pixels, postprocess=postprocess,
                threshold=threshold, mixed_precision=mixed_precision)
    if ddpm:  # None is the folder's default number of steps
        steps = model_steps(pipe, num_inference_steps)
        options |= {"num_inference_steps": steps, "min_probability": min_probability}
        call |= dict(num_inference_steps=steps, min_probability=min_probability)
    else:
        sparse = bool(pipe.config.sparse_windows if sparse_windows is None else sparse_windows)
        options["sparse_windows"] = call["sparse_windows"] = sparse
        call["arbitrate"] = mode.arbitrate
        if mode.arbitrate:  # its molecules carry a detection probability
            options["min_probability"] = call["min_probability"] = min_probability
    return options, call


def _run_batches(pipe, read, mine, ranges, bs, total, seed, call, work, own):
    """Localize this process's batches, committing each (a batch cut short by ``max_frames`` is written as
    the tail); yields the frames of each batch when it is done."""
    reader = read(ranges)  # (not zipped: zip would hold the previous batch while reading the next)
    for b, (start, stop) in zip(mine, ranges):
        frames = next(reader)
        gen = _generator(seed, b) if call["num_samples"] > 0 else None
        res = localize_frames(pipe, frames, start, generator=gen, **call)
        if stop == min((b + 1) * bs, total):
            work.commit(own, b, stop - start, res.localizations, res.kde_sum, res.kde_var, res.rejected)
        else:  # cut short by max_frames: not a complete batch of the movie
            work.write_tail(b, res.localizations, res.kde_sum, res.kde_var, res.rejected)
        del frames, res  # hold one batch, not two, while the next one is read
        yield stop - start


def _generator(seed: int, batch: int):
    import torch

    return torch.Generator().manual_seed(batch_seed(seed, batch))


def _progress_bar(enabled: bool, total: int, num_samples: int, state):
    from tqdm.auto import tqdm

    mode = "ddpm" if num_samples > 0 else "deepstorm"
    where = f" [process {state.process_index + 1}/{state.num_processes}]" if state.num_processes > 1 else ""
    return tqdm(total=total, unit="frame", desc=f"localize ({mode}){where}", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)
