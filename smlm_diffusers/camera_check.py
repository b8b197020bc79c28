"""Does the camera the user gave fit the frames? Checked from the data before localizing.

A wrong offset or gain does not crash anything: it silently turns every frame into nonsense
photons (no molecules, or thousands). Three measurements on the frames catch that:

- the fraction of pixels below the offset (a correct offset sits below nearly all of them);
- the background this camera implies, ``(background ADU - offset) / gain`` photons per pixel;
- the noise of the darkest pixels against the camera model. For a Poisson-normal camera
  (docs/conventions.md) the variance of a pixel at ``level`` ADU is
  ``gain * (level - offset) + gain^2 * read_noise^2`` ADU^2 (the photon-transfer relation).
  The noise is measured on differences of horizontally neighbouring pixels, in the darkest
  10% of pairs (the pixels least lit by molecules, even in crowded frames); given the sum
  of two Poisson counts their difference has a variance equal to that sum, so the relation
  holds at the mean level of the pairs measured. In dark frames this variance is mostly the
  read noise, in bright ones mostly the shot noise of the background.

From the same relation each camera value can be solved for with the other two kept: the
gain, the offset or the read noise the data suggest. A measurement far off (:data:`LIMITS`)
is an error whose message names the options that would fix it and their suggested values;
one somewhat off is a warning.

A camera with per-pixel maps (an sCMOS) is checked on the frames mapped pixel by pixel onto its
uniform summary, ``(ADU - o_k) / g_k * g + o``, against that summary; and its variance map against
the frames: its noisy pixels (variance at least ten times the median) must be noisier over the
frames than the others, as much as the map says. Maps stored transposed or cut from another region
of the camera fail that (the trap of storm-analysis's (x, y) maps), with a warning that says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .simulation.camera import Camera

# the option names the messages use (the app passes its field labels instead)
CLI_OPTIONS = {"offset": "--offset", "gain": "--gain", "read_noise": "--read-noise"}

LIMITS = {
    "below_offset_error": 0.5,  # more than half the pixels below the offset
    "below_offset_warn": 0.2,
    "background_error": 1e5,  # photons per pixel: beyond the full well of any camera pixel
    "background_warn": 5e3,
    "background_low_warn": 0.2,  # photons per pixel: nearly no background at all
    "noise_ratio_error": 10.0,  # measured / expected pixel variance outside [1/10, 10]
    "noise_ratio_warn_low": 0.55,  # e.g. a gain twice too high (shot-noise variance scales with the gain)
    "noise_ratio_warn_high": 1.7,  # an EMCCD read as a plain camera: its excess noise doubles the shot-noise variance
}
# what real cameras have: single values outside these are not offered as fixes
PLAUSIBLE = {"gain": (1e-3, 1e4), "read_noise": (0.05, 200.0)}
MAX_PIXELS = 2_000_000
DARK_QUANTILE = 0.1  # pixel pairs measured: the darkest 10%
_Z_DARK = 1.2816  # -(standard normal quantile of DARK_QUANTILE)


class CameraMismatchError(ValueError):
    """The camera given does not fit the frames; the message names the option to change."""


@dataclass
class CameraCheck:
    """What the frames say about the camera given (see the module docstring)."""

    camera: Camera
    background_adu: float  # background level of the darkest pixels, ADU
    median_adu: float
    noise_adu: float  # rms pixel noise of the background, ADU
    fraction_below_offset: float
    background_photons: float  # implied by the camera, photons per pixel
    noise_ratio: float  # measured / expected pixel variance
    suggested: dict = field(default_factory=dict)  # option -> value that fits the data (others kept)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _pixel_noise(frames: np.ndarray) -> tuple[float, float, float]:
    """(background level, level of the pairs measured, rms noise), ADU, from the darkest
    horizontal neighbour pairs.

    Pairs whose mean is at most its :data:`DARK_QUANTILE` are the pixels least lit by
    molecules, even in crowded frames. For Poisson counts the difference of two pixels given
    their sum ``S`` has variance ``S`` (the split is binomial), so the noise of these pairs is
    the camera model's at *their* mean level, which is returned with it. The background is
    that quantile corrected for the selection (pair means spread by noise / sqrt(2)).
    """
    a, b = frames[..., :-1].ravel(), frames[..., 1:].ravel()
    mean, diff = 0.5 * (a + b), a - b
    cut = float(np.quantile(mean, DARK_QUANTILE))
    keep = mean <= cut
    if np.count_nonzero(keep) < 16:
        keep = np.ones_like(keep)
    d = diff[keep]
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    if sigma > 0:  # the MAD is coarse on integer counts: a clipped standard deviation instead
        d = d[np.abs(d - np.median(d)) <= 5.0 * sigma]
    noise = float(np.std(d)) / math.sqrt(2.0)
    return cut + _Z_DARK * noise / math.sqrt(2.0), float(np.mean(mean[keep])), noise


def _sample(frames) -> np.ndarray:
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape) < 1 or a.shape[-1] < 2:
        raise ValueError(f"frames must be [F, H, W] with W >= 2, got shape {a.shape}")
    per_frame = a.shape[1] * a.shape[2]
    if a.size > MAX_PIXELS:  # evenly spaced frames are enough for these statistics
        idx = np.linspace(0, a.shape[0] - 1, max(1, MAX_PIXELS // per_frame)).round().astype(int)
        a = a[np.unique(idx)]
    return a


def plain_number(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits as a plain number: 5000, not 5e+03; 0.00123, not 1.23e-03.

    Values of ``10 ** (digits - 1)`` and more are whole numbers (1234 stays 1234)."""
    v = float(v)
    if not math.isfinite(v) or v == 0:
        return f"{v:g}"
    if abs(v) >= 10 ** (digits - 1):
        return f"{v:.0f}"
    return np.format_float_positional(v, precision=digits, fractional=False, trim="-")


