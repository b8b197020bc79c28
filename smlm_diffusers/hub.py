"""Push trained pipelines (or the Space) to the Hugging Face Hub.

    python -m smlm_diffusers.hub push runs/ddpm/pipeline --repo-id ORG/NAME [--dry-run]

``push_folder`` creates the repo and uploads the folder with ``huggingface_hub``, leaving
out training checkpoints and caches. The curated model card (README.md) goes up last, in a
commit of its own, because ``push_to_hub`` of a pipeline would overwrite it.
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

# never uploaded: resumable training state (pickles), caches, logs of the shell
IGNORE_PATTERNS = ["checkpoints/*", "**/checkpoints/*", "*.bin", "*.pkl", "*.pt", "*.pth", "__pycache__/*",
                   "**/__pycache__/*", ".git/*", "*.log", ".cache/*"]


def files_to_upload(folder: str | Path, ignore_patterns: list[str] | None = None) -> list[str]:
    """Relative paths under ``folder`` that :func:`push_folder` uploads, sorted."""
    folder = Path(folder)
    patterns = IGNORE_PATTERNS + list(ignore_patterns or [])
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
                out.append(rel)
    return out


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload smlm-diffusers pipeline",
) -> list[str]:
    """Create ``repo_id`` (if needed) and upload ``folder``; README.md last. Returns the file list."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = files_to_upload(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder),
                      ignore_patterns=IGNORE_PATTERNS + ["README.md"], commit_message=commit_message)
    if (folder / "README.md").exists():
        api.upload_file(path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo_id,
                        repo_type=repo_type, commit_message="Upload model card")
    return files


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m smlm_diffusers.hub", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push", help="upload a folder to a Hub repo")
    push.add_argument("folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--repo-type", default="model", choices=["model", "space", "dataset"])
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded and stop")
    args = p.parse_args(argv)
    files = push_folder(args.folder, args.repo_id, args.repo_type, args.private, dry_run=args.dry_run)
    print(("would upload" if args.dry_run else "uploaded") + f" {len(files)} files to {args.repo_id}:")
    for f in files:
        print("  " + f)


if __name__ == "__main__":
    main()


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
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir, token=token,
                                      ignore_patterns=IGNORE_PATTERNS))
    except LocalEntryNotFoundError as err:
        raise OSError(
            f"cannot load {name_or_path}: it is not cached locally and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network). Download it once online, or pass a local folder."
        ) from err
