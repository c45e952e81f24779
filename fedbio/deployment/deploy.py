"""Bringing a deployment up and down, and changing it while it runs.

    record = deploy_up("W", 3)              # provision, start, wait until every site is connected
    stop_site("W", "site-2"); start_site("W", "site-2")
    set_policy("W", "site-2", ["org_site_2"])   # site-2 runs only its own organisation's jobs
    deploy_down("W")                        # every process ended; kits, data and logs kept

``deployment("W", 3)`` is the same as a context manager, which ends every process however the
block ends (a notebook's cell failing included).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fedbio.deployment import kits
from fedbio.deployment.admin import admin_session, connected_sites, running_jobs, wait_for_sites
from fedbio.deployment.policy import refusals, write_policy
from fedbio.deployment.processes import (
    RECORD,
    end,
    is_main,
    participant_processes,
    read_record,
    start,
    write_record,
)
from fedbio.errors import FedbioError

MAX_SITES = 32


def check_seconds(name: str, value: float) -> None:
    if not (value == value and 1 <= value <= 86400):   # NaN fails the first test
        raise FedbioError(f"{name} {value}: give seconds from 1 to 86400")


def _check_up(workspace: Path, sites: int, port: int, heartbeat_timeout: float, timeout: float,
              split: str | None) -> None:
    from fedbio.federation.runner import SHELL_CHARACTERS
    from fedbio.outputs import check_output

    if isinstance(sites, bool) or not isinstance(sites, int) or not 1 <= sites <= MAX_SITES:
        raise FedbioError(f"--sites {sites}: give a whole number from 1 to {MAX_SITES}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65534:
        raise FedbioError(f"--port {port}: give a port from 1024 to 65534 (the admin's is the next)")
    check_seconds("--heartbeat-timeout", heartbeat_timeout)
    check_seconds("--timeout", timeout)
    bad = sorted({c for c in str(workspace) if c.isspace() or c in SHELL_CHARACTERS})
    if bad:   # NVFlare splits its job processes' command lines at spaces
        raise FedbioError(f"--workspace {workspace}: NVFlare cannot start jobs from a path holding "
                          f"{' '.join(repr(c) for c in bad)}; choose a path of letters, digits and . _ - / only")
    if (workspace / RECORD).exists():
        raise FedbioError(f"--workspace {workspace} holds a deployment; end it with fedbio deploy down "
                          "and choose another folder")
    check_output(workspace, inputs=[split], kind="deployment", option="--workspace")   # new or empty,
    # not a symbolic link, not inside (or holding) the split, the package or the current folder
    for p in (port, port + 1):
        if not kits.port_free(p):
            raise FedbioError(f"--port {port}: port {p} on 127.0.0.1 is in use; choose another --port")


def _split(sites: int, split: str | None, task: str | None) -> tuple[Path | None, list[str]]:
    """Read and check the user's split before anything is written; return it and its sites.
    ``task``: what its labels are (``fedbio run --task``); default ``antibody`` for a folder with
    ``tasks.json`` (multi-task), else ``scl``."""
    from fedbio.data.tasks import load_task

    if split is not None:
        task = load_task(split, task or ("antibody" if (Path(split) / "tasks.json").is_file() else "scl"))
        names = list(task.sites)
        if len(names) != sites:
            raise FedbioError(f"--split {split} has {len(names)} sites, not --sites {sites}; give "
                              f"--sites {len(names)}")
        return Path(split), names
    return None, []


def deploy_up(workspace: str | Path, sites: int, split: str | None = None, port: int = 8002,
              heartbeat_timeout: float = 60.0, timeout: float = 120.0, say=print,
              tie: bool = False, task: str | None = None) -> dict:
    """Provision and start a deployment in ``workspace``; return its record. On failure every
    process started is ended and the workspace (with its logs) is kept. ``tie``: every
    participant ends itself when this process ends (a notebook), whatever way it ends."""
    import shutil

    workspace = Path(os.path.abspath(workspace))
    _check_up(workspace, sites, port, heartbeat_timeout, timeout, split)
    given, names = _split(sites, split, task)
    if given is None:   # the shipped data over N sites, made and checked before writing
        from fedbio.data.split import SplitConfig, make_split
        from fedbio.paths import shipped

        made = make_split(shipped("scl/deeploc_valtest.fasta"), SplitConfig(sites=sites, seed=0),
                          hard=shipped("scl/deeploc_setHARD.fasta"))
        names = list(made.sites)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FedbioError(f"--workspace {workspace}: cannot make it ({err.strerror}); choose a "
                          "folder you can write") from None
    workspace = Path(os.path.realpath(workspace))
    try:   # claimed first, exclusively: a second deploy up on the same folder stops here
        (workspace / RECORD).open("x").close()
    except FileExistsError:
        raise FedbioError(f"--workspace {workspace} holds a deployment (another deploy up is "
                          "making it?); choose another folder") from None
    started = time.monotonic()
    if given is None:
        from fedbio.data.split import save_split

        save_split(made, workspace / "split", plot=False)
    else:
        shutil.copytree(given, workspace / "split")
    record = {"sites": names, "port": port, "admin_port": port + 1, "server": kits.SERVER,
              "admin": kits.ADMIN, "heartbeat_timeout": heartbeat_timeout, "state": "provisioning",
              "tied_to": os.getpid() if tie else None}
    write_record(workspace, record)
    try:
        say(f"provisioning kits for {kits.SERVER}, {', '.join(names)} and {kits.ADMIN} in {workspace}/kits")
        folders = kits.provision(workspace, names, port, port + 1)
        kits.configure_server(folders[kits.SERVER], workspace, heartbeat_timeout)
        for site in names:
            kits.configure_site(folders[site], kits.site_data(workspace / "split", site, folders[site]))
        record["state"] = "starting"
        write_record(workspace, record)
        say(f"starting the server on 127.0.0.1:{port} and {len(names)} site(s)")
        tied = os.getpid() if tie else None
        start(workspace, kits.SERVER, tied)
        for site in names:
            start(workspace, site, tied)
        connected = wait_for_sites(workspace, names, timeout, alive=lambda: _alive(workspace, names))
        if set(connected) != set(names):
            missing = sorted(set(names) - set(connected))
            raise FedbioError(f"site(s) {', '.join(missing)} did not connect within {timeout:g} s; "
                              f"see {workspace}/kits/<site>/log.txt")
    except BaseException as err:
        end(workspace)
        record["state"] = "failed"
        write_record(workspace, record)
        if isinstance(err, FedbioError):
            raise FedbioError(f"{err}; every process was ended, the kits and logs are kept in "
                              f"{workspace}") from None
        raise
    record["state"] = "up"
    record["up_seconds"] = round(time.monotonic() - started, 2)
    write_record(workspace, record)
    return record


def _alive(workspace: Path, names: list[str]) -> None:
    """Refuse at once when the server or a site has died while starting."""
    for name in [kits.SERVER, *names]:
        if not participant_processes(workspace, name):
            raise FedbioError(f"{name} ended while starting; see {workspace}/kits/{name}/console.txt")


def status(workspace: str | Path) -> dict:
    """The participants' main processes, the job processes left without one, connected sites
    and jobs (asked of the server when its process runs), the jobs each site refused."""
    record = read_record(workspace)
    names = [kits.SERVER, *record["sites"]]
    procs, orphans = {}, {}
    for name in names:
        found = participant_processes(workspace, name)
        procs[name] = sorted(p.pid for p in found if is_main(p))
        if not procs[name] and found:
            orphans[name] = sorted(p.pid for p in found)
    info = {"workspace": str(Path(workspace).resolve()), "state": record.get("state"),
            "server": f"{kits.SERVER}:{record['port']}", "sites": record["sites"],
            "processes": procs, "left_without_parent": orphans, "connected": [], "jobs": [],
            "refusals": {site: refusals(workspace, site) for site in record["sites"]}}
    if record.get("state") == "up" and not procs[kits.SERVER]:
        info["state"] = "server not running"
    elif record.get("state") in ("provisioning", "starting") and not any(procs.values()):
        info["state"] = "its start-up ended unfinished (fedbio deploy down, then up in a new folder)"
    if procs[kits.SERVER]:
        try:
            with admin_session(workspace, timeout=5.0) as session:
                info["connected"] = connected_sites(session)
                info["jobs"] = running_jobs(session)
        except FedbioError as err:
            info["error"] = str(err)
    return info


def stop_site(workspace: str | Path, site: str) -> int:
    record = read_record(workspace)
    _site_of(record, site, workspace)
    if record.get("state") == "down":
        raise FedbioError(f"{workspace} is down (fedbio deploy down): none of its sites runs")
    return end(workspace, site)


def start_site(workspace: str | Path, site: str, timeout: float = 120.0, say=lambda line: None) -> None:
    record = read_record(workspace)
    _site_of(record, site, workspace)
    check_seconds("--timeout", timeout)
    if any(is_main(p) for p in participant_processes(workspace, site)):
        raise FedbioError(f"{site} is running already (fedbio deploy status --workspace {workspace})")
    if not any(is_main(p) for p in participant_processes(workspace, kits.SERVER)):
        raise FedbioError(f"the server of {workspace} is not running; bring a deployment up again")
    end(workspace, site)   # what a killed site left behind (its job processes)
    _wait_dropped(Path(workspace), site, float(record.get("heartbeat_timeout") or 600.0), say)
    start(Path(workspace), site, record.get("tied_to"))
    try:
        if site not in wait_for_sites(Path(workspace), [site], timeout,
                                      alive=lambda: _alive(Path(workspace), [site])):
            raise FedbioError(f"{site} did not connect within {timeout:g} s; it was stopped again; "
                              f"see {workspace}/kits/{site}/log.txt")
    except BaseException:   # interrupted or failed: the site is left as it was, stopped
        end(workspace, site)
        raise


def _wait_dropped(workspace: Path, site: str, heartbeat_timeout: float, say) -> None:
    """Until the server has let a stopped site's old connection go (it notices missed heartbeats
    after ``heartbeat_timeout`` s). A site started before would be taken for its old self: a
    job's tasks for the old site would wait for it forever, and "connected" would be said of a
    site that has died meanwhile."""
    deadline = time.monotonic() + heartbeat_timeout + 30.0
    with admin_session(workspace) as session:
        if site in connected_sites(session):
            say(f"waiting until the server lets {site}'s old connection go (missed heartbeats, "
                f"up to {heartbeat_timeout:g} s)")
        while site in connected_sites(session):
            if time.monotonic() > deadline:
                raise FedbioError(f"the server still lists {site} as connected {heartbeat_timeout + 30:g} s "
                                  f"after it stopped; see {workspace}/kits/{kits.SERVER}/log.txt")
            time.sleep(0.5)


def set_policy(workspace: str | Path, site: str, allow: list[str], timeout: float = 120.0,
               say=print) -> dict:
    """Write ``site``'s policy (``fedbio.deployment.policy``: whose jobs it runs) and restart the
    site if it runs, waiting until it is connected again; return the policy written."""
    check_seconds("--timeout", timeout)
    policy, path, runs = write_policy(workspace, site, allow)
    say(f"{site}: wrote {path}: runs {runs}")
    if any(is_main(p) for p in participant_processes(workspace, site)):
        say(f"restarting {site}: a site reads its policy only when it starts")
        stop_site(workspace, site)
        start_site(workspace, site, timeout=timeout, say=say)
        say(f"{site} restarted and connected")
    return policy


def _site_of(record: dict, site: str, workspace) -> None:
    if site not in record["sites"]:
        raise FedbioError(f"{site}: not a site of {workspace}; its sites are {', '.join(record['sites'])}")


def deploy_down(workspace: str | Path) -> tuple[int, float]:
    """End every process of the deployment; return (how many, seconds). A damaged record does
    not stop it: the processes are found by their mark and their kits, not by the record."""
    try:
        record = read_record(workspace)
    except FedbioError:
        if not (Path(workspace) / "kits").is_dir():
            raise
        record = None
    started = time.monotonic()
    n = end(workspace)
    if record is not None:
        record["state"] = "down"
        write_record(Path(workspace), record)
    return n, time.monotonic() - started


@contextlib.contextmanager
def deployment(workspace: str | Path, sites: int, **kwargs) -> Iterator[dict]:
    """``deploy_up`` ... ``deploy_down``, the down guaranteed; the processes are tied to this
    one (``tie``), so even a killed Python leaves none behind."""
    try:
        yield deploy_up(workspace, sites, tie=True, **kwargs)
    finally:
        if (Path(workspace) / "deployment.json").is_file():
            deploy_down(workspace)


def on_round(workspace: str | Path, rounds: int, action, timeout: float = 600.0) -> threading.Thread:
    """Run ``action()`` once the server's next job on ``workspace`` has aggregated ``rounds``
    rounds (read from the job's folder in the server's kit, as the consortium's operator can):
    a fault injected at a known point, for notebooks and tests. Returns the started thread."""
    server = Path(workspace) / "kits" / kits.SERVER
    before = set(server.glob("*/federation/server/history.json"))

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in set(server.glob("*/federation/server/history.json")) - before:
                with contextlib.suppress(ValueError, OSError, KeyError):
                    if len(json.loads(path.read_text())["rounds"]) > rounds:
                        action()
                        return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, name="fedbio-on-round", daemon=True)
    thread.start()
    return thread
