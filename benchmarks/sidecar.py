"""The command and settings a benchmark writes beside its table (``<name>.json`` next to
``<name>.csv``), so that ``python -m benchmarks.report`` quotes them instead of retyping them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def write_sidecar(csv: Path, module: str, argv: list[str] | None, **facts) -> Path:
    """Write ``{"command": "python -m <module> <argv>", **facts}`` to ``csv`` with suffix .json;
    ``argv`` None is this process's command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    meta = {"command": " ".join([f"python -m {module}", *map(shlex.quote, argv)]), **facts}
    path = Path(csv).with_suffix(".json")
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_sidecar(csv: Path) -> dict | None:
    """What :func:`write_sidecar` wrote beside ``csv``, or None."""
    meta = Path(csv).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.is_file() else None