_fmt = plain_number


def check_camera(frames_adu, camera: Camera, options: dict | None = None, typed=None,
                 source: str = "the model's") -> CameraCheck:
    """Compare frames (ADU) with a camera; errors and warnings as text naming ``options``.

    Parameters
    ----------
    frames_adu : array [F, H, W] or [H, W]
        Raw frames, ADU (a few frames are enough; large stacks are subsampled).
    camera : Camera
        Offset, gain and read noise to check (pixel size and QE are not checked).
    options : dict, optional
        The user-facing name of each setting: keys ``offset``, ``gain``, ``read_noise``
        (default :data:`CLI_OPTIONS`, the command line's ``--offset`` ...).
    typed : collection of str, optional
        The settings the user gave (``"offset"``, ``"gain"``, ``"read_noise"``); default all of them.
        A message names a setting the user did not give by where it came from, ``source``
        (``"the model's offset (100 ADU)"``), and says which option to pass, instead of an option
        the user never typed.
    source : str
        Whose the settings not in ``typed`` are: ``"the model's"``, ``"the --optics file's"`` ...

    Returns
    -------
    CameraCheck

    Numbers in the messages are plain (5000, not 5e+03).
    """
    names = CLI_OPTIONS | (options or {})
    typed = set(names) if typed is None else set(typed)
    frames = _sample(frames_adu)
    maps_warning = None
    if camera.has_maps:  # the frames as its uniform summary would record them (read noise apart)
        maps_warning = variance_map_mismatch(frames, camera)
        full, camera = camera, camera.uniform()
        frames = camera.photons_to_adu(full.adu_to_photons(frames))
    o, g, rn = float(camera.offset), float(camera.gain), float(camera.read_noise)
    level, dark, noise = _pixel_noise(frames)
    median = float(np.median(frames))
    var = noise**2
    below = float(np.mean(frames < o))
    bg = (level - o) / g
    expected = g * max(dark - o, 0.0) + g * g * rn * rn
    ratio = var / expected if expected > 0 else math.inf

    # each setting solved from var = g (dark - o) + g^2 rn^2, the other two kept
    suggested = {}
    o_fit = dark - (var - g * g * rn * rn) / g
    p01 = float(np.percentile(frames, 1.0))
    if p01 - 10.0 * noise <= o_fit <= dark:
        suggested["offset"] = o_fit
    s = dark - o
    if s > 0:
        g_fit = var / s if rn == 0 else (-s + math.sqrt(s * s + 4.0 * rn * rn * var)) / (2.0 * rn * rn)
        if PLAUSIBLE["gain"][0] <= g_fit <= PLAUSIBLE["gain"][1]:
            suggested["gain"] = g_fit
    rn2 = var / (g * g) - max((dark - o) / g, 0.0)
    if rn2 > 0 and PLAUSIBLE["read_noise"][0] <= math.sqrt(rn2) <= PLAUSIBLE["read_noise"][1]:
        suggested["read_noise"] = math.sqrt(rn2)

    check = CameraCheck(camera, level, median, noise, below, bg, ratio, suggested)
    frames_are = f"frames: background {_fmt(level)} ADU, pixel noise {_fmt(noise)} ADU rms"
    unit = {"offset": " ADU", "gain": " ADU/e-", "read_noise": " e-"}
    word = {"offset": "offset", "gain": "gain", "read_noise": "read noise"}
    value = {"offset": o, "gain": g, "read_noise": rn}

    def setting(k) -> str:  # "--offset 100 ADU" as typed, else "the model's offset (100 ADU)"
        if k in typed:
            return f"{names[k]} {_fmt(value[k])}{unit[k]}"
        return f"{source} {word[k]} ({_fmt(value[k])}{unit[k]})"

    def fixes(*keys) -> str:
        offered = [k for k in keys if k in suggested]
        if not offered:
            return (f"no single one of {', '.join(names[k] for k in ('offset', 'gain', 'read_noise'))} explains "
                    "the data: check the camera settings (offset and gain in ADU, read noise in e-)")
        values = " or ".join(f"{names[k]} {_fmt(suggested[k])}{unit[k]}" for k in offered)
        if all(k in typed for k in offered):
            return f"the data suggest {values}"
        return f"pass {values}, which the data suggest"

    def check_option(*keys) -> str:  # "check --gain"; for settings not typed, "pass --gain ... (in use: ...)"
        mine, theirs = [k for k in keys if k in typed], [k for k in keys if k not in typed]
        parts = [f"check {' and '.join(names[k] for k in mine)}"] if mine else []
        if theirs:
            using = ", ".join(f"{word[k]} {_fmt(value[k])}{unit[k]}" for k in theirs)
            parts.append(f"pass {' and '.join(names[k] for k in theirs)} with your camera's "
                         f"{'value' if len(theirs) == 1 else 'values'} (in use: {source} {using})")
        return "; ".join(parts)

    # each message leads with the setting, its value and the value the data suggest; the evidence follows
    L = LIMITS
    if below > L["below_offset_error"]:
        check.errors.append(f"{setting('offset')} is too high for these frames: {fixes('offset')} "
                            f"({100 * below:.0f}% of the pixels are below it; {frames_are})")
    elif bg > L["background_error"]:
        check.errors.append(f"{setting('offset')} with {setting('gain')} do not fit "
                            f"these frames: {fixes('offset', 'gain')} (they imply {_fmt(bg)} photons per pixel of "
                            f"background, more than any camera pixel holds; {frames_are})")
    elif not 1.0 / L["noise_ratio_error"] <= ratio <= L["noise_ratio_error"]:
        more = "more" if ratio > 1 else "less"
        check.errors.append(f"{setting('gain')} with {setting('read_noise')} do not fit "
                            f"these frames: {fixes('gain', 'read_noise', 'offset')} (the frames are "
                            f"{_fmt(math.sqrt(ratio))}x {more} noisy than this camera predicts, "
                            f"{_fmt(math.sqrt(expected))} ADU rms at the background level; {frames_are})")
    else:
        if below > L["below_offset_warn"]:
            check.warnings.append(f"{100 * below:.0f}% of the pixels are below {setting('offset')}: "
                                  f"{check_option('offset')} (or the frames are nearly dark)")
        if bg > L["background_warn"]:
            check.warnings.append(f"the camera implies a background of {_fmt(bg)} photons per pixel: "
                                  f"{check_option('offset', 'gain')}")
        elif bg < L["background_low_warn"]:
            check.warnings.append(f"the camera implies a background of {_fmt(bg)} photons per pixel (nearly none): "
                                  f"{check_option('offset')}")
        if not L["noise_ratio_warn_low"] <= ratio <= L["noise_ratio_warn_high"]:
            more = "more" if ratio > 1 else "less"
            emccd = (" (an EMCCD's excess noise alone doubles the variance: Camera.emccd, CLI --excess-noise 2)"
                     if ratio > 1 else "")
            check.warnings.append(f"the frames are {_fmt(math.sqrt(ratio), 2)}x {more} noisy than this camera "
                                  f"predicts: {check_option('gain', 'read_noise')}; "
                                  f"{fixes('gain', 'read_noise')}{emccd}")
    if maps_warning:
        check.warnings.append(maps_warning)
    return check


