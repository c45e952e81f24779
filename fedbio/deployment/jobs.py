"""A fedbio run as a job on a deployment: ``fedbio run ... --deployment W``.

The job is the simulator's (``fedbio.federation.nvflare.job.FedbioRecipe``) in its deployment
form: the first model and the sites' spec travel inside it, no path of this machine does. It is
submitted through NVFlare's Session API as the submitter (``--submitter USER``, default the
consortium's admin), watched (a line per round, from the server's job log),
and its result downloaded into the run folder:

    RUN/nvflare/<job id>/     what the server kept of the job (its workspace folder, logs)
    RUN/nvflare/logs/<participant>.txt   each participant's job log, as the server collected it
    RUN/federation/server/    the server's records (history.json, global.safetensors), copied
                              from the download, so the rest of the run reads them as after the
                              simulator
    RUN/tb/server/            the server's TensorBoard curves, likewise

Each site decides whether it runs the submitter's jobs (``fedbio.deployment.policy``): a site
that refused the job is named in a line and in ``metrics.json``'s ``deployment.refused``, and
takes part in no round; if too few sites accepted, the job does not run and the run fails in
one line naming the refusing sites.

What each site keeps (its audit, its caches, a private head's model, DP-SGD's record) stays in
its kit, ``W/kits/<site>/<job id>/fedbio``; ``metrics.json``'s ``deployment`` block says where.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import threading
import time
from pathlib import Path

from fedbio.deployment.admin import admin_session, connected_sites
from fedbio.deployment.kits import ADMIN, CONSORTIUM, SERVER
from fedbio.deployment.policy import REQUESTS, requests
from fedbio.deployment.processes import kit, read_record
from fedbio.errors import FedbioError

POLL = 1.0   # seconds between looks at the job
QUIET = 30.0  # seconds without a round's line before a line saying the job still runs
ROUND_LINE = re.compile(r"fedbio: (round \d+/\d+.*)$")
ENDED = ("FINISHED", "ABORTED", "FAILED")


def check_submitter(workspace: str | Path, user: str) -> None:
    """Refuse a user without a kit, or one the server's own policy does not let submit jobs
    (a ``member``), before anything is written."""
    from fedbio.deployment.admin import users_of
    from fedbio.deployment.approval import decide
    from fedbio.deployment.policy import participants

    if user not in users_of(workspace):
        raise FedbioError(f"--submitter {user}: no such user of {workspace} (its users are "
                          f"{', '.join(users_of(workspace))})")
    person = participants(workspace).get(user) or {}
    local = kit(Path(workspace), SERVER) / "local"
    path = next((p for p in (local / "authorization.json", local / "authorization.json.default")
                 if p.is_file()), None)
    if path is None:
        return
    from nvflare.security.security import FLAuthorizer

    ok, _ = decide(FLAuthorizer(CONSORTIUM, json.loads(path.read_text())), user,
                   str(person.get("org")), str(person.get("role")), byoc=False)
    if not ok:
        raise FedbioError(f"--submitter {user} (role {person.get('role')}) may not submit jobs: the "
                          f"server's policy ({path}) refuses it; submit as {ADMIN} or a site's lead")


def check_deployment(workspace: str | Path, sites: list[str], min_sites: int = 0,
                     submitter: str | None = None) -> dict:
    """The deployment's record, refused (before the run writes anything) unless its sites are
    the split's, enough of them are connected, and ``submitter`` may submit jobs."""
    record = read_record(workspace)
    check_submitter(workspace, submitter or ADMIN)
    if record.get("state") != "up":
        raise FedbioError(f"--deployment {workspace} is {record.get('state') or 'not up'}; bring a new "
                          "one up in another folder (fedbio deploy up --workspace NEW)")
    if sorted(record["sites"]) != sorted(sites):
        raise FedbioError(f"--deployment {workspace} has sites {', '.join(record['sites'])}, the "
                          f"split has {', '.join(sites)}; run on the split the deployment was "
                          f"made with ({workspace}/split) or deploy again")
    with admin_session(workspace) as session:
        _check_connected(connected_sites(session), min_sites or len(sites), workspace)
    return record


