"""The optics parts of the command line: ``calibrate-z``, ``localize --optics`` with a 3D PSF, and the
warning of ``localize`` when the frames' pixel size or PSF is far from the model's.

Kept apart from :mod:`smlm_diffusers.cli` (which wraps these and turns their ValueError / OSError
into one-line errors); nothing here imports torch until a command runs.
"""

from __future__ import annotations


def add_calibrate_z(sub, finite, positive, radius_type, add_camera_options, func) -> None:
    cal = sub.add_parser("calibrate-z", help="calibrate an astigmatic 3D PSF from a bead z-stack (optics.yaml)",
                         description="Fit Huang et al. (2008) curves sigma_x(z), sigma_y(z) and the lateral offset "
                                     "with z (wobble) to the beads of a z-stack; z = 0 where sigma_x = sigma_y. "
                                     "Slice i of n is at (i - (n - 1) / 2) * z-step (a negative step flips z).")
    cal.add_argument("stack", metavar="BEADS.tif", help="bead z-stack [slices, H, W], raw ADU")
    cal.add_argument("--z-step", type=finite, required=True, metavar="NM", help="z step between slices, nm")
    cal.add_argument("-o", "--output", required=True, metavar="YAML", help="optics.yaml to write")
    cal.add_argument("--plot", metavar="PNG", help="plot of the fit and its residuals (default <yaml stem>.png)")
    cal.add_argument("--radius", type=radius_type, default=7, metavar="PX", help="fit window half-width")
    cal.add_argument("--threshold-snr", type=positive, default=10.0, metavar="SNR",
                     help="bead detection threshold on the maximum projection (default 10)")
    add_camera_options(cal, "default: the paper's camera")
    cal.set_defaults(func=func)


def optics_from_args(args, camera_from_args):
    """``--optics`` as an :class:`~smlm_diffusers.optics.Optics`, the camera options
    (``camera_from_args(defaults)``) and ``--psf-sigma`` applied; None without ``--optics``."""
    if not getattr(args, "optics", None):
        return None
    from .optics import GaussianPSF, Optics

    optics = Optics.from_yaml(args.optics)
    optics = optics.replace(camera=camera_from_args(optics.camera))
    if args.psf_sigma is not None and optics.ndim == 2:
        optics = optics.replace(psf=GaussianPSF(args.psf_sigma))
    return optics


def localize_3d_stack(args, stack, paths, optics, pipe=None) -> str:
    """3D localization of a movie, batch by batch (detector, plus the network's detections when ``pipe`` is
    given: with their z from a 3D network's z channel; then the 3D MLE); writes the table (CSV or HDF5)."""
    from .localization.localize3d import localize_stack, network_seeder, network_seeds_3d, write_table

    def seeds_3d(frames):  # a 3D network: its molecules and their z (its z channel)
        return network_seeds_3d(pipe.kde_net, frames, optics.camera, pipe.config.threshold, args.batch_size)

    seeder = None
    if pipe is not None:
        seeder = seeds_3d if pipe.kde_net.config.out_channels == 2 else network_seeder(pipe, optics.camera)
    locs, (n, h, w) = localize_stack(stack, optics, args.batch_size, args.max_frames, seeder)
    write_table(locs, paths.csv, optics, (n, h, w), source=stack.name, extra_info={"Optics": args.optics})
    return f"{len(locs)} 3D localizations in {n} frames -> {paths.csv}"


def calibrate_z(args, camera) -> str:
    import numpy as np

    from .movie import outputs
    from .optics.calibration import calibrate_to_yaml

    stack = outputs.check_stack_path(args.stack)
    frames = np.concatenate(list(outputs.read_frames(stack, [(0, outputs.stack_shape(stack)[0])])))
    return calibrate_to_yaml(frames, args.z_step, camera, args.output, args.plot, args.radius, args.threshold_snr,
                             source=str(stack))


