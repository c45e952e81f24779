"""Where a command writes: one rule for every output folder and file.

    with output_dir("runs/fedavg", overwrite=False, inputs=[split], kind="run") as work:
        ...                           # write into runs/fedavg.running/

- While a command works, its output lives in a visible ``OUT.running/``; on success it is renamed
  to ``OUT``. An existing ``OUT`` is replaced only with ``--overwrite``, and only once the new one
  is complete, so a failed ``--overwrite`` run leaves the old one as it was.
- A failure or an interruption (Ctrl-C, SIGTERM) moves what was written, logs included, to
  ``OUT.failed/`` (``OUT.failed-2/``, … if that is taken) with the error in ``error.txt``; the
  error says where. Nothing is deleted.
- ``OUT.lock``, an ``flock`` that dies with its process, makes a second writer to the same
  ``OUT`` fail at once; the lock file is removed when the command ends.
- Refused before anything is written: an ``OUT`` that is a symbolic link, a file where a folder
  is wanted (or the reverse), a non-empty ``OUT`` without ``--overwrite``, and an ``OUT`` that
  is, holds or lies inside one of the command's inputs, the current folder, fedbio's package or
  its shipped data.
- ``--overwrite`` replaces only what fedbio wrote: every output folder gets ``.fedbio.json`` (its
  kind and the files it holds) when it is published; a folder without one, of another kind
  (a split where a run goes), or holding files fedbio did not write (a note a user added) is
  refused, naming such a file.

``output_file`` applies the same rule to a single file (``fedbio predict --out preds.csv``):
written beside as ``NAME.running``, renamed on success, removed on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fedbio.errors import FedbioError

RUNNING, FAILED, LOCK = ".running", ".failed", ".lock"
MARKER = ".fedbio.json"  # in every output folder: its kind and the files fedbio wrote there
SCRATCH = "tmp"   # OUT.running/tmp: TMPDIR of the command and its child processes, removed at the end


def _abs(path: str | Path) -> Path:
    """Absolute, without resolving a symbolic link in the last part (that is checked)."""
    return Path(os.path.abspath(os.fspath(path)))


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def sibling(out: Path, suffix: str) -> Path:
    """``OUT.running``, ``OUT.failed``, ``OUT.lock``: names beside ``out``."""
    return out.with_name(out.name + suffix)


def protected() -> list[Path]:
    """Folders no command may write into or replace: the package itself and its shipped data."""
    from fedbio.paths import data_dir

    return [Path(__file__).resolve().parent, data_dir()]


def _shown(option: str, out: Path, given: str | Path) -> str:
    return f"{option} {given}" if option else str(given)


def check_output(out: str | Path, *, overwrite: bool = False, inputs: Iterable = (), kind: str = "run",
                 option: str = "--out", file: bool = False) -> Path:
    """Refuse an output that breaks the rule above; return it as an absolute path. Writes nothing."""
    given, out = out, _abs(out)
    name = _shown(option, out, given)
    if out.is_symlink():
        raise FedbioError(f"{name} is a symbolic link (to {os.readlink(out)}); give a real path")
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise FedbioError(f"{name}: {parent} is a file, not a folder; choose another path")
            break
    real = _real(out)
    cwd = _real(os.getcwd())
    if real == cwd or real in cwd.parents:
        raise FedbioError(f"{name} is the current folder or holds it; choose a new folder")
    for item in [*(i for i in inputs if i is not None), *protected()]:
        source = _real(item)
        if real == source or real in source.parents:
            raise FedbioError(f"{name} is or holds {item}, which this command reads; "
                              "choose a path outside it")
        if source.is_dir() and source in real.parents:
            raise FedbioError(f"{name} lies inside {item}, which this command reads; "
                              "choose a path outside it")
    if file:
        if out.is_dir():
            raise FedbioError(f"{name} is a folder; give a file name")
        if out.exists() and not overwrite:
            raise FedbioError(f"{name} exists; pass --overwrite to replace it")
        return out
    if out.exists():
        if not out.is_dir():
            raise FedbioError(f"{name} exists and is not a folder; choose another path")
        if any(out.iterdir()):
            if not overwrite:
                raise FedbioError(f"{name} exists and is not empty; pass --overwrite to replace it")
            _check_replaceable(out, name, kind)
    return out


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if (p.is_file() or p.is_symlink()) and p.name != MARKER}


def _check_replaceable(out: Path, name: str, kind: str) -> None:
    """``--overwrite`` may replace ``out`` only if fedbio wrote it, as a ``kind``, and nothing else."""
    redo = "--overwrite only replaces what fedbio wrote: choose another path or remove it yourself"
    try:
        info = json.loads((out / MARKER).read_text())
        files, was, parts = set(info["files"]), info["kind"], list(info.get("parts", []))
    except FileNotFoundError:
        raise FedbioError(f"{name} is not a folder fedbio wrote (it has no {MARKER}); {redo}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise FedbioError(f"{name}: its {MARKER} is damaged; {redo}") from None
    if was != kind:
        raise FedbioError(f"{name} holds a fedbio {was}, not a {kind}; {redo}")
    extra = sorted(f for f in _files(out) - files if not _in_part(f, parts))
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise FedbioError(f"{name} holds {extra[0]}{more}, which fedbio did not write; --overwrite "
                          "would delete it: move it out first, or choose another path")


def _mark(folder: Path, kind: str) -> None:
    """Write ``folder/.fedbio.json``: what ``--overwrite`` may later replace."""
    (folder / MARKER).write_text(json.dumps({"kind": kind, "files": sorted(_files(folder))}) + "\n")


def add_part(folder: Path, part: str) -> None:
    """Record in ``folder``'s marker, before anything is written, that another command writes
    ``folder/part`` (``fedbio attack`` into a run): ``part/`` and the ``part.lock``,
    ``.running/`` and ``.failed*/`` it may leave are then fedbio's, for ``--overwrite``."""
    path = Path(folder) / MARKER
    try:
        info = json.loads(path.read_text())
        parts = sorted({*info.get("parts", []), part})
    except (OSError, ValueError, TypeError, AttributeError):   # no marker, or a damaged one
        return
    tmp = path.with_name(MARKER + ".part")
    tmp.write_text(json.dumps({**info, "parts": parts}) + "\n")
    os.replace(tmp, path)


