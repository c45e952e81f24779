"""Build-time helper for docker/Dockerfile: install fedbio's dependencies around the image's torch.

    python fedbio_deps.py requirements pyproject.toml --extras notebooks --pin nvflare==2.9.0
        fedbio's runtime (+ extra) requirements, one a line, without torch and the rest of the
        image's CUDA stack (PROTECTED), with --pin replacing a package's range
    python fedbio_deps.py constraints
        "name==version" for every PROTECTED package the image has installed: given to pip as
        --constraint, pip can keep them or fail, never download a different torch
    python fedbio_deps.py check-constraints constraints.txt
        exit 1 if an installed version no longer matches its constraint

Standard library only (Python 3.11+ for tomllib; pip's vendored tomli otherwise).
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

# What the base image ships and fedbio must not replace: PyTorch, what is built against it, and
# numpy (the image's compiled extensions expect its major version).
PROTECTED = ("torch", "torchvision", "torchaudio", "triton", "transformer-engine",
             "transformer-engine-torch", "megatron-core", "nemo-toolkit", "apex", "flash-attn",
             "numpy")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    found = _NAME.match(requirement)
    if not found:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalize(found.group(1))


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text())


def requirements(pyproject: Path, extras: list[str], pins: list[str],
                 protected: tuple[str, ...] = PROTECTED) -> list[str]:
    """The project's requirements (+ extras), protected packages left out, pins applied."""
    project = _load_toml(pyproject)["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"fedbio_deps: no extra {extra!r} in {pyproject}")
        reqs += optional[extra]
    pinned = {requirement_name(p): p for p in pins}
    skip = {normalize(p) for p in protected}
    out, seen = [], set()
    for req in reqs:
        name = requirement_name(req)
        if name in skip or name in seen:
            continue
        seen.add(name)
        out.append(pinned.pop(name, req))
    out += pinned.values()  # pins of packages the project does not list
    return out


def constraints(protected: tuple[str, ...] = PROTECTED) -> list[str]:
    """``name==version`` of each protected package installed in this environment."""
    out = []
    for name in protected:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def check_constraints(path: Path) -> list[str]:
    """Installed versions that differ from ``path``'s ``name==version`` lines."""
    bad = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            installed = metadata.version(name.strip())
        except metadata.PackageNotFoundError:
            bad.append(f"{name.strip()}: was {version}, now not installed")
            continue
        if installed != version.strip():
            bad.append(f"{name.strip()}: was {version.strip()}, now {installed}")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("requirements")
    r.add_argument("pyproject", type=Path)
    r.add_argument("--extras", nargs="*", default=[])
    r.add_argument("--pin", action="append", default=[])
    sub.add_parser("constraints")
    c = sub.add_parser("check-constraints")
    c.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(requirements(args.pyproject, args.extras, args.pin)))
    elif args.command == "constraints":
        found = constraints()
        if not any(line.startswith("torch==") for line in found):
            print("fedbio_deps: torch is not installed in this image", file=sys.stderr)
            return 1
        print("\n".join(found))
    else:
        bad = check_constraints(args.path)
        if bad:
            print("fedbio_deps: the install changed the image's stack: " + "; ".join(bad),
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
