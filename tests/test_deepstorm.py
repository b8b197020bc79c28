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
    # the network's precision, seen through the frame fit alone: the arbitration's discrete choice between a
    # molecule and a pair can flip on a bf16 rounding and move a row by a pair's separation
    fast = pipe(frames, num_samples=0, arbitrate=False, mixed_precision="bf16").localizations
    exact = pipe(frames, num_samples=0, arbitrate=False, mixed_precision="no").localizations
    assert evaluate(gt, fast)["jaccard"] == pytest.approx(evaluate(gt, exact)["jaccard"], abs=0.01)
    # the same molecules, moved by far less than the localization error (~10 nm)
    pairs = match(exact, fast, tolerance_nm=20.0)
    assert len(pairs) >= 0.98 * max(len(exact), len(fast))
    shift = np.hypot(pairs["dx"], pairs["dy"])
    assert np.median(shift) < 0.5 and shift.max() < 5.0
    with pytest.raises(ValueError, match="mixed_precision"):
        net.predict(frames, mixed_precision="fp16")


@pytest.mark.parametrize("head", ["resize_conv", "pixel_shuffle"])
def test_compiled_inference_is_the_module(head):
    """The frozen TorchScript copy (batch norm folded, conv + ReLU fused) gives the module's outputs, at any
    frame size, and follows the weights when they change; it never enters the state dict."""
    import torch

    torch.manual_seed(0)
    net = sd.DeepSTORM(context_channels=8, dilations=(1, 2), upsample_channels=(8, 4), prediction_channels=4,
                       head=head, head_channels=8)
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)
    net.prediction[-2 if head == "pixel_shuffle" else -1].bias.data.fill_(0.0)  # outputs inside the clamp
    for shape in ((24, 24), (13, 29)):
        frames, _ = sd.simulate(n_frames=3, shape=shape, density=2.0, seed=1)
        eager = net.predict(frames, compiled=False, mixed_precision="no")
        fast = net.predict(frames, mixed_precision="no")
        assert eager.abs().max() < 1.0 and eager.std() > 0  # not all on the clamp
        torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        net.stem[0].weight.mul_(1.5)
    torch.testing.assert_close(net.predict(frames, mixed_precision="no"),
                               net.predict(frames, compiled=False, mixed_precision="no"), atol=1e-5, rtol=1e-5)
    assert not any("inference" in k for k in net.state_dict())
