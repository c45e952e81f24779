"""The package's shape: no import cycles among fedbio's modules (imports inside functions
count; ``if TYPE_CHECKING:`` blocks do not), NVFlare imported only in its layer, and a small top
level whose modules open with a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import fedbio

PACKAGE = Path(fedbio.__file__).resolve().parent
NVFLARE_HOMES = ("fedbio.federation.nvflare", "fedbio.deploy")  # where NVFlare may be imported
MAX_TOP_LEVEL = 10  # modules at fedbio/ besides __init__ and __main__
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[str]:
    """Every module name ``path`` imports, wherever the import statement stands (functions
    included), except inside ``if TYPE_CHECKING:``; ``from a import b`` gives ``a.b`` when
    ``a.b`` is a module, else ``a``."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def graph() -> dict[str, set[str]]:
    return {name: {m for m in imports(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_function_imports_and_skips_type_checking(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fedbio.cli\n"
                   "def f():\n    from fedbio import errors\n    import fedbio.paths\n")
    assert set(imports(src)) >= {"fedbio.errors", "fedbio.paths"}
    assert "fedbio.cli" not in imports(src)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles among fedbio's modules: " + "; ".join(" <-> ".join(c) for c in found)


def test_nvflare_is_imported_only_in_its_layer():
    outside = sorted(name for name, path in MODULES.items()
                     if any(m == "nvflare" or m.startswith("nvflare.") for m in imports(path))
                     and not name.startswith(NVFLARE_HOMES))
    assert not outside, f"modules importing nvflare outside {NVFLARE_HOMES}: {outside}"


def test_a_small_top_level():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_every_module_says_what_lives_there():
    bare = [name for name, path in MODULES.items()
            if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert not bare, f"modules without a docstring: {bare}"


def test_modules_stay_small():
    big = {name: n for name, path in MODULES.items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def readme_map() -> set[str]:
    """The module files the README's map names: the tree under ``fedbio/`` in "What is in the
    box", two spaces per level, one file per line."""
    text = (PACKAGE.parent / "README.md").read_text()
    block = text[text.index("\nfedbio/ "):]
    block = block[:block.index("```")]
    found, stack = set(), []
    for line in block.strip("\n").splitlines()[1:]:
        if not line.startswith("  "):
            break
        level = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.split()[0]
        stack[level:] = [name]
        if name.endswith(".py"):
            found.add("".join(stack))
    return found


def test_the_readme_map_names_every_module():
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    named = readme_map()
    assert not modules - named, f"modules the README's map leaves out: {sorted(modules - named)}"
    assert not named - modules, f"the README's map names files that do not exist: {sorted(named - modules)}"


def test_the_tests_mirror_the_package():
    """Each folder under tests/ is a folder of fedbio/, and no two test files share a name."""
    tests = Path(__file__).resolve().parent
    folders = [p.relative_to(tests) for p in tests.rglob("*") if p.is_dir()
               and "fixtures" not in p.relative_to(tests).parts and not p.name.startswith((".", "__"))]
    assert folders, "tests/ has no sub-folders"
    strays = [str(f) for f in folders if not (PACKAGE / f).is_dir()]
    assert not strays, f"test folders with no fedbio/ counterpart: {strays}"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test files share a name"


def test_importing_fedbio_makes_openmp_wait_passively():
    """Spinning OpenMP threads collapse on a loaded machine (notebook 02's transformer cell passed
    nbval's 25-minute limit beside a CPU burner); a user's own setting is kept."""
    import os
    import subprocess
    import sys

    code = "import os, fedbio; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr
