"""Run the NVFlare simulator as a watched child process: progress, a stall limit, and a clean end.

NVFlare's own ``SimEnv`` waits for its simulator process forever, starts it with
``preexec_fn=os.setsid`` (Python code between fork and exec, which can deadlock a parent with
threads, as a notebook or a test session always has), and its simulator starts one worker process
per site, each in a session of its own, which outlive a ``killpg`` of the simulator for 30-50 s.
``run_watched`` instead

- starts the simulator in its own session the safe way (``start_new_session``, done in C), with
  ``FEDBIO_RUN`` in its environment: every process of the run inherits it, whatever session it
  puts itself in, so ``run_processes`` finds them all (``psutil``);
- counts as progress any change to the files it is told to watch (the server's ``history.json``
  after every round, each site's ``progress/<site>.json`` after every local epoch) and hands each
  change to ``on_progress``; ``timeout`` is a limit on silence (no progress for that long), not on
  the run's length. A stalled simulator gets every process's stack dump (``SIGUSR1``, see
  ``install_stack_dump``), is ended, its workspace kept beside, and is started again up to
  ``retries`` times;
- takes ``done`` (``done.json``, written by the server last, after the delivered model) as the end
  of the job: ``grace`` seconds later, whatever is left of NVFlare's shutdown is ended;
- restarts at once (as a stalled attempt) a simulator that lost a site's worker before it ever
  started: NVFlare's simulator sometimes cannot reach a worker it has just started (the server
  log's "Communication error with client site-N" with no log of that site), and then waits for
  that site for ever. A site that dies after it started is NVFlare's to handle (it drops it);
- ends every process of the run when it returns, fails or is interrupted (Ctrl-C, SIGTERM).

Plain ``subprocess`` and ``psutil``: nothing here imports NVFlare.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fedbio.errors import FedbioError
from fedbio.federation.config import FedConfig
from fedbio.processes import RUN_ENV, end_processes

POLL = 0.2          # seconds between looks at the child and the watched files
GRACE = FedConfig.sim_grace   # seconds NVFlare may take to exit after the job's end (done.json)
TAIL_LINES = 12
LOST = re.compile(r"Communication error with client (\S+?):")  # NVFlare's simulator_runner
STACK_DIR_ENV = "FEDBIO_STACK_DIR"


def install_stack_dump() -> None:
    """In a simulator process: dump every thread's stack to ``$FEDBIO_STACK_DIR`` on ``SIGUSR1``.

    ``run_watched`` sets that variable for the simulator and all its workers; elsewhere this
    does nothing.
    """
    folder = os.environ.get(STACK_DIR_ENV)
    if not folder or not hasattr(signal, "SIGUSR1"):
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"stacks-{os.getpid()}.txt", "w")  # noqa: SIM115 - lives with the process
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True)


def log_tails(workspace: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of every ``log.txt`` under ``workspace`` (server and sites)."""
    parts = []
    for log in sorted(Path(workspace).rglob("log.txt")):
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        parts.append(f"--- {log.relative_to(workspace)}\n" + "\n".join(tail))
    return "\n".join(parts) if parts else "(no NVFlare log was written)"


def _watched_files(paths: Iterable[Path]) -> dict[Path, int]:
    """``{file: mtime_ns}`` of the watched files (a folder stands for the files directly in it,
    hidden ones left out: a writer's temporary ``.<name>.part`` is not progress of its own)."""
    out = {}
    for path in paths:
        try:
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_file() and not child.name.startswith("."):
                        out[child] = child.stat().st_mtime_ns
            elif path.is_file():
                out[path] = path.stat().st_mtime_ns
        except OSError:
            continue  # written (replaced) while we looked: seen on the next poll
    return out


