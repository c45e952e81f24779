"""Notebooks are committed clean: no outputs, no execution counts, portable, env-configurable."""

from __future__ import annotations

import re

import nbformat
import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"""(?<![\w.~-])/(tmp|home|root|Users|mnt|scratch|data|work|opt)(/|\b)""")
SYS_PATH = re.compile(r"\bsys\.path\b|\bPYTHONPATH\b")


def _code(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernelspec must be python3"
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"cell {number} has saved outputs; clear them"
        assert cell.get("execution_count") is None, f"cell {number} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_portable(path):
    nb = nbformat.read(path, as_version=4)
    for number, source in enumerate(_code(nb)):
        assert not SYS_PATH.search(source), f"code cell {number} edits the import path"
        found = ABSOLUTE_PATH.search(source)
        assert not found, f"code cell {number} uses an absolute path ({found.group(0)!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_settings(path):
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    assert code, "notebook has no code cell"
    assert "FEDBIO_" in code[0], (
        "the first code cell must be the settings cell, configurable through FEDBIO_* variables")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_call_the_package_and_define_nothing(path):
    """Sweeps and tables live in fedbio (``fedbio.experiments``), where they are tested once; a
    notebook that defines its own repeats them."""
    nb = nbformat.read(path, as_version=4)
    for number, source in enumerate(_code(nb)):
        found = re.search(r"^\s*(def|class) (\w+)", source, re.M)
        assert not found, f"code cell {number} defines {found.group(2)}; put it in fedbio"
