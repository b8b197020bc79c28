"""Why the per-molecule sigmas have heavy tails at high density: two diagnostics on DeepSTORM.

    python -m benchmarks.crowding [--model pretrained/smlm-ddpm-2d] [--density 4] [--frames 6]

DeepSTORM localizes simulated 64x64 frames (2000 photons, background 20, seed 4243); its
molecules are matched to the ground truth (the DDPM's molecules are on par with these, README).
For each match it reports:

1. **Goodness of fit.** The photometry fit (:mod:`smlm_diffusers.localization.photometry`) with
   the localized positions; the mean of (data - model)^2 / (model + read_noise^2) over the 5x5
   pixels around the molecule. An unresolved pair fitted as one emitter should fit worse. The
   table gives the share of large errors (> 30 nm) and of the others it flags.
2. **Crowded CRLB.** The Cramer-Rao bound of x, y when the neighbours within 3 px (true
   positions and photons) are estimated too (x, y, photons of every emitter plus one
   background), against the isolated bound the sigma model uses. Errors over either bound: the
   1-sigma coverage (ideal 0.683) and std.

It prints both tables; nothing is written.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

import smlm_diffusers as sd
from smlm_diffusers.fisher import crlb_at_truth
from smlm_diffusers.localization import match
from smlm_diffusers.localization.photometry import fit_frame
from smlm_diffusers.optics.gaussian import integrated_gaussian, render_psfs

from .model_localizers import DEFAULT_MODEL


def crowded_crlb(xs, ys, photons, background, k, sigma_px, camera, radius_px=3.0, pad_px=4):
    """CRLB_x, CRLB_y (nm^2) of emitter ``k`` with its neighbours within ``radius_px`` as nuisance
    parameters (positions in pixels, edge convention; Poisson-normal Fisher information)."""
    near = np.hypot(xs - xs[k], ys - ys[k]) < radius_px
    idx = np.r_[k, np.flatnonzero(near & (np.arange(len(xs)) != k))]
    x, y, n = xs[idx], ys[idx], photons[idx]
    x0, y0 = int(np.floor(x.min())) - pad_px, int(np.floor(y.min())) - pad_px
    w, h = int(np.ceil(x.max())) + pad_px - x0, int(np.ceil(y.max())) + pad_px - y0
    tx, ty = torch.tensor(x - x0), torch.tensor(y - y0)
    ex, dx, _ = (v.numpy() for v in integrated_gaussian(tx, w, sigma_px, derivatives=True))
    ey, dy, _ = (v.numpy() for v in integrated_gaussian(ty, h, sigma_px, derivatives=True))
    mu = np.einsum("e,eh,ew->hw", n, ey, ex) + background
    grads = [g for j in range(len(idx)) for g in (n[j] * np.outer(ey[j], dx[j]), n[j] * np.outer(dy[j], ex[j]),
                                                  np.outer(ey[j], ex[j]))]
    jac = np.stack([g.ravel() for g in grads] + [np.ones(h * w)], axis=1)
    info = jac.T @ (jac / (mu.ravel() + camera.read_noise**2)[:, None])
    inv = np.linalg.pinv(info)
    return inv[0, 0] * camera.pixel_size_nm**2, inv[1, 1] * camera.pixel_size_nm**2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--density", type=float, default=4.0)
    p.add_argument("--frames", type=int, default=6)
    args = p.parse_args(argv)
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(args.model)
    net = pipe.kde_net
    camera, sigma_px = net.camera, net.config.psf_sigma_px
    a = camera.pixel_size_nm
    frames, gt = sd.simulate(n_frames=args.frames, shape=(64, 64), density=args.density, photons=2000.0,
                             background=20.0, sigma_px=sigma_px, seed=4243, camera=camera)
    locs = pipe.localize_density(pipe.kde_scaling.from_unit(net.predict(frames, camera=camera)), a)
    rows = []
    for f in range(len(frames)):
        g = gt[gt["frame"] == f].reset_index(drop=True)
        m = locs[locs["frame"] == f].reset_index(drop=True)
        electrons = camera.adu_to_photons(np.asarray(frames[f], np.float64))
        x, y = m["x_nm"].to_numpy() / a, m["y_nm"].to_numpy() / a
        n, _, bg = fit_frame(electrons, x, y, sigma_px, camera.read_noise)
        model = render_psfs(torch.tensor(x)[None], torch.tensor(y)[None], torch.tensor(n)[None], electrons.shape,
                            sigma_px)[0].numpy() + bg
        chi2 = (electrons - model) ** 2 / (model + camera.read_noise**2)
        gx, gy, gn = g["x_nm"].to_numpy() / a, g["y_nm"].to_numpy() / a, g["photons"].to_numpy()
        iso_x, iso_y = crlb_at_truth(g, sigma_px, camera)
        for _, pair in match(g, m).iterrows():
            i, k = int(pair["pred_index"]), int(pair["gt_index"])
            r, c = int(y[i]), int(x[i])
            cx, cy = crowded_crlb(gx, gy, gn, g["background"].iloc[k], k, sigma_px, camera)
            rows.append({"dx": pair["dx"], "dy": pair["dy"], "chi2": chi2[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].mean(),
                         "iso_x": iso_x[k], "iso_y": iso_y[k], "crowd_x": cx, "crowd_y": cy})
    d = pd.DataFrame(rows)
    large = np.hypot(d["dx"], d["dy"]) > 30.0
    print(f"DeepSTORM, density {args.density:g}, {args.frames} frames: {len(d)} matches, {large.sum()} with error > 30 nm\n")
    print(pd.DataFrame([{"chi2 above": t, "share of errors > 30 nm flagged": (d["chi2"][large] > t).mean(),
                         "share of the others flagged": (d["chi2"][~large] > t).mean()} for t in (1.5, 2.0, 3.0)]
                       ).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    table = []
    for name in ("iso", "crowd"):
        z = np.r_[d["dx"] / np.sqrt(d[f"{name}_x"]), d["dy"] / np.sqrt(d[f"{name}_y"])]
        table.append({"bound": {"iso": "isolated CRLB", "crowd": "crowded CRLB"}[name],
                      "coverage of 1 sigma": np.mean(np.abs(z) <= 1), "std(z)": z.std()})
    print("\n" + pd.DataFrame(table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
