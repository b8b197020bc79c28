"""YAML configs mapped onto dataclasses, strictly: an unknown or misspelled key is an error."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    upgrade = getattr(cls, "upgrade_config", None)  # a class that reads older configs maps them first
    if upgrade is not None:
        data = upgrade(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        sub = hints.get(name)
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = _from_dict(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """A nested dataclass: its own ``from_dict`` where it has one (e.g. ``Camera``), else :func:`_build`."""
    if not hasattr(cls, "from_dict"):
        return _build(cls, data, where)
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from err


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Read ``path`` (YAML) into dataclass ``cls``; ``overrides`` (top-level keys) win."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return _build(cls, data, str(path or cls.__name__))


def config_to_dict(cfg) -> dict[str, Any]:
    """Dataclass config -> plain dict (tuples as lists), for YAML/JSON output."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))
