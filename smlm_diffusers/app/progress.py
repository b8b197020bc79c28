"""One progress report per run, in frames and diffusion steps, from the pipeline's own step counter.

The pipeline counts its reverse-diffusion steps with ``self.progress_bar(total=...)``
(diffusers' idiom: one ``update()`` per UNet pass of a batch of tiles). :func:`report_steps`
swaps that bar, for one call, for a counter that turns each step into
``callback(fraction_of_the_call, step, steps, batch, batches)``, so the app can say
"frames 2 of 5 done; DDPM step 7 of 10 (batch 1 of 2)" instead of drawing tqdm's bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable


class _StepCounter:
    """The part of tqdm the pipeline uses: a context manager with ``update()``."""

    def __init__(self, total: int | None, steps: int, callback: Callable):
        self.total, self.steps, self.callback, self.n = int(total or 0), max(int(steps), 1), callback, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total <= 0:
            return
        batches = max(1, self.total // self.steps)
        batch, step = divmod(self.n - 1, self.steps)
        self.callback(min(self.n / self.total, 1.0), step + 1, self.steps, min(batch + 1, batches), batches)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def report_steps(pipe, num_inference_steps: int, callback: Callable | None):
    """Within the block, ``pipe``'s diffusion steps call ``callback(fraction, step, steps, batch, batches)``.

    ``steps`` is ``num_inference_steps`` (the scheduler's timesteps per batch of tiles), a
    batch is one group of tiles x samples denoised together. Callers hold the pipeline's lock:
    the pipeline object is shared by all requests.
    """
    if callback is None:
        yield
        return
    pipe.progress_bar = lambda iterable=None, total=None: _StepCounter(total, num_inference_steps, callback)
    try:
        yield
    finally:
        del pipe.progress_bar  # the class's method again