# -- do the frames' optics fit the model? ----------------------------------------------------------------------
MODEL_FIT_TOLERANCE = 0.15  # relative difference of pixel size or PSF width (nm) that gets a warning
TRAIN_RECIPE = ("copy train/configs/deepstorm_ps_100nm.yaml and train/configs/ddpm_v2_100nm.yaml, set data: camera: "
                "pixel_size_nm and sigma_px to these optics, then accelerate launch train/train_deepstorm.py --config "
                "MY_DEEPSTORM.yaml and accelerate launch train/train_ddpm.py --config MY_DDPM.yaml (README: Train for "
                "your microscope)")


def _off(value: float, trained: float) -> float:
    return abs(value / trained - 1.0)


def shipped_folders() -> list[dict]:
    """The 2D pipeline folders shipped beside the package (``pretrained/*``, or a wheel's copy): name, path,
    the optics their networks were trained for (``pixel_nm``, ``sigma_px``, ``psf_nm``) and ``ddpm`` (has a
    UNet). Read from the folders' JSON files, nothing is loaded."""
    import json

    from .defaults import shipped_roots

    found, seen = [], set()
    for root in dict.fromkeys(shipped_roots()):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            index, net = folder / "model_index.json", folder / "kde_net" / "config.json"
            if folder.name in seen or not (index.is_file() and net.is_file()):
                continue
            try:
                pipe_cfg, net_cfg = json.loads(index.read_text()), json.loads(net.read_text())
                psf = (pipe_cfg.get("optics") or {}).get("psf") or {}
                if psf.get("type", "gaussian") != "gaussian":  # a 3D folder
                    continue
                pixel, sigma = float(net_cfg["pixel_size_nm"]), float(net_cfg["psf_sigma_px"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            seen.add(folder.name)
            found.append({"name": folder.name, "path": folder, "pixel_nm": pixel, "sigma_px": sigma,
                          "psf_nm": pixel * sigma, "ddpm": bool(pipe_cfg.get("unet"))})
    return found


def model_fit_warning(model: str, trained_pixel_nm: float, trained_sigma_px: float, pixel_nm: float,
                      sigma_px: float, ddpm: bool = True, folders: list[dict] | None = None) -> str | None:
    """A warning when the frames' pixel size or PSF width is more than :data:`MODEL_FIT_TOLERANCE` from the
    model's, else None. The PSF is compared in nm (sigma px x pixel nm): a 100 nm camera with a PSF of 1.09 px
    fits a model of 108 nm pixels and 1 px. Names a shipped folder (``folders``, default
    :func:`shipped_folders`) that fits, with a DDPM where ``ddpm``, or else the training recipe."""
    trained_psf_nm, psf_nm = trained_sigma_px * trained_pixel_nm, sigma_px * pixel_nm
    tol = MODEL_FIT_TOLERANCE
    off = []
    if _off(pixel_nm, trained_pixel_nm) > tol:
        off.append(f"pixels of {pixel_nm:g} nm (the model's: {trained_pixel_nm:g} nm)")
    if _off(psf_nm, trained_psf_nm) > tol:
        off.append(f"a PSF sigma of {psf_nm:.0f} nm = {sigma_px:.3g} px (the model's: {trained_psf_nm:.0f} nm = "
                   f"{trained_sigma_px:.3g} px)")
    if not off:
        return None
    from pathlib import Path

    name = Path(str(model)).name or str(model)
    text = (f"these frames have {' and '.join(off)}, more than {100 * tol:.0f}% from the optics the model "
            f"{name} was trained for: expect missed or false molecules and uncertainties that do not hold")
    folders = shipped_folders() if folders is None else folders
    fits = [f for f in folders if (f["ddpm"] or not ddpm) and f["name"] != name
            and _off(pixel_nm, f["pixel_nm"]) <= tol and _off(psf_nm, f["psf_nm"]) <= tol]
    if fits:
        best = min(fits, key=lambda f: max(_off(pixel_nm, f["pixel_nm"]), _off(psf_nm, f["psf_nm"])))
        return (f"{text}. The shipped folder {best['name']} was trained for {best['pixel_nm']:g} nm pixels and a PSF "
                f"sigma of {best['psf_nm']:.0f} nm: --model {best['name']}")
    return f"{text}. No shipped folder fits them; train one: {TRAIN_RECIPE}"
