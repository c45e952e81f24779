"""Notebooks are committed executed (``make notebooks``): in order, with their outputs and figures,
no stderr, small; their result cells checked by nbval; portable and env-configurable."""

from __future__ import annotations

import re

import nbformat
import pytest
from conftest import ROOT

from fedbio.reporting.notebooks import checked_cells

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"""(?<![\w.~-])/(tmp|home|root|Users|mnt|scratch|data|work|opt)(/|\b)""")
SYS_PATH = re.compile(r"\bsys\.path\b|\bPYTHONPATH\b")


def _code(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


DRAWS = re.compile(r"\bfig\b\s*=|\bplt\.|\bplot_\w+\(|\bImage\(")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(tmp|home|root|Users|work|scratch|mnt)/")
MAX_BYTES = 1_000_000


def _outputs(nb):
    return [(i, out) for i, cell in enumerate(nb.cells) if cell.cell_type == "code" for out in cell.outputs]


def _text(out) -> str:
    return out.get("text", "") + "".join(v for k, v in out.get("data", {}).items()
                                        if k.startswith("text/") and isinstance(v, str))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_in_order(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernelspec must be python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code if cell.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}: run `make notebooks`"
    assert all(cell.execution_count is None and not cell.outputs for cell in code if not cell.source.strip())
    assert any(cell.outputs for cell in code), "no outputs: run `make notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_clean_small_and_portable(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < MAX_BYTES, f"{path.stat().st_size:,} bytes"
    for number, out in _outputs(nb):
        assert out.output_type != "error", f"cell {number} failed: {out.get('ename')}"
        assert out.get("name") != "stderr", f"cell {number} kept stderr (progress bars, warnings)"
        assert "\r" not in out.get("text", ""), f"cell {number} kept a progress line"
        found = MACHINE_PATH.search(_text(out))
        assert not found, f"cell {number} shows a path of the machine it ran on ({found.group(0)!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_that_draws_shows_its_figures(path):
    nb = nbformat.read(path, as_version=4)
    drawing = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and DRAWS.search(c.source)]
    pngs = [i for i, out in _outputs(nb) if "image/png" in out.get("data", {})]
    if drawing:
        assert pngs, f"cells {drawing} draw, but the notebook has no PNG output"
        assert set(drawing) <= set(pngs), f"cells {sorted(set(drawing) - set(pngs))} draw no PNG"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_result_cells_are_checked_by_nbval(path):
    """The last cell asserts the notebook's claims and prints that they hold; it and the cells
    of result tables carry ``# NBVAL_CHECK_OUTPUT``, so CI compares them with what is committed."""
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    checked = checked_cells(nb)
    assert code[-1] in checked, "the claims cell (the last) is not checked"
    assert len(checked) >= 2, f"only cells {checked} are checked; check the result tables too"
    for i in checked:
        outputs = nb.cells[i].outputs
        assert outputs and any(_text(o).strip() for o in outputs), f"checked cell {i} shows nothing"
        assert not DRAWS.search(nb.cells[i].source), f"checked cell {i} draws: its image is not compared"


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
