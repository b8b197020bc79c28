"""Mixed precision that pays off: bfloat16 autocast only where the hardware runs it natively.

On a CPU without bfloat16 instructions (no AVX512-BF16 or AMX) oneDNN emulates bf16, and
autocast made DeepSTORM 2-3x *slower* than float32 (measured here on an AVX512 Xeon without
``avx512_bf16``); on CPUs with them it was 2-4x faster. ``"auto"`` chooses per device.
"""

from __future__ import annotations

import functools

import torch

MIXED_PRECISION_CHOICES = ("auto", "bf16", "no")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:  # not Linux: assume emulation, float32 is the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(mixed_precision: str, device: torch.device | str) -> bool:
    """Whether to run under bfloat16 autocast for ``mixed_precision`` on ``device``."""
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision == "bf16"
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_native_bf16()
