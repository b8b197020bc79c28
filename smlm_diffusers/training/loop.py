"""The one training loop of ``train/``: accumulate, clip, step, EMA, log, validate, checkpoint, time budget.

Both scripts build their model, optimizer and data, then hand :func:`train_loop` a
``loss_fn(step, micro) -> loss`` (one micro-batch of optimizer step ``step``: its data must
depend only on those two numbers and the process, so that a resumed run sees the same
stream). The loop follows diffusers' training examples: ``accelerator.accumulate``, gradient
clipping on ``sync_gradients``, ``EMAModel.step`` after each optimizer step, ``save_state``
with rotation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm.auto import tqdm

from .utils import finish_step, save_checkpoint


def out_of_time(accelerator, t0: float, max_minutes: float) -> bool:
    """Whether the time budget is spent: the main process's clock decides for all of them."""
    if max_minutes and time.time() - t0 > 60 * max_minutes and accelerator.is_main_process:
        accelerator.set_trigger()
    return bool(accelerator.check_trigger())


def train_loop(accelerator, cfg, model, optimizer, lr_scheduler, loss_fn: Callable, step: int, ckpt_dir,
               ema=None, validate: Callable[[int], dict] | None = None, logger=None, desc: str = "train",
               validate_at_stop: bool = False) -> int:
    """Optimizer steps from ``step`` to ``cfg.max_steps`` (or until ``cfg.max_minutes`` are spent).

    Parameters
    ----------
    cfg
        The script's config: ``gradient_accumulation_steps``, ``max_grad_norm``, ``max_steps``,
        ``max_minutes`` (0: no budget), ``checkpoint_every``, ``checkpoints_total_limit``,
        ``log_every``, ``validate_every``.
    loss_fn : callable
        ``loss_fn(step, micro)``: the loss of micro-batch ``micro`` of step ``step`` (a tensor).
    ema : diffusers.training_utils.EMAModel, optional
        Stepped after each optimizer step.
    validate : callable, optional
        ``validate(step) -> dict`` of metrics, on the main process every ``cfg.validate_every`` steps.
    logger : CSVLogger, optional
        Gets every logged row (main process).
    validate_at_stop : bool
        Also validate when the time budget stops the run between two ``validate_every`` steps,
        so that every sitting ends with a validation row.

    Returns
    -------
    int
        The last step done; a checkpoint of it is saved.
    """
    model.train()
    progress = tqdm(total=cfg.max_steps, initial=step, desc=desc, disable=not accelerator.is_local_main_process)
    t0, running = time.time(), []
    max_minutes = float(getattr(cfg, "max_minutes", 0) or 0)
    while step < cfg.max_steps:
        for micro in range(cfg.gradient_accumulation_steps):
            with accelerator.accumulate(model):
                loss = loss_fn(step, micro)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            running.append(loss.item())
        if ema is not None and accelerator.sync_gradients:
            ema.step(model.parameters())
        step += 1
        progress.update(1)
        validation = (lambda s=step: validate(s)) if validate is not None and accelerator.is_main_process else None
        row = finish_step(step, cfg, running, lr_scheduler.get_last_lr()[0], t0, progress, validation)
        if row and logger:
            logger.log(row)
        stop = out_of_time(accelerator, t0, max_minutes)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stop:
            save_checkpoint(accelerator, ckpt_dir, step, cfg.checkpoints_total_limit)
        if stop and validate_at_stop and validation is not None and step % cfg.validate_every and step != cfg.max_steps:
            row = {"step": step} | validation()
            if logger:
                logger.log(row)
        if stop:
            accelerator.print(f"time budget of {max_minutes:g} min spent: stopping at step {step}")
            break
    progress.close()
    return step