def _check_connected(sites: list[str], needed: int, workspace) -> None:
    if len(sites) < needed:
        raise FedbioError(f"only {len(sites)} site(s) connected to {workspace} ({', '.join(sites) or 'none'}); "
                          f"the run needs {needed}: start the others (fedbio deploy start-site)")


def run_job(recipe, run_dir: Path, workspace: str | Path, min_sites: int, say=print,
            timeout: float = 0, submitter: str | None = None) -> dict:
    """Export, submit (as ``submitter``), watch and download the job; return ``{"job_id",
    "sites", ...}``."""
    from fedbio.federation.nvflare.job import JOB_NAME

    job_root = run_dir / "federation" / "job"
    recipe.export(str(job_root))
    _script_by_name(job_root / JOB_NAME)
    needed = min_sites or len(read_record(workspace)["sites"])
    user = submitter or ADMIN
    info: dict = {"workspace": str(Path(workspace).resolve()), "submitter": user}
    with admin_session(workspace, user=user) as session:
        sites = connected_sites(session)
        _check_connected(sites, needed, workspace)
        info["sites_connected"] = sites
        job_id = _submit(session, str(job_root / JOB_NAME), user, workspace)
        info["job_id"] = job_id
        _write(run_dir, info)
        say(f"submitted job {job_id} to {workspace} as {user} ({len(sites)} sites connected)")
        done = False
        try:
            info["status"] = _watch(session, job_id, say, timeout, workspace, needed)
            done = True
        finally:
            if not done:   # interrupted or failed while watching: the job must not go on alone
                with _signals_held():   # a second Ctrl-C must not stop the abort
                    try:
                        session.abort_job(job_id)
                        say(f"aborted job {job_id} on the deployment")
                    except Exception:
                        pass
                    _keep_logs(session, job_id, run_dir)
        info["refused"], failed = _refused(session, job_id, workspace, say)
        if "FAILED_TO_RUN" in info["status"] and (info["refused"] or failed):
            _write(run_dir, info)
            _keep_logs(session, job_id, run_dir)
            if not info["refused"]:
                raise FedbioError(f"job {job_id} did not run: too few sites took it ("
                                  f"{'; '.join(f'{s}: {r}' for s, r in failed.items())}); see fedbio "
                                  f"deploy status --workspace {workspace}")
            names = ", ".join(sorted(info["refused"]))
            raise FedbioError(
                f"job {job_id} did not run: {names} refused jobs submitted by {user}, and the other "
                f"sites are fewer than the run needs; allow {user} there (fedbio deploy policy --site "
                f"{sorted(info['refused'])[0]} --allow {user} ... --workspace {workspace}) or submit "
                "as an approved user (--submitter)")
        _download(session, job_id, run_dir, info)
    _write(run_dir, info)
    return info


def _submit(session, job: str, user: str, workspace) -> str:
    try:
        return session.submit_job(job)
    except Exception as err:
        if type(err).__name__ != "AuthorizationError":
            raise
        raise FedbioError(f"the server of {workspace} refused the job: {user} may not submit jobs "
                          f"({err}); submit as {ADMIN} or a site's lead (--submitter)") from None


