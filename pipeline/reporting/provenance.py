"""Which code made a result: written into the job's ``manifest.json`` and the evaluation's
``metrics.json``, so a number in a dashboard can be traced to a release, a commit and an image."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGE = "musc-pipeline"
VERSIONED_PACKAGES = ("torch", "ray", "open_clip_torch", "timm", "numpy", "pyarrow", "s3fs")
IMAGE_VARIABLE = "MUSC_IMAGE"  # set by the container image (infra/Dockerfile) to its repository:tag
COMMIT_VARIABLE = "MUSC_GIT_COMMIT"  # the image's build commit: an image holds no .git


@cache
def code_version() -> dict[str, str | None]:
    """``package`` (installed version), ``git_commit`` (with ``-dirty`` when the checkout has changes;
    outside a git checkout, e.g. Ray's copy of a working directory, the image's build commit if set,
    else None) and ``image``."""
    try:
        package = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        package = None
    commit = _git_commit(Path(__file__).resolve().parents[2]) or os.environ.get(COMMIT_VARIABLE) or None
    return {"package": package, "git_commit": commit,
            "image": os.environ.get(IMAGE_VARIABLE) or None}


def _git_commit(repo: Path) -> str | None:
    if not (repo / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Python's and the main libraries' versions."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
