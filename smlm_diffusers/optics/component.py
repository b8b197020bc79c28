"""The :class:`Optics` as a diffusers config component: ``optics/optics_config.json`` in a pipeline folder.

diffusers loads a ``ConfigMixin`` component with ``from_config`` and saves it with
``save_config`` (its ``LOADABLE_CLASSES``), so a pipeline that registers an ``OpticsConfig``
keeps the microscope beside its networks, round-tripped as JSON.
"""

from __future__ import annotations

from diffusers.configuration_utils import ConfigMixin, register_to_config

from .optics import Optics


class OpticsConfig(ConfigMixin):
    """A pipeline component holding an :class:`Optics` (``camera`` and ``psf`` blocks)."""

    config_name = "optics_config.json"

    @register_to_config
    def __init__(self, camera: dict | None = None, psf: dict | None = None):
        self.optics = Optics.from_dict({"camera": camera or {}, "psf": psf or {"type": "gaussian"}})

    @classmethod
    def from_optics(cls, optics: Optics) -> OpticsConfig:
        d = optics.to_dict()
        return cls(camera=d["camera"], psf=d["psf"])

    def save_pretrained(self, save_directory, **kwargs):
        self.save_config(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return cls.from_config(cls.load_config(path, **kwargs))
