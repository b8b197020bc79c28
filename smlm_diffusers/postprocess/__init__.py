"""What follows localization over a whole movie: drift correction (RCC), linking of blinks, FRC.

:func:`postprocess_localizations` runs them in the order that suits each: drift is measured
on the unlinked localizations (more per segment) and subtracted, the corrected table is
linked (a blink's frames then sit on one spot), and the FRC resolution is measured on the
result. :func:`sigma_selfcheck` checks the per-frame sigmas on consecutive frames of each blink,
without ground truth (:func:`selfcheck_figure` draws it). :func:`drift_figure` draws the drift trace and the FRC curve (a matplotlib Figure,
for files and the app); :func:`picasso_undrift` and :func:`drift_residual` compare a trace
with Picasso's and with the truth.
"""

from .compare import drift_residual, picasso_link, picasso_undrift
from .drift import DriftTrace, apply_drift, estimate_drift, write_drift
from .frc import FRC_THRESHOLD, FRCResult, frc_resolution
from .linking import Linker, link
from .plots import drift_figure
from .selfcheck import SigmaSelfCheck, selfcheck_figure, sigma_selfcheck
from .run import PostprocessResult, postprocess_localizations, read_table, write_postprocess_outputs

__all__ = [
    "DriftTrace",
    "FRCResult",
    "FRC_THRESHOLD",
    "Linker",
    "PostprocessResult",
    "SigmaSelfCheck",
    "apply_drift",
    "drift_figure",
    "drift_residual",
    "estimate_drift",
    "frc_resolution",
    "link",
    "picasso_link",
    "picasso_undrift",
    "postprocess_localizations",
    "read_table",
    "selfcheck_figure",
    "sigma_selfcheck",
    "write_drift",
    "write_postprocess_outputs",
]
