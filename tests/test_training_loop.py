"""The one training loop of train/ (smlm_diffusers.training.loop), in process: steps, logs, checkpoints, budget."""

from dataclasses import dataclass

import pandas as pd
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from smlm_diffusers.training import CSVLogger, latest_checkpoint, train_loop


@dataclass
class LoopConfig:
    gradient_accumulation_steps: int = 2
    max_grad_norm: float = 1.0
    max_steps: int = 5
    max_minutes: float = 0.0
    checkpoint_every: int = 2
    checkpoints_total_limit: int = 2
    log_every: int = 1
    validate_every: int = 2


def _setup(tmp_path, cfg):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lr = get_scheduler("constant", optimizer)
    model, optimizer, lr = accelerator.prepare(model, optimizer, lr)
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.ones(16, 1)
    calls = []

    def loss_fn(step, micro):
        calls.append((step, micro))
        return torch.nn.functional.mse_loss(model(x), y)

    return accelerator, model, optimizer, lr, loss_fn, calls


def test_loop_steps_logs_validates_and_checkpoints(tmp_path):
    cfg = LoopConfig()
    accelerator, model, optimizer, lr, loss_fn, calls = _setup(tmp_path, cfg)
    logger = CSVLogger(tmp_path / "log.csv")
    validated = []
    step = train_loop(accelerator, cfg, model, optimizer, lr, loss_fn, 0, tmp_path / "ckpt",
                      validate=lambda s: validated.append(s) or {"metric": float(s)}, logger=logger)
    assert step == 5
    assert calls == [(s, m) for s in range(5) for m in range(2)]  # every micro-batch of every step, in order
    assert validated == [2, 4, 5]
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5] and log["loss"].is_monotonic_decreasing
    assert latest_checkpoint(tmp_path / "ckpt").name == "checkpoint-5"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint-4", "checkpoint-5"]


def test_loop_stops_when_the_time_budget_is_spent(tmp_path):
    cfg = LoopConfig(max_minutes=1e-9)
    accelerator, model, optimizer, lr, loss_fn, calls = _setup(tmp_path, cfg)
    step = train_loop(accelerator, cfg, model, optimizer, lr, loss_fn, 0, tmp_path / "ckpt")
    assert step == 1 and latest_checkpoint(tmp_path / "ckpt").name == "checkpoint-1"  # saved where it stopped
