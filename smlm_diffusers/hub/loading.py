"""A local pipeline folder for a folder path or a Hub repo id: all the pipeline and the CLI need of the Hub."""

from __future__ import annotations

from pathlib import Path

# never uploaded, never downloaded: resumable training state (pickles), caches, logs of the shell
IGNORE_PATTERNS = ["checkpoints/*", "**/checkpoints/*", "*.bin", "*.pkl", "*.pt", "*.pth", "__pycache__/*",
                   "**/__pycache__/*", ".git/*", "*.log", ".cache/*"]


def resolve_pretrained(name_or_path, revision: str | None = None, cache_dir: str | None = None,
                       token: str | None = None) -> Path:
    """A local pipeline folder for ``name_or_path``, tried in this order:

    1. a folder, relative to the working directory (or absolute);
    2. a shipped pipeline folder by name (``smlm-ddpm-2d-100nm``, or ``pretrained/smlm-ddpm-2d-100nm`` from any
       folder: :func:`smlm_diffusers.defaults.shipped_model_path`);
    3. a Hub repo id (``org/name``), fetched with ``snapshot_download`` (diffusers 0.42 cannot resolve this
       package's components by repo id, so the whole folder is downloaded, then loaded locally); with
       ``HF_HUB_OFFLINE=1`` only the local cache is used.

    A failure says what was tried.
    """
    from ..defaults import shipped_model_names, shipped_model_path

    path = Path(name_or_path)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return path
        shipped = shipped_model_path(name_or_path)
        if shipped is None:
            raise FileNotFoundError(f"{path.resolve()} has no model_index.json: not a pipeline folder")
        return shipped
    shipped = shipped_model_path(name_or_path)
    if shipped is not None:
        return shipped
    tried = (f"no folder {path} relative to {Path.cwd()}, no shipped pipeline folder of that name (shipped: "
             f"{', '.join(shipped_model_names()) or 'none found'})")
    if path.exists() or str(name_or_path).count("/") != 1 or not all(str(name_or_path).split("/")):
        raise FileNotFoundError(f"cannot load {name_or_path}: {tried}, and it is not a Hub repo id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir, token=token,
                                      ignore_patterns=IGNORE_PATTERNS))
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"cannot load {name_or_path}: {tried}, and no Hub repo of that id was found") from err
    except LocalEntryNotFoundError as err:
        import os

        why = ("HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
               else "the Hub could not be reached")
        raise OSError(
            f"cannot load {name_or_path}: {tried}; as a Hub repo id it is not cached locally and {why}. "
            "Pass a pipeline folder, a shipped name, or download the repo once online."
        ) from err
