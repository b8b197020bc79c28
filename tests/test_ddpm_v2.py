"""The camera-resolution (v2) DDPM on simulated molecules: tile seams are invisible.

It runs on ``pretrained/smlm-ddpm-2d``, the shipped v2 model."""

from pathlib import Path

import numpy as np
import pytest
import torch

import smlm_diffusers as sd
from smlm_diffusers.models.layout import layout_of
from smlm_diffusers.simulation.emitters import Emitters

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "smlm-ddpm-2d"


@pytest.fixture(scope="module")
def pipe():
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(SHIPPED)
    assert layout_of(pipe.unet.config) == "camera", "the v2 folder holds a camera-layout DDPM"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frames(xs, ys, photons=2000.0, shape=(48, 48), seed=0):
    xs, ys = torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.float32)
    em = Emitters(x_px=xs, y_px=ys, photons=torch.full_like(xs, photons), mask=torch.ones_like(xs, dtype=torch.bool))
    return sd.FrameSimulator(shape, sd.Camera(), 1.0, 20.0).render(em, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_molecule_on_a_tile_seam_is_localized_like_one_in_a_tile_centre(pipe):
    """48x48 frames in 32-pixel tiles with 8 of margin: the tiles' cores meet at x = 16 and 32 px.
    Each frame holds one molecule on the seam x = 16 and one in the middle of a core (x = 40);
    both must be found in every frame, as precisely as each other (positions from the samples alone,
    no refinement on the frame)."""
    n = 24
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.3, 0.3, (n, 2, 2))
    xs = np.array([16.0, 40.0])[None] + jitter[..., 0]
    ys = np.array([12.0, 36.0])[None] + jitter[..., 1]
    frames = _frames(xs, ys).frames_adu.numpy()
    tiled = sd.SMLMDiffusionPipeline.from_pretrained(SHIPPED, tile_size=32, tile_overlap=8)
    tiled.set_progress_bar_config(disable=True)
    assert len(tiled.tile_layout(48, 48)[1]) == 9  # 3 x 3 tiles: the seams are really there
    a = pipe.kde_net.config.pixel_size_nm
    errors = {}
    for name, p in (("whole", pipe), ("tiled", tiled)):
        locs = p(frames, num_samples=4, num_inference_steps=4, refine=False,
                 generator=torch.Generator().manual_seed(0)).localizations
        for k, where in enumerate(("seam", "centre")):
            gt_x, gt_y = xs[:, k] * a, ys[:, k] * a
            err = []
            for f in range(n):
                m = locs[locs["frame"] == f]
                d = np.hypot(m["x_nm"] - gt_x[f], m["y_nm"] - gt_y[f])
                assert len(d) and d.min() < 60.0, f"{name}: the {where} molecule of frame {f} was missed"
                err.append(d.min())
            errors[name, where] = float(np.sqrt(np.mean(np.square(err))))
    # on a seam as in a tile's centre, tiled as in one whole tile (2000 photons: about 6 nm of CRLB)
    assert errors["tiled", "seam"] <= 1.3 * errors["tiled", "centre"] + 2.0, errors
    assert errors["tiled", "seam"] <= 1.3 * errors["whole", "seam"] + 2.0, errors
    assert max(errors.values()) < 20.0, errors
