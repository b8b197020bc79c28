"""The report of a PSF estimate (:func:`smlm_diffusers.psf_estimation.estimate_psf`): the lines
``smlm-diffusers estimate`` prints, and the YAML document whose ``data:`` block a training
config for a new microscope takes (``train/configs/*.yaml``)."""

from __future__ import annotations

import math


def estimate_lines(est: dict, camera, name: str, n_frames: int, total: int, shape: tuple[int, int]) -> list[str]:
    """Human-readable lines: what was analysed, the camera, the spots, PSF sigma, background, photons."""
    h, w = shape
    lines = [
        f"{name}: {n_frames} of {total} frames of {h} x {w} pixels analysed",
        f"camera: {camera.pixel_size_nm:g} nm pixels, offset {camera.offset:g} ADU, gain {camera.gain:g} ADU/e-, "
        f"read noise {camera.read_noise:g} e-",
        f"spots fitted: {est['n_spots']} (isolated: {est['n_isolated']}, bright candidates: {est['n_candidates']})",
    ]
    from .psf_estimation import MIN_SPOTS

    if est["n_spots"] < MIN_SPOTS:  # too few for an estimate: :func:`too_few_spots` says why and what to change
        return lines
    lines += [
        f"PSF sigma: {est['sigma_px']:.3f} px = {est['sigma_nm']:.1f} nm (IQR {est['sigma_px_iqr']:.3f} px)",
        f"background: {est['background']:.2f} photons/pixel (median of the fits; "
        f"median of frame medians {est['background_frame_median']:.2f})",
        f"photons per emitter: {est['photons']:.0f} (median; 10-90%: {est['photons_p10']:.0f}-"
        f"{est['photons_p90']:.0f})",
    ]
    if est["sigma_px_iqr"] > 0.15 * est["sigma_px"]:
        lines.append("caution: the fitted sigmas spread widely; the frames may be too dense (overlapping spots "
                     "bias sigma and photons up): use sparser frames if you have them")
    return lines


def too_few_spots(est: dict, camera, n_frames: int, total: int, threshold_snr: float, sigma_guess_px: float,
                  camera_problems=(), camera_words: str = "") -> str:
    """Why an estimate of fewer than :data:`~smlm_diffusers.psf_estimation.MIN_SPOTS` spots is refused, and
    what to change: the camera (``camera_problems``, the camera check's messages), the detection threshold,
    sparser or more frames, the sigma guess, by the step where the spots were lost.
    ``camera_words`` says whose the camera is when the user gave none of it."""
    from .camera_check import plain_number as _fmt
    from .psf_estimation import MIN_SPOTS

    n, iso, cand = int(est["n_spots"]), int(est["n_isolated"]), int(est["n_candidates"])
    head = (f"{n} spot{'' if n == 1 else 's'} fitted, fewer than the {MIN_SPOTS} an estimate needs "
            f"(bright candidates {cand}, isolated {iso}); no estimate written")
    tips = []
    if camera_problems:
        tips.append("the camera does not fit the frames: " + "; ".join(camera_problems))
    bg = est.get("background_frame_median", float("nan"))
    camera_is = (f"{camera_words + ' ' if camera_words else ''}offset {_fmt(camera.offset)} ADU and gain "
                 f"{_fmt(camera.gain)} ADU/e- put the frames' median at {_fmt(bg)} photons per pixel: check "
                 "--offset and --gain")
    if cand == 0:
        tips.append(f"no spot stands {threshold_snr:g} robust noise units above its smoothed frame: lower "
                    f"--threshold-snr (now {threshold_snr:g}; try {max(3.0, threshold_snr / 2):g}); crowded frames "
                    "raise that noise, so use sparser frames if you have them")
        if not camera_problems:
            tips.append(camera_is)
    elif 2 * iso <= cand:
        tips.append(f"{cand - iso} of the {cand} bright spots have a neighbour close by (or touch the border): the "
                    "frames are too crowded for isolated spots; use sparser frames (fewer molecules on per frame), "
                    "where sigma and photons are not biased up by overlapping spots")
    elif iso < MIN_SPOTS:
        tips.append(f"only {cand} bright spots in {n_frames} frames: analyse more frames, or lower --threshold-snr "
                    f"(now {threshold_snr:g})")
    else:
        tips.append(f"{iso - n} of {iso} isolated spots gave no usable fit: check --sigma-guess (now "
                    f"{sigma_guess_px:g} px) and the camera (--offset, --gain, --read-noise)")
    if n_frames < total:
        tips.append(f"analyse more frames: --max-frames {total} (now {n_frames} of {total})")
    return head + ". To change: " + "; ".join(tips)


def _rounded(x, nd=3):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def estimate_document(est: dict, camera, stack: str, n_frames: int, total: int) -> dict:
    """The estimate as a YAML-ready dict: source, estimate (units in the keys) and a ``data:`` block."""
    r = _rounded
    return {
        "source": {"stack": str(stack), "frames_analysed": n_frames, "frames_in_stack": total},
        "estimate": {
            "psf_sigma_px": r(est["sigma_px"], 4), "psf_sigma_nm": r(est["sigma_nm"], 2),
            "psf_sigma_px_iqr": r(est["sigma_px_iqr"], 4),
            "background_photons_per_px": r(est["background"]),
            "background_frame_median_photons_per_px": r(est["background_frame_median"]),
            "photons_median": r(est["photons"], 1), "photons_p10": r(est["photons_p10"], 1),
            "photons_p90": r(est["photons_p90"], 1),
            "n_spots": int(est["n_spots"]), "n_isolated": int(est["n_isolated"]),
            "n_candidates": int(est["n_candidates"]),
        },
        # keys of the training configs' data section (train/configs/*.yaml), the camera as one block (training
        # simulates one uniform camera: an sCMOS camera's maps are summarised; optics: below keeps them)
        "data": {"sigma_px": r(est["sigma_px"], 3), "camera": camera.uniform().to_dict()},
        # what ``smlm-diffusers localize --optics`` reads (smlm_diffusers.optics.Optics.from_yaml)
        "optics": {"camera": camera.to_dict(), "psf": {"type": "gaussian", "sigma_px": r(est["sigma_px"], 4)}},
    }
