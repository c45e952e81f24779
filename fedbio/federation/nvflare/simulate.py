"""``python -m fedbio.federation.nvflare.simulate JOB -w WORKSPACE ...``: NVFlare's simulator, run so that
its temporary files stay in the run folder and its start-up and rounds do not wait in sleeps.

The command line is NVFlare's own (``nvflare.private.fed.app.simulator.simulator``), and so is
everything the simulator does; this module changes how it waits and where it puts things:

- **Temporary files.** The watchdog (``fedbio.federation.nvflare.watch``) sets ``TMPDIR`` to ``RUN/tmp``,
  so NVFlare's copies of the job land there instead of ``/tmp``. A run folder's path can be long,
  and the simulator's ``multiprocessing.Manager`` binds a Unix socket under ``TMPDIR``, whose
  path may not exceed about 100 bytes: on Linux the socket goes to the abstract namespace instead
  (a name, no file anywhere); other systems keep Python's default.
- **Polls.** The simulator waits for its server app, each site's first turn and each site's
  worker process in one-second sleeps; each site's worker asks for its next task every half
  second, and NVFlare's in-process client API hands a task to fedbio's client script, and its
  result back, in half-second polls (``in_process_backend._RESULT_POLL_INTERVAL``, a constant
  NVFlare 2.9 offers no setting for). Here all of them poll every ``POLL`` seconds, which changes
  nothing but the seconds every round spent asleep (``fedbio bench fed``, composition row).
- **Site workers** are started as ``python -m fedbio.federation.nvflare.simulate --worker ...`` (the same
  arguments), in a new session the safe way (``start_new_session``; NVFlare passes
  ``preexec_fn=os.setsid``, Python code between fork and exec). While NVFlare connects the
  worker to the server, a background thread imports what fedbio's client script will import
  (torch, and ``torch._dynamo``, which torch's optimizers load on first use), so that work
  overlaps NVFlare's waits instead of following them.
- **No run without fedbio.** If the ``fedbio`` process that started the simulator dies without
  ending it (``kill -9``), the simulator ends every process of the run (``fedbio.processes``)
  within a second, instead of training on unwatched and writing into a folder the next command
  may reuse.
"""

from __future__ import annotations

import importlib
import itertools
import os
import runpy
import subprocess
import sys
import threading
import time

POLL = 0.1  # seconds between the simulator's polls (NVFlare's own: 1.0 and 0.5)
SIMULATOR = "nvflare.private.fed.app.simulator.simulator"
WORKER = "nvflare.private.fed.app.simulator.simulator_worker"
RUNNER = "nvflare.private.fed.app.simulator.simulator_runner"
IN_PROCESS = "nvflare.app_common.executors.client_api.in_process_backend"
PRELOAD = ("fedbio.federation.site", "torch._dynamo")  # what a site's first round imports
_count = itertools.count()


def _abstract_unix_addresses() -> None:
    import multiprocessing.connection as connection

    default = connection.arbitrary_address

    def arbitrary_address(family):
        if family == "AF_UNIX":
            return f"\0fedbio-{os.getpid()}-{next(_count)}-{os.urandom(4).hex()}"
        return default(family)

    connection.arbitrary_address = arbitrary_address


class _PollingTime:
    """``time`` for an NVFlare simulator module whose sleeps are all polls."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL))


class _WorkerSpawn:
    """``subprocess`` for the simulator runner: site workers start through this module."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args, *rest, **kwargs):  # noqa: N802 - subprocess's name
        if isinstance(args, list) and WORKER in args:
            at = args.index(WORKER)
            args = [*args[:at], "fedbio.federation.nvflare.simulate",
                    "--worker", *args[at + 1:]]
            if kwargs.get("preexec_fn") is os.setsid:
                del kwargs["preexec_fn"]
                kwargs["start_new_session"] = True
        return subprocess.Popen(args, *rest, **kwargs)


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # the client script imports them again and reports any error there
            return


def _end_with_parent() -> None:
    """A daemon thread: when the parent (fedbio) is gone, end the run's processes and exit."""
    from fedbio.processes import RUN_ENV, end_processes

    parent, mark = os.getppid(), os.environ.get(RUN_ENV)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        if mark:
            end_processes(mark)  # every other process of the run; not this one
        os._exit(1)

    threading.Thread(target=watch, name="fedbio-parent-watch", daemon=True).start()


def run_simulator() -> None:
    _end_with_parent()
    if sys.platform.startswith("linux"):
        _abstract_unix_addresses()
    runner = importlib.import_module(RUNNER)
    runner.time = _PollingTime()
    runner.subprocess = _WorkerSpawn()
    sys.argv[0] = SIMULATOR
    runpy.run_module(SIMULATOR, run_name="__main__", alter_sys=True)


LOSE_WORKER_ENV = "FEDBIO_TEST_LOSE_WORKER"  # test hook: "SITE:MARKER", see _lose_worker


def _lose_worker(argv: list[str]) -> None:
    """A test hook: when ``$FEDBIO_TEST_LOSE_WORKER`` is ``SITE:MARKER`` and MARKER does not
    exist yet, SITE's worker creates MARKER, takes the simulator's connection and drops it before
    NVFlare starts: what NVFlare's start-up race does to a worker (``fedbio.federation.nvflare.watch``)."""
    site, _, marker = os.environ.get(LOSE_WORKER_ENV, "").partition(":")
    if not site or site not in argv or os.path.exists(marker):
        return
    from multiprocessing.connection import Listener

    open(marker, "w").close()
    port = int(argv[argv.index("--port") + 1])
    Listener(("localhost", port)).accept().close()
    os._exit(3)


def run_worker(argv: list[str]) -> None:
    _lose_worker(argv)
    from fedbio.processes import PRELOAD_THREAD

    threading.Thread(target=_preload, name=PRELOAD_THREAD, daemon=True).start()
    worker = importlib.import_module(WORKER)
    worker.time = _PollingTime()
    backend = importlib.import_module(IN_PROCESS)
    if hasattr(backend, "_RESULT_POLL_INTERVAL"):
        backend._RESULT_POLL_INTERVAL = POLL
    sys.argv = [WORKER, *argv]
    if hasattr(worker, "parse_arguments") and hasattr(worker, "mpm"):  # NVFlare's own __main__
        args = worker.parse_arguments()
        worker.mpm.run(main_func=worker.main, run_dir=args.workspace, args=args)
    else:  # another NVFlare: its module as it is
        runpy.run_module(WORKER, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        run_worker(sys.argv[2:])
    else:
        run_simulator()
