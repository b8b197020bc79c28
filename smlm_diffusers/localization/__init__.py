"""Peak finding, sub-pixel refinement, matching to ground truth and the benchmark metrics."""

from .matching import match
from .metrics import evaluate
from .peaks import centroid, localize_kde

__all__ = ["centroid", "evaluate", "localize_kde", "match"]
