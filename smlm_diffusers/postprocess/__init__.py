"""What follows localization over a whole movie: drift correction (RCC), linking of blinks, FRC.

:func:`postprocess_localizations` runs them in the order that suits each: drift is measured
on the unlinked localizations (more per segment) and subtracted, the corrected table is
linked (a blink's frames then sit on one spot), and the FRC resolution is measured on the
result.
"""

from .drift import DriftTrace, apply_drift, estimate_drift, write_drift
from .frc import FRC_THRESHOLD, FRCResult, frc_resolution
from .linking import Linker, link
from .run import PostprocessResult, postprocess_localizations, read_table, write_postprocess_outputs

__all__ = [
    "DriftTrace",
    "FRCResult",
    "FRC_THRESHOLD",
    "Linker",
    "PostprocessResult",
    "apply_drift",
    "estimate_drift",
    "frc_resolution",
    "link",
    "postprocess_localizations",
    "read_table",
    "write_drift",
    "write_postprocess_outputs",
]