def _temporal_contrast(frames: np.ndarray, camera: Camera, hot: np.ndarray, var_map: np.ndarray, gain_map):
    """(measured, expected) ratio of the median temporal variance (ADU^2) of the ``hot`` pixels to the others'."""
    measured = frames.var(axis=0, ddof=1)
    level = frames.mean(axis=0)
    expected = gain_map * np.maximum(level - np.asarray(camera.offset_map()), 0.0) + var_map
    ratio = lambda v: float(np.median(v[hot]) / max(np.median(v[~hot]), 1e-12))  # noqa: E731
    return ratio(measured), ratio(expected)


def variance_map_mismatch(frames_adu, camera: Camera, min_frames: int = 5) -> str | None:
    """A warning when the camera's variance map does not describe the frames' noise, else None.

    Over at least ``min_frames`` frames, the pixels the map calls noisy (variance ten times its median, at least
    ten of them) must have a median temporal variance above the others' by at least a third of what the map
    predicts (photon-transfer relation per pixel); a transposed map that would fit is named."""
    frames = np.asarray(frames_adu, np.float64)
    if not camera.has_maps or camera.maps.variance is None or frames.ndim != 3 or len(frames) < min_frames:
        return None
    var = camera.maps.variance
    hot = var > 10.0 * np.median(var)
    if hot.sum() < 10 or hot.mean() > 0.25:
        return None
    gain = np.asarray(camera.gain_map())
    measured, expected = _temporal_contrast(frames, camera, hot, var, gain)
    if expected < 2.0 or measured - 1.0 >= (expected - 1.0) / 3.0:
        return None
    text = (f"the variance map does not fit these frames: its {int(hot.sum())} noisy pixels should be "
            f"{_fmt(expected, 2)}x as noisy over the frames as the others, they are {_fmt(measured, 2)}x")
    if var.shape[0] == var.shape[1]:
        flipped = Camera(camera.pixel_size_nm, camera.offset, camera.gain, camera.read_noise, camera.qe,
                         maps=type(camera.maps)(**{n: None if getattr(camera.maps, n) is None else
                                                   getattr(camera.maps, n).T for n in ("offset", "variance", "gain")}))
        m_t, e_t = _temporal_contrast(frames, flipped, hot.T, var.T, np.asarray(flipped.gain_map()))
        if m_t - 1.0 >= (e_t - 1.0) / 3.0:
            return text + (f"; transposed, the maps fit ({_fmt(m_t, 2)}x against {_fmt(e_t, 2)}x): they must be in "
                           "the frames' (row, column) order")
    return text + ": are they of this camera region, in the frames' (row, column) order?"


def require_plausible_camera(frames_adu, camera: Camera, options: dict | None = None) -> CameraCheck:
    """:func:`check_camera`, raising :class:`CameraMismatchError` on errors; warnings are returned."""
    check = check_camera(frames_adu, camera, options)
    if check.errors:
        raise CameraMismatchError("; ".join(check.errors))
    return check
