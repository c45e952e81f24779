"""Where fedbio finds the shipped data and writes its outputs.

Nothing is written outside the folder the user names; the shipped data is read from ``data/``
beside the package (a source checkout) or from ``$FEDBIO_DATA``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fedbio.errors import FedbioError


def data_dir() -> Path:
    """The folder holding the shipped data sets (``data/`` of the repository)."""
    env = os.environ.get("FEDBIO_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def shipped(name: str) -> Path:
    """Path of a shipped file, e.g. ``shipped("scl/deeploc_valtest.fasta")``; a clear error if absent."""
    path = data_dir() / name
    if not path.exists():
        raise FedbioError(
            f"shipped data file {path} not found; run from a checkout of fedbio "
            "or point FEDBIO_DATA at its data/ folder"
        )
    return path


def check_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite`` is set."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FedbioError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FedbioError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    return out


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False):
    """Yield a temporary folder beside ``out``; move it into place only if the block succeeds.

    A failure leaves no half-written ``out`` behind (and an existing ``out`` untouched).
    """
    out = check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