def _in_part(name: str, parts: Iterable[str]) -> bool:  # in an add_part part, or its siblings
    return any(name.split("/", 1)[0] in (p, p + LOCK, p + RUNNING) or name.startswith(p + FAILED)
               for p in parts)


class OutputLock:
    """``OUT.lock``: an exclusive ``flock``; a second writer fails at once with one line."""

    def __init__(self, out: Path, option: str = "--out"):
        self.out, self.option = out, option
        self.path = sibling(out, LOCK)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise FedbioError(f"{_shown(self.option, self.out, self.out)}: cannot write in "
                                  f"{self.out.parent} ({err.strerror}); choose a folder you can write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise FedbioError(f"{_shown(self.option, self.out, self.out)} is being written by "
                                  f"another fedbio command ({holder}, holding {self.path}); wait for "
                                  "it to end or choose another path") from None
            try:  # the file locked must still be the one at the path (a finishing writer unlinks it)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created (innermost first)."""
    made = []
    probe = folder
    while not probe.exists():
        made.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FedbioError(f"cannot create {folder} ({err.strerror}); choose a folder you can write") from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def free_name(path: Path) -> Path:
    """``path`` if nothing is there, else ``path-2``, ``path-3``, …"""
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _keep_failed(running: Path, out: Path, err: BaseException) -> Path | None:
    """Move a failed command's folder to ``OUT.failed``; an empty one is simply removed."""
    shutil.rmtree(running / SCRATCH, ignore_errors=True)
    if not running.exists():
        return None
    if not any(running.iterdir()):
        running.rmdir()
        return None
    try:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        (running / "error.txt").write_text(text)
    except OSError:
        pass
    kept = free_name(sibling(out, FAILED))
    running.rename(kept)
    return kept


