"""Peak finding, sub-pixel refinement, refinement on the frames, the pipeline's readout of
molecules from KDE samples (:mod:`.molecules`), matching to ground truth and the benchmark metrics."""

from .matching import match
from .metrics import evaluate
from .peaks import centroid, localize_kde
from .refine import refine_frames

__all__ = ["centroid", "evaluate", "localize_kde", "match", "refine_frames"]