class LostSites:
    """Reads the simulator's server log as it grows for a site lost before it started: a
    ``LOST`` line naming a site whose workspace holds no log (its worker never ran)."""

    def __init__(self, workspace: Path):
        self.workspace, self.offset, self.rest = Path(workspace), 0, ""

    def lost(self) -> str | None:
        try:
            with open(self.workspace / "server" / "log.txt", "rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return None
        self.offset += len(chunk)
        *lines, self.rest = (self.rest + chunk.decode(errors="replace")).split("\n")
        for line in lines:
            found = LOST.search(line)
            if found and not (self.workspace / found.group(1) / "log.txt").exists():
                return found.group(1)
        return None


def run_watched(cmd: list[str], workspace: str | Path, done: str | Path, *, progress: Iterable = (),
                timeout: float = 0, retries: int = 1, grace: float = GRACE, say=print,
                on_progress: Callable[[Path], None] | None = None, env: dict | None = None,
                cwd: str | Path | None = None, mark: str | None = None,
                on_stall: Callable[[Path], None] | None = None, timeline: dict | None = None,
                console: str | Path | None = None) -> int:
    """Run ``cmd`` (the simulator) until the job ends; return its exit code (0 when it was ended
    after ``done`` appeared).

    ``workspace``: the simulator's workspace; ``done``: the file that ends the job; ``progress``:
    files or folders whose changes are progress (each changed file goes to ``on_progress``);
    ``timeout``: seconds of silence before a stall (0: none); ``mark``: the ``FEDBIO_RUN`` value
    (default: the workspace), ``on_stall(kept)``: called with a stalled attempt's kept workspace
    before the next attempt. ``timeline`` receives wall-clock times (``time.time()``) of the last
    attempt: ``started``, ``first_progress``, ``done`` (seen), ``ended`` (every process gone),
    ``attempts``, and ``cpu_seconds`` by process role (see ``cpu_seconds``; a process that ended
    on its own before the job did is not counted). ``console``: a file that receives the child's
    stdout and stderr (appended), so nothing of NVFlare's reaches the user's terminal.
    Raises FedbioError when every attempt stalled.
    """
    timeline = {} if timeline is None else timeline
    workspace = Path(workspace)
    mark = mark or str(workspace)
    child_env = {**os.environ, **(env or {}), RUN_ENV: mark,
                 STACK_DIR_ENV: str(workspace.parent / "stacks")}
    watch = _Watch(workspace, Path(done), [Path(p) for p in progress], timeout, grace,
                   on_progress, None if cwd is None else Path(cwd))
    for attempt in range(retries + 1):
        timeline.clear()
        timeline.update(attempts=attempt + 1, started=time.time())
        watch.reset()
        proc = _start(cmd, child_env, cwd, console)
        code = why = None
        try:
            code, why = watch.attempt(proc, timeline)
            if code is not None:
                return code
        finally:
            timeline["cpu_seconds"] = {}
            end_processes(mark, proc.pid, dump=why is not None, cpu=timeline["cpu_seconds"])
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            timeline["ended"] = time.time()
        tails = log_tails(workspace)
        if attempt == retries:
            raise FedbioError(
                f"the NVFlare simulator {why}, in the last of {retries + 1} attempt(s); its logs "
                f"and stack dumps are in {workspace.parent}. Last log lines:\n{tails}")
        kept = _keep_stalled(workspace, attempt + 1)
        if on_stall is not None:
            on_stall(kept)
        say(f"the NVFlare simulator {why} (attempt {attempt + 1} of {retries + 1}); starting it "
            f"again. Its logs are kept in {kept}; their last lines:\n{tails}")
    raise AssertionError("unreachable")


def _start(cmd: list[str], env: dict, cwd, console) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own; its output appended to ``console`` when given."""
    out = open(console, "ab") if console else None  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None)
    finally:
        if out is not None:
            out.close()  # the child holds its own copy


class _Watch:
    """What ``run_watched`` looks at while one attempt runs (see there)."""

    def __init__(self, workspace: Path, done: Path, progress: list[Path], timeout: float,
                 grace: float, on_progress: Callable[[Path], None] | None, cwd: Path | None):
        self.workspace, self.done, self.progress = workspace, done, progress
        self.timeout, self.grace, self.on_progress, self.cwd = timeout, grace, on_progress, cwd
        self.seen: dict[Path, int] = {}

    def reset(self) -> None:
        """Before an attempt starts: what is there now is not its progress."""
        self.seen = _watched_files(self.progress)

    def _changed(self) -> list[Path]:
        current = _watched_files(self.progress)
        changed = sorted(p for p, t in current.items() if self.seen.get(p) != t)
        self.seen = current
        return changed

    def attempt(self, proc: subprocess.Popen, timeline: dict) -> tuple[int | None, str | None]:
        """Poll until the child exits (``(code, None)``), the job's end has been seen for
        ``grace`` seconds (``(0, None)``) or the attempt stalls (``(None, why)``)."""
        lost_sites = LostSites(self.workspace)
        last, finished_at = time.monotonic(), None
        while True:
            code = proc.poll()
            now = time.monotonic()
            changed = self._changed()
            if changed:
                last = now
                timeline.setdefault("first_progress", time.time())
                for path in changed:
                    if self.on_progress is not None:
                        self.on_progress(path)
            if code is not None:
                return code, None
            if self.cwd is not None and not self.cwd.is_dir():
                raise FedbioError(f"{self.cwd} was deleted while the run went on; its processes "
                                  "were ended")
            if self.done.is_file():
                finished_at = finished_at or now
                timeline.setdefault("done", time.time())
                if now - finished_at >= self.grace:
                    return 0, None  # the job's result is saved; what is left is NVFlare's shutdown
            elif self.timeout and now - last > self.timeout:
                return None, f"made no progress for {self.timeout:.0f} s"
            elif (site := lost_sites.lost()) is not None:
                return None, (f"lost {site}'s worker process before it started (a start-up race "
                              "inside NVFlare's simulator)")
            time.sleep(POLL)


def _keep_stalled(workspace: Path, attempt: int) -> Path:
    """Move a stalled attempt's workspace aside (``<workspace>-stalled-N``) for its logs."""
    from fedbio.outputs import free_name

    kept = free_name(workspace.with_name(f"{workspace.name}-stalled-{attempt}"))
    if workspace.exists():
        workspace.rename(kept)
    else:
        kept.mkdir(parents=True)
    return kept