def _publish(running: Path, out: Path, kind: str) -> None:
    """``running`` becomes ``out``; an old ``out`` (allowed by the checks) is removed after."""
    shutil.rmtree(running / SCRATCH, ignore_errors=True)
    _mark(running, kind)
    old = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = free_name(out.with_name(f".{out.name}.replaced"))
            out.rename(old)
    running.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def scratch_env(folder: Path) -> Iterator[None]:
    """Temporary files of this process and its children (NVFlare's job copy, torch's compile
    cache) go to ``folder``, not ``/tmp``; the environment is restored afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR")
    saved = {k: os.environ.get(k) for k in keys}
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    if saved["TORCHINDUCTOR_CACHE_DIR"] is None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "torchinductor")
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def output_dir(out: str | Path, *, overwrite: bool = False, inputs: Iterable = (), kind: str = "run",
               option: str = "--out", say=None, publish: bool = True) -> Iterator[Path]:
    """Yield ``OUT.running/`` (new and empty) to write into; see the module docstring.

    ``inputs``: files and folders the command reads (never replaced or written into).
    ``kind``: what the folder is (``.fedbio.json``; ``--overwrite`` replaces only the same kind). ``say``: where notes go (stderr).
    ``publish=False``: a scratch folder (a benchmark's runs), removed on success instead.
    """
    inputs = list(inputs)
    out = check_output(out, overwrite=overwrite, inputs=inputs, kind=kind, option=option)
    say = say or _stderr
    created = _make_parents(out.parent)
    lock = OutputLock(out, option)
    try:
        lock.acquire()
        check_output(out, overwrite=overwrite, inputs=inputs, kind=kind, option=option)  # we hold it now
        running = sibling(out, RUNNING)
        if running.exists() or running.is_symlink():
            from fedbio.processes import end_processes

            ended = end_processes(str(running))  # what a killed command left running on it
            stale = free_name(sibling(out, FAILED))
            running.rename(stale)
            say(f"note: {running} was left by an earlier command that did not finish"
                + (f" ({ended} of its processes were still running: ended)" if ended else "")
                + f"; moved it to {stale}")
        running.mkdir()
    except BaseException:
        lock.release()
        _remove_empty(created)
        raise
    try:
        with scratch_env(running / SCRATCH):
            yield running
    except BaseException as err:
        kept = _keep_failed(running, out, err)
        err.kept = kept  # the CLI says where
        raise
    else:
        if publish:
            _publish(running, out, kind)
        else:
            shutil.rmtree(running)
    finally:
        lock.release()


@contextmanager
def scratch_dir(out: str | Path, option: str = "--workdir") -> Iterator[Path]:
    """A folder for a command's own intermediate files: ``OUT.running/`` while it works, removed
    when it succeeds, kept as ``OUT.failed/`` (with its logs) when it fails."""
    with output_dir(out, kind="scratch", option=option, publish=False) as work:
        yield work


@contextmanager
def output_file(out: str | Path, *, overwrite: bool = False, inputs: Iterable = (),
                option: str = "--out") -> Iterator[Path]:
    """Yield ``NAME.running`` beside ``out`` to write; renamed to ``out`` on success, removed on
    failure (a single file holds no logs worth keeping)."""
    inputs = list(inputs)
    out = check_output(out, overwrite=overwrite, inputs=inputs, option=option, file=True)
    created = _make_parents(out.parent)
    lock = OutputLock(out, option)
    try:
        lock.acquire()
        check_output(out, overwrite=overwrite, inputs=inputs, option=option, file=True)
    except BaseException:
        lock.release()
        _remove_empty(created)
        raise
    running = sibling(out, RUNNING)
    try:
        yield running
        running.replace(out)
    except BaseException:
        running.unlink(missing_ok=True)
        lock.release()
        _remove_empty(created)
        raise
    finally:
        lock.release()


@contextmanager
def hold(out: str | Path, option: str = "--out") -> Iterator[Path]:
    """Only the lock: for commands that fill ``out`` step by step (``fedbio demo``)."""
    out = _abs(out)
    created = _make_parents(out.parent)
    lock = OutputLock(out, option)
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield out
    finally:
        lock.release()


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
