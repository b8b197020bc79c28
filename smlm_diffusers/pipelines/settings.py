"""Pipeline settings that outlived their old places: the KDE peak settings, once in the DeepSTORM config."""

from __future__ import annotations

from ..localization.peaks import DEFAULT_REFINE, DEFAULT_THRESHOLD, DEFAULT_WINDOW

# pipeline setting -> (key of a kde_net config saved before the settings moved to the pipeline, default)
PEAK_SETTINGS = {"threshold": ("threshold", DEFAULT_THRESHOLD), "peak_refine": ("refine", DEFAULT_REFINE),
                 "peak_window": ("refine_window", DEFAULT_WINDOW)}


def peak_settings(given: dict, legacy: dict) -> dict:
    """The pipeline's ``threshold``, ``peak_refine``, ``peak_window``: the given value, else the
    old kde_net config's (``DeepSTORM.legacy_localization``), else ``localize_kde``'s default."""
    return {name: type(default)(legacy.get(old, default) if given.get(name) is None else given[name])
            for name, (old, default) in PEAK_SETTINGS.items()}


