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


def code_version() -> str:
    """``git describe`` of the source checkout when there is one, else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
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
