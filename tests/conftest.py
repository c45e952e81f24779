"""Shared fixtures: paths to the shipped data and small hand-written input files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCL = ROOT / "data" / "scl" / "deeploc_valtest.fasta"
HARD = ROOT / "data" / "scl" / "deeploc_setHARD.fasta"


@pytest.fixture
def write(tmp_path):
    """Write text into a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write
