"""Where fedbio finds its shipped data: ``data/`` beside the package (a source checkout) or
``$FEDBIO_DATA``. Where it writes is ``fedbio.outputs``.
"""

from __future__ import annotations

import os
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
