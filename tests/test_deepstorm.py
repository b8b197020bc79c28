"""The shipped DeepSTORM under bfloat16 autocast (the default) against float32."""

from pathlib import Path

import numpy as np
import pytest

import smlm_diffusers as sd
from smlm_diffusers.localization import evaluate, match

KDE_NET = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d" / "kde_net"


@pytest.mark.skipif(not KDE_NET.is_dir(), reason="the shipped weights are not in this checkout")
def test_bf16_localizes_like_float32():
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(KDE_NET.parent)
    net = pipe.kde_net.eval()
    frames, gt = sd.simulate(n_frames=8, shape=(48, 48), density=2.0, seed=11)
    fast = pipe(frames, num_samples=0, mixed_precision="bf16").localizations
    exact = pipe(frames, num_samples=0, mixed_precision="no").localizations
    assert evaluate(gt, fast)["jaccard"] == pytest.approx(evaluate(gt, exact)["jaccard"], abs=0.01)
    # the same molecules, moved by far less than the localization error (~10 nm)
    pairs = match(exact, fast, tolerance_nm=20.0)
    assert len(pairs) >= 0.98 * max(len(exact), len(fast))
    shift = np.hypot(pairs["dx"], pairs["dy"])
    assert np.median(shift) < 0.5 and shift.max() < 5.0
    with pytest.raises(ValueError, match="mixed_precision"):
        net.predict(frames, mixed_precision="fp16")
