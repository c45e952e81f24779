"""The run manifest: package versions, data checksums, code version and hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("fedbio", "torch", "transformers", "peft", "safetensors", "numpy", "nvflare")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    """Output of a read-only git command in ``root``, or None."""
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                             text=True, timeout=5, stdin=subprocess.DEVNULL,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(root: Path | None = None) -> str:
    """The source checkout's commit (``git describe``), ``-dirty`` when tracked files changed;
    the package version when there is no checkout.

    Read-only: ``git describe --dirty`` refreshes the checkout's index and so writes
    ``.git/index`` (taking ``index.lock``) even with ``--no-optional-locks``; ``git status`` with
    ``--no-optional-locks`` compares the same files without writing anything.
    """
    root = root or Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        described = _git(root, "describe", "--always")
        if described:
            changed = _git(root, "status", "--porcelain", "--untracked-files=no")
            return described + ("-dirty" if changed else "")
    return _version("fedbio") or "unknown"


def hardware() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def manifest(checksums: dict[str, str]) -> dict:
    return {"packages": {p: _version(p) for p in PACKAGES}, "code_version": code_version(),
            "data_md5": checksums, "hardware": hardware()}