def _refused(session, job_id: str, workspace, say) -> tuple[dict[str, str], dict[str, str]]:
    """From the job's ``job_deploy_detail``: the sites that refused it (their policy), and those
    that did not take it for another reason (no reply), each with its reason; a line for each."""
    try:
        detail = session.get_job_meta(job_id).get("job_deploy_detail") or []
    except Exception:
        return {}, {}
    sites = set(read_record(workspace)["sites"])
    refused, failed = {}, {}
    for entry in detail:
        site, _, reply = str(entry).partition(": ")
        reply = reply.strip()
        if site not in sites or reply == "OK":
            continue
        mine = [r for r in requests(workspace, site) if r.get("job_id") == job_id and r.get("decision") == "refused"]
        if mine or any(w in reply.lower() for w in ("not authorized", "not_authorized", "not permitted")):
            refused[site] = mine[-1].get("reason") or reply if mine else reply
            say(f"{site} refused job {job_id}: {refused[site]} (its record: "
                f"{kit(Path(workspace), site) / REQUESTS})")
        else:
            failed[site] = reply
            say(f"{site} did not take job {job_id}: {reply}")
    return refused, failed


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C, SIGTERM and SIGHUP noted, not raised, while the block runs (main thread only:
    elsewhere Python delivers no signal anyway); the command is already ending because of one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {getattr(signal, name): signal.getsignal(getattr(signal, name))
            for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
    for sig in held:
        signal.signal(sig, lambda *_: None)
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def _script_by_name(job: Path) -> None:
    """The client script by its name, found in the job's custom folder at the site (NVFlare's
    export writes the absolute path it was given, a path of this machine)."""
    for config in job.rglob("config_fed_client.json"):
        data = json.loads(config.read_text())
        for executor in data.get("executors", []):
            args = executor.get("executor", {}).get("args", {})
            if "task_script_path" in args:
                args["task_script_path"] = Path(args["task_script_path"]).name
        config.write_text(json.dumps(data, indent=1) + "\n")


def _watch(session, job_id: str, say, timeout: float, workspace, needed: int = 0) -> str:
    """Poll the job until it ends; return its status. A job still waiting to be scheduled while
    fewer than ``needed`` sites are connected (the server waits for them) is refused."""
    start, seen = time.monotonic(), 0
    last = start   # when something was last said: a long round gets a line every QUIET seconds
    while True:
        try:
            status = str(session.get_job_meta(job_id).get("status", ""))
        except Exception as err:
            raise FedbioError(f"lost the deployment's server while watching job {job_id} "
                              f"({type(err).__name__}: {err}); see its log (fedbio deploy logs "
                              f"--workspace {workspace} --site localhost)") from None
        lines = _round_lines(session, job_id)
        for line in lines[seen:]:
            say(f"  {line}")
            last = time.monotonic()
        seen = max(seen, len(lines))
        if time.monotonic() - last >= QUIET and not status.startswith(ENDED):
            say(f"  job {status.lower()}, {seen} round(s) done, {time.monotonic() - start:.0f} s so far")
            last = time.monotonic()
        if status.startswith(ENDED):
            return status
        if status == "SUBMITTED" and needed:   # the server waits for sites gone: refuse (and abort)
            _check_connected(connected_sites(session), needed, workspace)
        if timeout and time.monotonic() - start > timeout:
            raise FedbioError(f"job {job_id} did not end within {timeout:g} s (status {status})")
        time.sleep(POLL)


def _round_lines(session, job_id: str) -> list[str]:
    try:
        logs = session.get_job_logs(job_id, "server").get("logs", {})
    except Exception:
        return []
    text = "\n".join(str(v) for v in logs.values())
    return [m.group(1) for m in map(ROUND_LINE.search, text.splitlines()) if m]


def _download(session, job_id: str, run_dir: Path, info: dict) -> None:
    """The job's result into ``RUN/nvflare``, the participants' logs beside it, and the server's
    records where the run reads them."""
    dest = run_dir / "nvflare"
    dest.mkdir(parents=True, exist_ok=True)
    path = Path(session.download_job_result(job_id, destination=str(dest)))
    info["download"] = str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
    _keep_logs(session, job_id, run_dir)
    for sub, target in (("federation/server", run_dir / "federation" / "server"), ("tb", run_dir / "tb")):
        found = sorted(path.rglob(sub))
        if found:
            shutil.copytree(found[0], target, dirs_exist_ok=True)


def _keep_logs(session, job_id: str, run_dir: Path) -> None:
    """The job's logs the server holds (its own; the sites' stay in their kits) into
    ``RUN/nvflare/logs`` -- also for a failed or interrupted job."""
    try:
        logs = session.get_job_logs(job_id, "all").get("logs", {})
    except Exception:
        return
    folder = run_dir / "nvflare" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in logs.items():
        if re.fullmatch(r"[A-Za-z0-9@._-]+", str(name)):
            (folder / f"{name}.txt").write_text(str(text))


def site_folders(workspace: str | Path, sites: list[str], job_id: str) -> dict[str, str]:
    """Where each site keeps what it kept of the job (in its own kit)."""
    return {s: str(kit(Path(workspace).resolve(), s) / job_id / "fedbio") for s in sites}


def _write(run_dir: Path, info: dict) -> None:
    (run_dir / "federation" / "deployment.json").write_text(json.dumps(info, indent=1) + "\n")
