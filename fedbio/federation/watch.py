"""Run the NVFlare simulator as a watched child process: a time limit, a retry, and diagnostics.

NVFlare's own ``SimEnv`` waits for its simulator process forever, and starts it with
``preexec_fn=os.setsid``: Python code in the forked child, which can deadlock before ``exec`` when
the parent has other threads (torch's, tqdm's), as a notebook or a test session always has. A
simulator that stalls (at start-up, or in its shutdown after the job is done) would then hang a
notebook or a test run without a word. ``run_watched`` starts the same simulator command in its
own session the safe way (``start_new_session``, done in C, no Python between fork and exec) and

- stops it after ``timeout`` seconds (0 = no limit) and starts it again from scratch, up to
  ``retries`` times; the stalled attempt's workspace is kept beside the new one for its logs;
- ends it when the job's result (``done``) has been written but the process has not exited
  ``grace`` seconds later: the work is done and saved, only NVFlare's shutdown is stuck;
- before stopping a stalled simulator, asks every fedbio process in it for a stack dump
  (``SIGUSR1``, see ``install_stack_dump``) and quotes the log tails in the error.

Plain ``subprocess``: nothing here imports NVFlare.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fedbio.errors import FedbioError

POLL = 0.2          # seconds between looks at the child
GRACE = 60.0        # seconds a simulator may take to exit once its result is written
TAIL_LINES = 12


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


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen, dump: bool) -> None:
    if dump and hasattr(signal, "SIGUSR1"):
        _signal_group(proc, signal.SIGUSR1)
        time.sleep(1.0)
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


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


def run_watched(cmd: list[str], workspace: str | Path, done: str | Path, timeout: float = 0,
                retries: int = 1, grace: float = GRACE, say=print) -> int:
    """Run ``cmd`` (the simulator) until it exits; return its exit code (0 after a stuck shutdown).

    ``workspace`` is the simulator's workspace folder, ``done`` the file whose appearance means
    the job's result is saved. Raises FedbioError when every attempt ran out of time.
    """
    workspace, done = Path(workspace), Path(done)
    for attempt in range(retries + 1):
        start = time.monotonic()
        finished_at = None
        env = {**os.environ, STACK_DIR_ENV: str(workspace.parent / "stacks")}
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        while True:
            code = proc.poll()
            if code is not None:
                return code
            now = time.monotonic()
            if finished_at is None and done.is_file():
                finished_at = now
            if finished_at is not None and now - finished_at > grace:
                say(f"the NVFlare simulator saved its result but did not exit within {grace:.0f} s; "
                    "stopping it")
                _stop(proc, dump=False)
                return 0
            if timeout and finished_at is None and now - start > timeout:
                _stop(proc, dump=True)
                tails = log_tails(workspace)
                if attempt < retries:
                    kept = workspace.with_name(f"{workspace.name}-stalled-{attempt + 1}")
                    shutil.rmtree(kept, ignore_errors=True)
                    if workspace.exists():
                        workspace.rename(kept)
                    say(f"the NVFlare simulator made no result within {timeout:.0f} s (attempt "
                        f"{attempt + 1} of {retries + 1}); starting it again. Its logs are kept in "
                        f"{kept}; their last lines:\n{tails}")
                    break
                raise FedbioError(
                    f"the NVFlare simulator made no result within {timeout:.0f} s in "
                    f"{retries + 1} attempt(s); logs and stack dumps are in {workspace.parent}. "
                    f"Last log lines:\n{tails}")
            time.sleep(POLL)
    raise AssertionError("unreachable")
