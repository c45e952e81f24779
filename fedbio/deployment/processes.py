"""The deployment's processes, and its record ``W/deployment.json``.

Each participant (the server, each site) is one NVFlare process started from its kit, in a
session of its own, with its console in ``KIT/console.txt``. fedbio starts NVFlare's Python entry
point directly, as the kit's ``sub_start.sh --once`` does: no restart loop, so a site that is
stopped stays stopped until ``start-site``. Started with ``tie=PID`` (a notebook's kernel), a
participant ends itself and its job processes once PID is gone. Every process carries ``FEDBIO_DEPLOYMENT`` (W) and
``FEDBIO_PARTICIPANT`` in its environment, and so do the job processes NVFlare starts from it,
whatever session they put themselves in: ``participant_processes`` finds them all (and any
process started from a kit's scripts, e.g. a ``start.sh`` loop someone started by hand), and
``end`` ends them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedbio.deployment.kits import CONSORTIUM, SERVER, environment, org_of
from fedbio.errors import FedbioError

DEPLOYMENT_ENV = "FEDBIO_DEPLOYMENT"
PARTICIPANT_ENV = "FEDBIO_PARTICIPANT"
RECORD = "deployment.json"
SERVER_MAIN = "nvflare.private.fed.app.server.server_train"
CLIENT_MAIN = "nvflare.private.fed.app.client.client_train"


def read_record(workspace: str | Path) -> dict:
    """``W/deployment.json``; a folder without one is refused in one line."""
    path = Path(workspace) / RECORD
    if not path.is_file():
        raise FedbioError(f"{workspace}: no fedbio deployment here ({RECORD} missing); start one "
                          "with fedbio deploy up --workspace W")
    try:
        record = json.loads(path.read_text())
        ok = (isinstance(record["sites"], list) and all(isinstance(s, str) for s in record["sites"])
              and isinstance(record["port"], int))
    except (ValueError, KeyError, TypeError, OSError):
        ok = False
    if not ok:
        raise FedbioError(f"{path}: not a deployment record fedbio wrote (damaged?); fedbio deploy "
                          f"down --workspace {workspace} still ends its processes; then deploy anew")
    return record


def write_record(workspace: Path, record: dict) -> None:
    tmp = workspace / (RECORD + ".part")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, workspace / RECORD)


def kit(workspace: Path, name: str) -> Path:
    return Path(workspace) / "kits" / name


def start(workspace: Path, name: str, tie: int | None = None) -> int:
    """Start the server (``localhost``) or a site from its kit; return its PID. ``tie``: a PID
    whose end ends this participant too (a notebook's kernel: nothing outlives it)."""
    workspace = Path(os.path.realpath(workspace))
    folder = kit(workspace, name)
    if name == SERVER:
        cmd = [SERVER_MAIN, "-m", str(folder), "-s", "fed_server.json",
               "--set", "secure_train=true", f"org={CONSORTIUM}", "config_folder=config"]
    else:   # heartbeats at a quarter of the server's timeout (NVFlare's 10 s at most): a live
        # site is never taken for dead, a dead one is noticed within about that timeout
        beat = max(0.5, min(10.0, float(read_record(workspace).get("heartbeat_timeout") or 600) / 4))
        cmd = [CLIENT_MAIN, "-m", str(folder), "-s", "fed_client.json",
               "--set", "secure_train=true", f"uid={name}", f"org={org_of(name)}", "config_folder=config",
               f"heart_beat_interval={beat:g}"]
    tied = ["fedbio.deployment.processes", "--tie", str(tie)] if tie else []
    cmd = [sys.executable, "-u", "-m", *tied, *cmd]
    env = {**os.environ, **environment(workspace), DEPLOYMENT_ENV: str(workspace),
           PARTICIPANT_ENV: name, "FEDBIO_KIT": str(folder)}
    env.pop("FEDBIO_RUN", None)   # not part of any run: a run's end must not end the deployment
    with open(folder / "console.txt", "ab") as console:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def is_main(proc) -> bool:
    """A participant's own process (NVFlare's server or client entry point), not a job's."""
    try:
        args = proc.cmdline()
    except Exception:
        return False
    return SERVER_MAIN in args or CLIENT_MAIN in args


def participant_processes(workspace: str | Path, name: str | None = None) -> list:
    """Every live process of the deployment (of one participant when ``name``): marked in its
    environment, or started with a path inside its kit (``startup/start.sh``). Never this process or its ancestors."""
    import psutil

    workspace = os.path.realpath(workspace)
    kits = os.path.join(workspace, "kits") + os.sep
    inside = os.path.join(kits, name) if name else kits.rstrip(os.sep)
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["environ", "cmdline"], ad_value=None):
        if proc.pid in mine:
            continue
        env = proc.info.get("environ") or {}
        marked = env.get(DEPLOYMENT_ENV) == workspace and (name is None or env.get(PARTICIPANT_ENV) == name)
        args = proc.info.get("cmdline") or []
        from_kit = any(a == inside or a.startswith(inside + os.sep) for a in args)
        if marked or from_kit:
            found.append(proc)
    return found


def end(workspace: str | Path, name: str | None = None, grace: float = 5.0) -> int:
    """End every process of the deployment (or of one participant): SIGTERM, then SIGKILL after
    ``grace`` seconds, repeated while new ones appear. Returns how many were ended."""
    import psutil

    ended = set()
    for _ in range(4):
        procs = [p for p in participant_processes(workspace, name) if _alive(p)]
        if not procs:
            break
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                try:
                    proc.send_signal(sig)
                    ended.add(proc.pid)
                except psutil.Error:
                    pass
            deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
            while any(_alive(p) for p in procs) and time.monotonic() < deadline:
                _reap(procs)
                time.sleep(0.1)
            procs = [p for p in procs if _alive(p)]
            if not procs:
                break
    return len(ended)


def _reap(procs: list) -> None:
    for proc in procs:
        try:
            if proc.ppid() == os.getpid():
                os.waitpid(proc.pid, os.WNOHANG)
        except Exception:   # not ours, or gone
            pass


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def listening(procs: list) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the processes listen on."""
    import psutil

    out = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.add((conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            pass
    return sorted(out)


def run_tied(argv: list[str]) -> None:
    """``python -m fedbio.deployment.processes --tie PID MODULE ARGS...``: NVFlare's MODULE, as
    ``python -m`` would run it, with a thread that ends this participant (its job processes
    included) and exits once PID is gone."""
    import runpy
    import threading

    tie, module, rest = int(argv[1]), argv[2], argv[3:]

    def watch() -> None:
        while True:
            try:
                os.kill(tie, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(0.5)
        end(os.environ[DEPLOYMENT_ENV], os.environ[PARTICIPANT_ENV], grace=2.0)
        os._exit(1)

    threading.Thread(target=watch, name="fedbio-tie", daemon=True).start()
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run_tied(sys.argv[1:])
