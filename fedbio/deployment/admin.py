"""A user on a deployment: NVFlare's Session API with the user's kit (the admin's by default).

    with admin_session(W) as session:
        connected_sites(session)               # ['site-1', 'site-2', 'site-3']
        job_id = session.submit_job(job_folder)

Every call speaks mutual TLS to the server's admin port (127.0.0.1), as the admin console would.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from fedbio.deployment.kits import ADMIN, environment
from fedbio.deployment.processes import kit
from fedbio.errors import FedbioError

LOGIN_TIMEOUT = 10.0   # seconds to reach the admin port


def _not_nvflare(record: logging.LogRecord) -> bool:
    return "/nvflare/" not in record.pathname.replace(os.sep, "/")


@contextlib.contextmanager
def quiet_nvflare() -> Iterator[None]:
    """NVFlare's own log records (a lost connection's retries) kept off this process's console:
    what went wrong is said once, in fedbio's line; the participants' logs keep theirs."""
    handlers = {logging.lastResort, *logging.getLogger().handlers}
    for logger in list(logging.Logger.manager.loggerDict.values()):
        handlers.update(getattr(logger, "handlers", []))
    handlers.discard(None)
    for handler in handlers:
        handler.addFilter(_not_nvflare)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_not_nvflare)


@contextlib.contextmanager
def admin_session(workspace: str | Path, timeout: float = LOGIN_TIMEOUT, user: str = ADMIN) -> Iterator:
    """A logged-in Session as ``user`` (default ``admin@consortium.org``), with that user's kit
    (HOME and TMPDIR inside W meanwhile, NVFlare's log records off the console)."""
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    workspace = Path(os.path.realpath(workspace))
    if not (kit(workspace, user) / "startup").is_dir():
        raise FedbioError(f"{user}: no user kit in {workspace}/kits (its users are "
                          f"{', '.join(users_of(workspace))}); submit as one of them")
    saved = {k: os.environ.get(k) for k in ("HOME", "TMPDIR")}
    os.environ.update(environment(workspace))
    session = None
    quiet = quiet_nvflare()
    quiet.__enter__()
    try:
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # NVFlare prints "Connecting to FLARE ..."
                session = new_secure_session(user, str(kit(workspace, user)), timeout=timeout)
        except Exception as err:
            raise FedbioError(f"{workspace}: cannot reach the deployment's server as {user} "
                              f"({type(err).__name__}: {err}); is it up? (fedbio deploy status "
                              f"--workspace {workspace})") from None
        yield session
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()
        quiet.__exit__(None, None, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def users_of(workspace: str | Path) -> list[str]:
    """The users that have a kit in ``W/kits`` (an ``@`` in the name)."""
    folder = Path(workspace) / "kits"
    return sorted(p.name for p in folder.iterdir() if "@" in p.name) if folder.is_dir() else []


def connected_sites(session) -> list[str]:
    """Names of the sites connected to the server now."""
    return sorted(c.name for c in session.get_system_info().client_info)


def running_jobs(session) -> list[dict]:
    """The server's jobs that have not ended: id, name, status."""
    jobs = session.list_jobs(detailed=True) or []
    return [{"id": j.get("job_id"), "name": j.get("name"), "status": j.get("status")}
            for j in jobs if not str(j.get("status", "")).startswith("FINISHED")]


def wait_for_sites(workspace: Path, sites: list[str], timeout: float, alive=None) -> list[str]:
    """Wait until every one of ``sites`` is connected (or ``timeout`` passes); return those
    connected. ``alive()``, when given, is asked between polls and may raise."""
    deadline = time.monotonic() + timeout
    connected: list[str] = []
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            with admin_session(workspace, timeout=min(5.0, max(1.0, deadline - time.monotonic()))) as s:
                while time.monotonic() < deadline:
                    connected = connected_sites(s)
                    if set(sites) <= set(connected):
                        return connected
                    if alive:
                        alive()
                    time.sleep(0.5)
        except FedbioError:
            time.sleep(0.5)   # the server is not listening yet
    return connected
