"""Uploads to the Hugging Face Hub: a pipeline folder (the model card last) or the demo Space.

``push_to_hub`` of a pipeline overwrites README.md, so the curated card goes up last, in a
commit of its own. A Space push (the folder is the repository root) uploads only ``app.py``,
``requirements.txt``, ``README.md`` (with the Space front matter added), the package
``smlm_diffusers/`` and ``pretrained/``. :func:`upload_plan` lists exactly what goes up.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .loading import IGNORE_PATTERNS

# a Space gets the app, its requirements and card, the package and the shipped pipeline: nothing else
SPACE_ROOT_FILES = ["app.py", "requirements.txt"]
SPACE_FOLDERS = ["smlm_diffusers", "pretrained"]
SPACE_IGNORE_PATTERNS = ["*.pyc", "*.pyo", "*.egg-info/*", "**/.ipynb_checkpoints/*", ".DS_Store", "**/.DS_Store"]


def files_to_upload(folder: str | Path, ignore_patterns: list[str] | None = None) -> list[str]:
    """Relative paths under ``folder`` that :func:`push_folder` uploads (model repos), sorted."""
    folder = Path(folder)
    patterns = IGNORE_PATTERNS + list(ignore_patterns or [])
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
                out.append(rel)
    return out


def space_files(root: str | Path) -> list[str]:
    """Relative paths a Space push uploads from the repository ``root``, sorted.

    ``README.md`` is always listed: it is uploaded with the Space front matter added
    (:func:`space_readme`), whether or not the root has one.
    """
    root = Path(root)
    if not (root / "app.py").is_file():
        raise FileNotFoundError(f"{root} has no app.py: a Space push takes the repository root")
    files = [name for name in SPACE_ROOT_FILES if (root / name).is_file()] + ["README.md"]
    for sub in SPACE_FOLDERS:
        if (root / sub).is_dir():
            files += [f"{sub}/{rel}" for rel in files_to_upload(root / sub, SPACE_IGNORE_PATTERNS)]
    return sorted(files)


def upload_plan(path: str | Path, repo_type: str = "model") -> list[str]:
    """Exactly the files :func:`push_folder` uploads for ``path`` (what ``--dry-run`` prints)."""
    path = Path(path)
    if repo_type == "space":
        return space_files(path)
    files = files_to_upload(path)
    if "README.md" not in files and (path / "model_index.json").is_file():
        files = sorted(files + ["README.md"])  # the card is generated before the upload
    return files


def _front_matter(text: str) -> tuple[dict, str]:
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        return {}, text
    import yaml

    return (yaml.safe_load(m.group(1)) or {}), text[m.end():]


def space_readme(root: str | Path) -> str:
    """The root README.md with the Space front matter (gradio SDK, app.py) merged in front.

    Keys already in the README's front matter win; the gradio version comes from requirements.txt.
    """
    from huggingface_hub import SpaceCardData

    root = Path(root)
    readme = root / "README.md"
    meta, body = _front_matter(readme.read_text(encoding="utf-8") if readme.is_file() else "")
    if not body.strip():
        body = ("\n# smlm-diffusers\n\nUncertainty-aware single-molecule localization microscopy: a DeepSTORM "
                "estimate plus conditional DDPM posterior samples, with per-molecule uncertainties.\n")
    defaults = {"title": "smlm-diffusers", "emoji": "🔬", "colorFrom": "indigo", "colorTo": "pink",
                "sdk": "gradio", "app_file": "app.py", "pinned": False, "license": "apache-2.0",
                "short_description": "Uncertainty-aware SMLM with a conditional diffusion model",
                "tags": ["smlm", "microscopy", "super-resolution", "diffusers"]}
    reqs = root / "requirements.txt"
    pin = re.search(r"^gradio==([\w.]+)", reqs.read_text(), re.M) if reqs.is_file() else None
    if pin:
        defaults["sdk_version"] = pin.group(1)
    body = body if body.startswith("\n") else "\n" + body
    return f"---\n{SpaceCardData(**(defaults | meta)).to_yaml()}\n---\n{body}"


def _literal(path: str) -> str:
    """An fnmatch pattern that matches exactly ``path``."""
    return re.sub(r"([\[\]*?])", r"[\1]", path)


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload smlm-diffusers pipeline",
    results: str | Path | None = None,
    space_sdk: str = "gradio",
) -> list[str]:
    """Create ``repo_id`` (if needed) and upload ``folder``; README.md last. Returns the file list.

    A pipeline folder without README.md gets its model card generated first (with
    ``results``, a benchmark ``results.csv``, if given). For ``repo_type="space"``
    ``folder`` is the repository root and only :func:`space_files` go up, in one commit.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = upload_plan(folder, repo_type)
    if dry_run:
        return files
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                    space_sdk=space_sdk if repo_type == "space" else None)
    if repo_type == "space":
        # explicit operations: the root also holds .venv, runs, caches, which must not even be walked
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files if f != "README.md"]
        ops.append(CommitOperationAdd(path_in_repo="README.md",
                                      path_or_fileobj=space_readme(folder).encode("utf-8")))
        api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=ops,
                          commit_message="Upload smlm-diffusers Space")
        return files
    if "README.md" in files and not (folder / "README.md").exists():
        from .card import write_model_card

        write_model_card(folder, results=results, repo_id=repo_id)
    # exactly the planned files (the card aside), whatever upload_folder's own pattern rules are
    others = [_literal(f) for f in files if f != "README.md"]
    if others:
        api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), allow_patterns=others,
                          commit_message=commit_message)
    if (folder / "README.md").exists():
        api.upload_file(path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo_id,
                        repo_type=repo_type, commit_message="Upload model card")
    return files
