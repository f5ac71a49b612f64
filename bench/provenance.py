"""Where and with what a result was produced: host and software versions, git commit."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

# The commit of a copied tree without git (a GPU node given a copy of the checkout): set by
# whoever copies it, e.g. `COLOSSUS_GIT_SHA=<sha> bash bench/device_campaign.sh`.
GIT_SHA_ENV = "COLOSSUS_GIT_SHA"


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package runs from; outside git, the commit named
    by $COLOSSUS_GIT_SHA (dirty unknown), else (None, None)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5,
                               check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(GIT_SHA_ENV) or None, None


def _version(dist: str) -> str | None:
    """An installed distribution's version, read from its metadata without importing it:
    importing triton here, before `kernels` has chosen the interpreter on CPU, would decorate
    Triton's own helpers in compiled mode and break every interpreted kernel."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@functools.cache
def software() -> dict:
    """The `software` dict of the result record."""
    sha, dirty = git_state()
    return {"python": platform.python_version(), "torch": _version("torch"),
            "triton": _version("triton"), "colossus_bench": _version("colossus-bench"),
            "git_sha": sha,
            "git_dirty": dirty}


def host() -> str:
    return socket.gethostname()
