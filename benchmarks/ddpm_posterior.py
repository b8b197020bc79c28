"""The DDPM's samples as a posterior: how often they hold each true emitter, whether they propose what the
arbitration misses, and whether the share of samples that hold a molecule is a probability.

    python -m benchmarks.ddpm_posterior [--frames 3] [--densities 2,4] [--samples 8,16,32] [--steps 4,16]
                                        [--label before] [--model pretrained/smlm-ddpm-2d] [--out benchmarks/results]
                                        [--threads 1]
    python -m benchmarks.ddpm_posterior --quick      # 1 frame, 2000 photons, density 1, K 2, 1 step; writes nothing
                                                     # unless --out is given

For each signal level (2000 photons / background 20 and 1000 / 50) and density, ``--frames`` simulated 64x64
frames (108 nm pixels, PSF sigma 1 px; seeds 7500 + ..., independent of the training and tuning seeds and of
``benchmarks.dense``'s 7100 + ...) are first localized in DeepSTORM mode with the pair arbitration
(``deepstorm_arbitrate=True``, ``num_samples=0``); its molecules with probability >= 0.5 are the *existing
molecules*, and the true emitters it leaves unmatched (Hungarian per frame, 60 nm) are its *misses*. Then, for
each K in ``--samples`` and each step count in ``--steps``, K posterior samples are drawn over the whole of
every frame (DDPM mode's ``sample_everywhere=True``:
:meth:`~smlm_diffusers.pipelines.ddpm.DDPMSampling.sample_residuals` on every non-empty tile) and localized
one by one as DDPM mode localizes them
(:meth:`~smlm_diffusers.pipelines.ddpm.DDPMSampling.sample_detections`: the draws as drawn, DeepSTORM's estimate
plus the residual). With "within 60 nm" the link radius of DDPM mode (``link_radius_nm``):

- ``sample_hit``: per true emitter, the share of the K samples holding a detection within 60 nm of it, averaged
  over the emitters; ``hit_crowded`` / ``hit_isolated`` the same over the emitters with / without another true
  emitter within 300 nm;
- ``proposal_recall``: over the arbitration's misses (``missed`` of them in all), the share for which some sample
  has a detection within 60 nm of the emitter that is not within 60 nm of any existing molecule (a *new*
  detection); ``missed_hit``: the share for which some sample has any detection within 60 nm (new or not);
  ``missed_apart``: the share of the misses with no existing molecule within 60 nm (the others sit beside one, so
  a new detection must fall on their far side);
- ``ece``: the samples' detections are linked across samples into clusters (sample by sample, Hungarian against
  the clusters' mean positions within 60 nm, one detection per sample and cluster); a cluster's frequency is
  the share of the K samples holding it, and it is true when it is matched to a true emitter within 60 nm
  (Hungarian per frame, one-to-one). ``ece`` is the expected calibration error of the frequency over 10 equal
  bins (:func:`benchmarks.dense.expected_calibration_error`); ``clusters``: clusters per frame;
- ``new_per_frame`` / ``new_true``: clusters per frame that are not within 60 nm of an existing molecule, and
  the share of them that are true;
- ``s_per_frame``: wall time of drawing and localizing the K samples (DeepSTORM's estimate excluded), per frame.

``--label`` (e.g. ``before`` / ``after`` a training; default the model folder's name) is a column: rows of other
labels already in ``ddpm_posterior.csv`` are kept, rows of the same label replaced, and the sidecar keeps each
label's command.
Prints the table; writes ``ddpm_posterior.csv`` and ``ddpm_posterior.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

import smlm_diffusers as sd
from smlm_diffusers.localization import match
from smlm_diffusers.models.deepstorm import check_frames
from smlm_diffusers.models.precision import use_bf16

from .dense import expected_calibration_error
from .model_localizers import DEFAULT_MODEL
from .sidecar import read_sidecar, write_sidecar

SIGNALS = ((2000.0, 20.0), (1000.0, 50.0))
SEED = 7500
TOLERANCE_NM = 60.0  # DDPM mode's link radius of detections across samples
CROWDED_NM = 300.0
CSV = "ddpm_posterior.csv"
FULL = dict(frames=3, densities="2,4", samples="8,16,32", steps="4,16")
QUICK = dict(frames=1, densities="1", samples="2", steps="1")


def _per_frame(table: pd.DataFrame) -> dict:
    """Row positions of ``table`` per frame."""
    frames = table["frame"].to_numpy().astype(int)
    return {f: np.flatnonzero(frames == f) for f in np.unique(frames)}


def near(a: pd.DataFrame, b: pd.DataFrame, radius_nm: float) -> np.ndarray:
    """[len(a)] bool: whether some row of ``b`` in the same frame lies within ``radius_nm`` of each row of ``a``."""
    out = np.zeros(len(a), bool)
    if len(a) == 0 or len(b) == 0:
        return out
    axy, bxy = a[["x_nm", "y_nm"]].to_numpy(np.float64), b[["x_nm", "y_nm"]].to_numpy(np.float64)
    rows_b = _per_frame(b)
    for f, i in _per_frame(a).items():
        if f in rows_b:
            out[i] = (cdist(axy[i], bxy[rows_b[f]]) <= radius_nm).any(axis=1)
    return out


def has_neighbour(gt: pd.DataFrame, radius_nm: float = CROWDED_NM) -> np.ndarray:
    """[len(gt)] bool: another true emitter of the same frame within ``radius_nm``."""
    out = np.zeros(len(gt), bool)
    xy = gt[["x_nm", "y_nm"]].to_numpy(np.float64)
    for i in _per_frame(gt).values():
        d = cdist(xy[i], xy[i])
        np.fill_diagonal(d, np.inf)
        out[i] = (d <= radius_nm).any(axis=1)
    return out


def sample_hit(gt: pd.DataFrame, detections: pd.DataFrame, num_samples: int,
               tolerance_nm: float = TOLERANCE_NM) -> np.ndarray:
    """[len(gt)]: per true emitter, the share of the ``num_samples`` samples with a detection within
    ``tolerance_nm`` (``detections``: frame, sample, x_nm, y_nm)."""
    hits = np.zeros((len(gt), num_samples), bool)
    if len(detections):
        gxy, dxy = gt[["x_nm", "y_nm"]].to_numpy(np.float64), detections[["x_nm", "y_nm"]].to_numpy(np.float64)
        sample = detections["sample"].to_numpy().astype(int)
        rows_d = _per_frame(detections)
        for f, i in _per_frame(gt).items():
            if f in rows_d:
                j = rows_d[f]
                gi, dj = np.nonzero(cdist(gxy[i], dxy[j]) <= tolerance_nm)
                hits[i[gi], sample[j[dj]]] = True
    return hits.mean(axis=1)


def missed(gt: pd.DataFrame, molecules: pd.DataFrame, tolerance_nm: float = TOLERANCE_NM) -> np.ndarray:
    """[len(gt)] bool: true emitters that ``molecules`` leave unmatched (Hungarian per frame, ``tolerance_nm``)."""
    out = np.ones(len(gt), bool)
    if len(molecules):
        out[match(gt, molecules.reset_index(drop=True), tolerance_nm)["gt_index"].to_numpy()] = False
    return out


def proposal_recall(gt: pd.DataFrame, molecules: pd.DataFrame, detections: pd.DataFrame,
                    tolerance_nm: float = TOLERANCE_NM) -> dict:
    """Over the true emitters that ``molecules`` miss: ``proposal_recall``, the share with a sample detection
    within ``tolerance_nm`` that is not within ``tolerance_nm`` of any of ``molecules``; ``missed_hit``, the share
    with any sample detection within ``tolerance_nm``; ``missed_apart``, the share with none of ``molecules`` within
    ``tolerance_nm``; ``missed``, how many there are (the shares are NaN at 0)."""
    lost = gt[missed(gt, molecules, tolerance_nm)]
    new = detections[~near(detections, molecules, tolerance_nm)]
    n = len(lost)
    share = lambda hit: float(hit.mean()) if n else math.nan  # noqa: E731
    return dict(missed=n, missed_apart=share(~near(lost, molecules, tolerance_nm)),
                proposal_recall=share(near(lost, new, tolerance_nm)),
                missed_hit=share(near(lost, detections, tolerance_nm)))


def link_samples(detections: pd.DataFrame, tolerance_nm: float = TOLERANCE_NM) -> pd.DataFrame:
    """Clusters of detections across samples: frame, x_nm, y_nm (their mean), n_samples (how many samples hold it).

    Per frame, sample by sample, each detection joins the cluster whose mean position is within ``tolerance_nm``
    (Hungarian on the distance, so a sample adds at most one detection to a cluster) or starts a new one."""
    rows = []
    xy_all = detections[["x_nm", "y_nm"]].to_numpy(np.float64)
    sample = detections["sample"].to_numpy().astype(int)
    for f, i in _per_frame(detections).items():
        sums, counts = np.zeros((0, 2)), np.zeros(0, int)
        for s in np.unique(sample[i]):
            xy = xy_all[i[sample[i] == s]]
            joined = np.zeros(len(xy), bool)
            if len(counts):
                d = cdist(xy, sums / counts[:, None])
                r, c = linear_sum_assignment(np.where(d <= tolerance_nm, d, 1e9))
                ok = d[r, c] <= tolerance_nm
                sums[c[ok]] += xy[r[ok]]
                counts[c[ok]] += 1
                joined[r[ok]] = True
            sums, counts = np.vstack([sums, xy[~joined]]), np.r_[counts, np.ones((~joined).sum(), int)]
        mean = sums / counts[:, None]
        rows.append(pd.DataFrame({"frame": f, "x_nm": mean[:, 0], "y_nm": mean[:, 1], "n_samples": counts}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        {"frame": [], "x_nm": [], "y_nm": [], "n_samples": []})


def frequency_ece(gt: pd.DataFrame, clusters: pd.DataFrame, num_samples: int, tolerance_nm: float = TOLERANCE_NM,
                  bins: int = 10) -> float:
    """ECE of the clusters' sample frequency (``n_samples / num_samples``) as the probability that each is a true
    emitter (matched one-to-one within ``tolerance_nm``), over ``bins`` equal bins."""
    return expected_calibration_error(gt, clusters.assign(probability=clusters["n_samples"] / num_samples),
                                      tolerance_nm, bins)


def posterior_draws(pipe: sd.SMLMDiffusionPipeline, frames_adu, num_samples: int, num_inference_steps: int,
                    generator: torch.Generator, batch_size: int = 64, mixed_precision: str = "auto"):
    """DDPM mode's sampling with ``sample_everywhere=True``, up to its detections (as ``_ddpm_molecules`` does it):
    (detections: frame, sample, x_nm, y_nm; residuals [F, K, uH, uW] in [-1, 1] units; covered [F, uH, uW];
    seconds of the sampling and the samples' localization). ``mixed_precision`` as the pipeline call's."""
    camera, scaling, threshold = pipe.camera, pipe.kde_scaling, pipe.config.threshold
    device = pipe._execution_device
    frames = check_frames(frames_adu)
    bf16 = use_bf16(mixed_precision, device) or pipe.unet.dtype == torch.bfloat16

    def localize(kde):
        return pipe.localize_density(kde, pixel_size_nm=camera.pixel_size_nm, threshold=threshold)
    localize.pixel_nm = camera.pixel_size_nm / pipe.kde_net.config.upsampling

    with torch.no_grad():
        y_hat = pipe.kde_net.predict(frames, batch_size=batch_size, camera=camera,
                                     mixed_precision=mixed_precision).to(device)
        cond = pipe.conditioning(y_hat, frames.to(device), camera)
        empty_level = float(scaling.to_unit(torch.tensor(0.25 * threshold))) if pipe.config.skip_empty_tiles \
            else -math.inf
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            residuals, covered = pipe.sample_residuals(cond, num_samples, num_inference_steps, generator, batch_size,
                                                       empty_level=empty_level, wanted=None)
        detections = pipe.sample_detections(scaling.from_unit(y_hat + residuals), covered, localize)
        seconds = time.perf_counter() - t0
    return detections, residuals, covered, seconds


def score(gt: pd.DataFrame, molecules: pd.DataFrame, detections: pd.DataFrame, num_samples: int,
          n_frames: int) -> dict:
    """The module docstring's metrics of one scenario's K samples against the truth and the existing molecules."""
    hit = sample_hit(gt, detections, num_samples)
    crowded = has_neighbour(gt)
    clusters = link_samples(detections)
    new = clusters[~near(clusters, molecules, TOLERANCE_NM)]
    new_true = (len(match(gt, new.reset_index(drop=True), TOLERANCE_NM)) / len(new)) if len(new) else math.nan
    return dict(emitters=len(gt), sample_hit=float(hit.mean()),
                hit_crowded=float(hit[crowded].mean()) if crowded.any() else math.nan,
                hit_isolated=float(hit[~crowded].mean()) if (~crowded).any() else math.nan,
                **proposal_recall(gt, molecules, detections), ece=frequency_ece(gt, clusters, num_samples),
                clusters=len(clusters) / n_frames, new_per_frame=len(new) / n_frames, new_true=new_true)


def scenarios(densities, n_frames: int, signals=SIGNALS):
    """(signal label, photons, background, density, simulate kwargs, seed) of every scored set of frames."""
    out = []
    for j, (p, b) in enumerate(signals):
        for i, d in enumerate(densities):
            out.append((f"{p:g}/{b:g}", p, b, d, dict(n_frames=n_frames, photons=p, background=b, density=d),
                        SEED + 10 * j + i))
    return out


def run(model: str, densities, n_frames: int, samples, steps, signals=SIGNALS, label: str = "") -> pd.DataFrame:
    """The rows of the module docstring, one per (signal, density, steps, K), each marked ``label``."""
    pipe = sd.SMLMDiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    camera, sigma = pipe.camera, float(pipe.kde_net.config.psf_sigma_px)
    rows = []
    for signal, photons, background, density, kw, seed in scenarios(densities, n_frames, signals):
        frames, gt = sd.simulate(shape=(64, 64), sigma_px=sigma, seed=seed, camera=camera, **kw)
        gt = gt.reset_index(drop=True)
        pipe.register_to_config(deepstorm_arbitrate=True)
        locs = pipe(frames, num_samples=0).localizations
        existing = locs[locs["probability"] >= 0.5].reset_index(drop=True)
        for n_steps, k in itertools.product(steps, samples):
            detections, _, _, seconds = posterior_draws(pipe, frames, k, n_steps, torch.Generator().manual_seed(seed))
            rows.append(dict(label=label, signal=signal, photons=photons, background=background, density=density,
                             frames=n_frames, samples=k, steps=n_steps,
                             **score(gt, existing, detections, k, n_frames), s_per_frame=seconds / n_frames))
            print(pd.DataFrame([rows[-1]]).to_string(index=False, header=len(rows) == 1, float_format="%.3f"),
                  flush=True)
    return pd.DataFrame(rows)


def merge_label(csv: Path, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` after the rows of ``csv`` whose label is not one of ``table``'s (a rerun of a label replaces it)."""
    if not csv.is_file():
        return table
    old = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    old = old[~old["label"].astype(str).isin(set(table["label"].astype(str)))]
    return pd.concat([old, table], ignore_index=True)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--frames", type=int, default=None, help="frames per scenario (default 3; --quick 1)")
    ap.add_argument("--densities", default=None, help="emitters per square micrometre (default 2,4; --quick 1)")
    ap.add_argument("--samples", default=None, help="K, comma separated (default 8,16,32; --quick 2)")
    ap.add_argument("--steps", default=None, help="reverse diffusion steps, comma separated (default 4,16; --quick 1)")
    ap.add_argument("--label", default=None, help="a column (default the model folder's name): rows of other "
                                                     "labels already in the CSV are kept")
    ap.add_argument("--quick", action="store_true", help="2000 photons only and the small defaults above; "
                                                         "writes only where --out says")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results (none with --quick)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = QUICK if args.quick else FULL
    pick = lambda given, key: quick[key] if given is None else given  # noqa: E731
    numbers = lambda s, kind: tuple(kind(v) for v in str(s).split(","))  # noqa: E731
    table = run(args.model, numbers(pick(args.densities, "densities"), float), pick(args.frames, "frames"),
                numbers(pick(args.samples, "samples"), int), numbers(pick(args.steps, "steps"), int),
                SIGNALS[:1] if args.quick else SIGNALS, args.label or Path(args.model).name)
    print(table.to_string(index=False, float_format="%.3f"))
    out = args.out if args.out is not None or args.quick else Path("benchmarks/results")
    if out is not None:
        write(out / CSV, table, argv)
        print(f"wrote {out / CSV}")
    return table


def write(csv: Path, table: pd.DataFrame, argv) -> None:
    """``table`` into ``csv`` (:func:`merge_label`) and the sidecar: the latest command, each label's command."""
    csv.parent.mkdir(parents=True, exist_ok=True)
    merge_label(csv, table).to_csv(csv, index=False)
    commands = dict((read_sidecar(csv) or {}).get("commands", {}))
    write_sidecar(csv, "benchmarks.ddpm_posterior", argv)
    commands[str(table["label"].iloc[0])] = read_sidecar(csv)["command"]
    write_sidecar(csv, "benchmarks.ddpm_posterior", argv, threads=torch.get_num_threads(), commands=commands)


if __name__ == "__main__":
    main()
