"""Former home of the web demo's logic, kept so that ``from smlm_diffusers import app_utils`` works:
everything now lives in :mod:`smlm_diffusers.app` (``core``, ``downloads``, ``progress``, ``zoom``)."""

from .app.core import *  # noqa: F401,F403
from .app.core import _PIPE_LOCK  # noqa: F401
