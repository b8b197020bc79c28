"""Deprecated: the web demo's logic lives in :mod:`smlm_diffusers.app`; this name re-exports it."""

import warnings

from .app import *  # noqa: F401,F403
from .app import __all__  # noqa: F401

warnings.warn("smlm_diffusers.app_utils is deprecated: import smlm_diffusers.app instead",
              DeprecationWarning, stacklevel=2)
