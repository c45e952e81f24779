"""The processes of a run: every process a command started, found by a mark in its environment.

A federated run's NVFlare simulator starts each site's worker in a session of its own, so a
process group does not hold them all; their environment does. ``FEDBIO_RUN`` (the run's folder)
is set for the simulator and inherited by every process it starts, whatever session it puts
itself in. ``run_processes`` finds them (``psutil``), ``end_processes`` ends them, and
``cpu_seconds`` says what each used. ``wait_for_preload``: a simulator worker's import thread
finished before a site imports more.
"""

from __future__ import annotations

import os
import signal
import time

RUN_ENV = "FEDBIO_RUN"  # the run folder, in the environment of every process of a run
PRELOAD_THREAD = "fedbio-preload"   # a simulator worker's import thread (federation.nvflare.simulate)


def wait_for_preload() -> None:
    """Wait for this process's preload thread, if it has one. It imports torch._dynamo while
    NVFlare connects; a site importing Opacus (torch.distributed) beside it met a half-initialised
    module once (``cannot import name '_CUSTOM_SHARDED_OPS'``), so a site waits for it first."""
    import threading

    for thread in threading.enumerate():
        if thread.name == PRELOAD_THREAD and thread is not threading.current_thread():
            thread.join()


def run_processes(mark: str, root: int | None = None) -> list:
    """Every live process of the run ``mark`` (``FEDBIO_RUN`` in its environment) or below ``root``,
    never this process or its ancestors."""
    import psutil

    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = {}
    if root is not None:
        try:
            top = psutil.Process(root)
            for proc in [top, *top.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    for proc in psutil.process_iter(["environ"], ad_value=None):
        env = proc.info.get("environ") or {}
        if env.get(RUN_ENV) == mark:
            found.setdefault(proc.pid, proc)
    return [p for pid, p in found.items() if pid not in mine]


def cpu_seconds(procs: list) -> dict[str, float]:
    """CPU seconds (user + system) each process of a run has used so far, by role: ``site-N``
    for a site's worker (its ``--client`` argument), else ``simulator`` (summed)."""
    import psutil

    out: dict[str, float] = {}
    for proc in procs:
        try:
            args, times = proc.cmdline(), proc.cpu_times()
        except psutil.Error:
            continue
        role = args[args.index("--client") + 1] if "--client" in args[:-1] else "simulator"
        out[role] = round(out.get(role, 0.0) + times.user + times.system, 2)
    return out


def end_processes(mark: str, root: int | None = None, dump: bool = False, wait: float = 5.0,
                  cpu: dict | None = None) -> int:
    """End every process of the run: optionally ask for stack dumps first, then SIGKILL, and wait
    until they are gone (their parents reap them). ``cpu`` receives ``cpu_seconds`` of the
    processes just before they end. Returns how many were ended."""
    import psutil

    procs = run_processes(mark, root)
    if cpu is not None:
        cpu.update(cpu_seconds(procs))
    if dump and hasattr(signal, "SIGUSR1") and procs:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGUSR1)
            except psutil.Error:
                pass
        time.sleep(1.0)
    ended = 0
    for _ in range(3):  # a process may start another while the first are being ended
        for proc in procs:
            try:
                proc.kill()
                ended += 1
            except psutil.Error:
                pass
        _wait_gone(procs, wait)
        procs = [p for p in run_processes(mark, root) if _alive(p)]
        if not procs:
            break
    return ended


def _alive(proc) -> bool:
    """Running, and not a zombie (an ended process whose parent has not reaped it yet)."""
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list, wait: float) -> None:
    import psutil

    deadline = time.monotonic() + wait
    for proc in procs:  # reap our own children (the simulator); others are their parents' to reap
        try:
            if proc.ppid() == os.getpid():
                os.waitpid(proc.pid, os.WNOHANG)
        except (OSError, psutil.Error):
            pass
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
