"""The tutorial notebooks committed with their outputs (``make notebooks``): each one executed top
to bottom in a fresh kernel, then cleaned and written back.

    python -m fedbio.reporting.notebooks notebooks/*.ipynb --runs runs/notebooks

Every notebook runs with the quick profile, from an empty run cache (``--runs``, made here,
locked while in use, removed after a clean pass; a folder it did not make, or one holding a
notebook or the working folder, is refused), with the threads pinned (``FEDBIO_THREADS``) and a
fixed hash seed, so executing twice gives the same result cells; CI re-executes them with nbval
and compares the cells marked ``# NBVAL_CHECK_OUTPUT``. Before a notebook is written back its
stderr (progress bars, warnings) and widgets are dropped, neighbouring stdout is merged with
carriage returns resolved, per-cell timings are removed, and paths in the checkout are written
relative to the notebook's folder. A notebook whose cell fails, times out or is interrupted is
not written, and the run cache is kept.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from fedbio.errors import FedbioError, Parser

MARK = ".fedbio-notebooks"    # in a run cache this module made, so a later run may empty it
MARK_TEXT = "a run cache made by `make notebooks`; it may be emptied\n"
CHECK = "# NBVAL_CHECK_OUTPUT"
THREADS = "2"                 # the cores CI's machines have: committed numbers are theirs
ENV = {"FEDBIO_PROFILE": "quick", "FEDBIO_THREADS": THREADS, "PYTHONHASHSEED": "0"}
WIDGET = "application/vnd.jupyter.widget-view+json"
LOCK = ".lock"                # the pid of the run using the cache
_CARRIAGE = re.compile(r"^.*\r(?=[^\n])", re.M)


def _relative(text: str, folder: Path | None) -> str:
    if folder is None:
        return text
    return text.replace(f"{folder}{os.sep}", "").replace(f"{folder.parent}{os.sep}", f"..{os.sep}")


def _resolve_returns(text: str) -> str:
    text = text.replace("\r\n", "\n")
    return re.sub(r"\r+$", "", _CARRIAGE.sub("", text), flags=re.M)


def is_stderr(out) -> bool:
    """An output ``make notebooks`` drops and nbval does not compare (``tests/conftest.py``)."""
    return out.get("output_type") == "stream" and out.get("name") == "stderr"


def clean(nb, folder: Path | None = None) -> None:
    """Drop stderr, widgets (progress bars) and per-cell timings; merge neighbouring stdout
    outputs with carriage returns resolved (a progress line keeps its last state); paths under
    the notebook's ``folder`` or the checkout above it written relative to ``folder``, as the
    notebook's own."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        outputs = []
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}) or is_stderr(out):
                continue
            last = outputs[-1] if outputs else None
            if out.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream":
                last.text += out.text
                continue
            outputs.append(out)
        for out in outputs:
            if "text" in out:
                out.text = _relative(_resolve_returns(out.text), folder)
            for key, value in out.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    out.data[key] = _relative(value, folder)
            if out.get("output_type") == "error":
                out.evalue = _relative(out.evalue, folder)
                out.traceback = [_relative(line, folder) for line in out.traceback]
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}


