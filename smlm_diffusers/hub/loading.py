"""A local pipeline folder for a folder path or a Hub repo id: all the pipeline and the CLI need of the Hub."""

from __future__ import annotations

from pathlib import Path

# never uploaded, never downloaded: resumable training state (pickles), caches, logs of the shell
IGNORE_PATTERNS = ["checkpoints/*", "**/checkpoints/*", "*.bin", "*.pkl", "*.pt", "*.pth", "__pycache__/*",
                   "**/__pycache__/*", ".git/*", "*.log", ".cache/*"]


def resolve_pretrained(name_or_path, revision: str | None = None, cache_dir: str | None = None,
                       token: str | None = None) -> Path:
    """A local pipeline folder for ``name_or_path``: the folder itself, or a Hub snapshot.

    A repo id is fetched with ``snapshot_download`` (diffusers 0.42 cannot resolve this
    package's components by repo id, so the whole folder is downloaded, then loaded locally).
    With ``HF_HUB_OFFLINE=1`` only the local cache is used.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} has no model_index.json: not a pipeline folder")
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(f"{name_or_path} is neither a pipeline folder nor a Hub repo id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir, token=token,
                                      ignore_patterns=IGNORE_PATTERNS))
    except RepositoryNotFoundError as err:
        # "org/name" is also what a relative folder path looks like
        raise FileNotFoundError(
            f"{name_or_path} is not a folder (relative to {Path.cwd()}) and no Hub repo of that id was found"
        ) from err
    except LocalEntryNotFoundError as err:
        raise OSError(
            f"cannot load {name_or_path}: it is not cached locally and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network). Download it once online, or pass a local folder."
        ) from err

