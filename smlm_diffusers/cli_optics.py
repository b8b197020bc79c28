"""The optics parts of the command line: ``calibrate-z``, ``localize --optics`` with a 3D PSF.

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