def checked_cells(nb) -> list[int]:
    """Indices of the code cells nbval compares: a comment line ``# NBVAL_CHECK_OUTPUT``, as
    nbval reads it."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and any(line.strip().startswith("#") and line.strip().lstrip("#").strip() == CHECK[2:]
                    for line in c.source.splitlines())]


def read_notebook(path: Path):
    """``path`` read and validated, or a FedbioError naming it."""
    import nbformat

    if path.suffix != ".ipynb" or not path.is_file():
        raise FedbioError(f"{path}: not a notebook file; give .ipynb files")
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:   # nbformat raises several kinds (JSON, schema, encoding)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FedbioError(f"{path}: not a readable notebook ({reason[:120]}); give a .ipynb file "
                          "saved by Jupyter") from None
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    if kernel != "python3":
        raise FedbioError(f"{path}: its kernel is {kernel!r}; only python3 notebooks are executed here")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise FedbioError(f"{path}: cannot be written back; make it writable first")
    return nb


def execute(path: Path, runs: Path, timeout: int = 1800):
    """``path`` executed in a fresh kernel started in its folder, with ``ENV`` and
    ``FEDBIO_RUNS`` = ``runs``; the executed, cleaned notebook. Only the kernel's own stderr is
    written, into ``runs/kernel-NAME.log``."""
    from nbclient import NotebookClient

    nb = read_notebook(path)
    saved = {key: os.environ.get(key) for key in (*ENV, "FEDBIO_RUNS", "MPLBACKEND")}
    os.environ.update(ENV, FEDBIO_RUNS=os.path.relpath(runs, path.parent))
    os.environ.pop("MPLBACKEND", None)   # the kernel's inline backend draws the figures
    try:
        with open(runs / f"kernel-{path.stem}.log", "ab") as log:   # the kernel's own stderr
            NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": str(path.parent)}}).execute(stderr=log)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    clean(nb, path.parent)
    return nb


def _holder(runs: Path) -> int | None:
    """The pid of a live run that uses the cache ``runs``, if any."""
    try:
        pid = int((runs / LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def run_cache(runs: Path, notebooks: list[Path] = ()) -> Path:
    """An empty run cache at ``runs``, locked by this process. Only a folder this module made
    (it holds ``MARK``) is emptied; any other, one in use by another run, and a folder that holds
    a notebook or the working folder are refused."""
    given, runs = runs, runs.resolve()
    inside = [p for p in (*notebooks, Path.cwd()) if p.resolve() == runs or runs in p.resolve().parents]
    if inside:
        raise FedbioError(f"{runs}: holds {inside[0]}, which emptying it would delete; "
                          "give --runs a folder of its own, e.g. runs/notebooks")
    if given.is_symlink():
        raise FedbioError(f"{given}: is a link; give the folder itself as --runs")
    if runs.exists():
        marked = (runs / MARK).is_file() and not (runs / MARK).is_symlink()
        if not runs.is_dir() or not marked or (runs / MARK).read_text(errors="replace") != MARK_TEXT:
            raise FedbioError(f"{runs}: exists and was not made by `make notebooks`; "
                              "choose another --runs, or remove it yourself")
        holder = _holder(runs)
        if holder is not None:
            raise FedbioError(f"{runs}: in use by `make notebooks` (process {holder}); wait for it, "
                              f"choose another --runs, or delete {runs / LOCK} if no such run is going on")
        shutil.rmtree(runs)
    try:
        runs.mkdir(parents=True)
        (runs / MARK).write_text(MARK_TEXT)
        (runs / LOCK).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise FedbioError(f"{runs}: cannot be made ({exc.strerror}); choose another --runs") from None
    return runs


def _interrupted(exc: BaseException | None) -> bool:
    """Ctrl-C, even where the kernel's shutdown raised something else on top of it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m fedbio.reporting.notebooks",
                    description="Execute notebooks and write them back with outputs.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--runs", type=Path, default=Path("runs/notebooks"),
                        help="the run cache, made here and emptied first (default: runs/notebooks)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may take")
    args = parser.parse_args(argv)
    try:
        try:
            import nbformat
            from nbclient.exceptions import CellControlSignal, DeadKernelError
        except ImportError as exc:
            raise FedbioError(f"executing notebooks needs {exc.name}: install the notebooks extra "
                              "(pip install -e '.[notebooks]', or make setup)") from None
        if args.timeout < 1:
            raise FedbioError(f"--timeout must be a whole number of seconds >= 1, not {args.timeout}; "
                              "give e.g. 1800")
        notebooks = list({path.resolve(): path for path in args.notebooks}.values())   # each once
        for path in notebooks:
            read_notebook(path)
        missing = [p for p in (args.runs.resolve(), *args.runs.resolve().parents) if not p.exists()]
        made = missing[-1] if missing else None
        runs = run_cache(args.runs, notebooks)
    except FedbioError as exc:
        print(f"fedbio: error: {exc}", file=sys.stderr)
        return 2
    for path in notebooks:
        start = time.monotonic()
        print(f"{path}: executing ...", flush=True)
        try:
            nb = execute(path.resolve(), runs, args.timeout)
        except BaseException as exc:
            if _interrupted(exc):
                print(f"{path}: interrupted; the notebook is not written, the run cache is kept in "
                      f"{runs}", file=sys.stderr)
                return 130
            if not isinstance(exc, Exception):
                raise
            known = isinstance(exc, (CellControlSignal, DeadKernelError, TimeoutError))
            reason = str(exc).strip() if known and str(exc).strip() else f"stopped ({type(exc).__name__}: {exc})"
            print(f"{path}: {reason}\n{path}: failed; the notebook is not written, the run cache and "
                  f"the kernel's log are kept in {runs}", file=sys.stderr)
            return 1
        try:
            nbformat.write(nb, path)
        except OSError as exc:
            print(f"{path}: cannot be written ({exc.strerror}); the run cache is kept in {runs}",
                  file=sys.stderr)
            return 1
        size = path.stat().st_size
        print(f"{path}: written in {time.monotonic() - start:.0f} s, {size / 1e3:.0f} kB, "
              f"{len(checked_cells(nb))} checked cell(s)", flush=True)
    shutil.rmtree(runs)
    for folder in runs.parents:   # the folders made for it, where nothing else was put
        if made is None or made not in (folder, *folder.parents) or any(folder.iterdir()):
            break
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
