"""Provisioning: NVFlare's ``nvflare provision`` on fedbio's project file, and the kits it makes.

Everything lives under the workspace W::

    W/project.yml          the project file: server ``localhost`` (its sockets on 127.0.0.1),
                           one organisation per site, the consortium's admin
    W/kits/<name>/         one startup kit per participant: ``localhost`` (the server), each
                           site, ``admin@consortium.org``; certificates for mutual TLS inside
    W/kits/<site>/data/    the site's own data: its train.csv and valid.csv, and the public
                           test sets (test.csv, test_hard.csv)
    W/kits/<site>/local/fedbio_site.json   {"data": "data"}: where the site's data is, read
                           by the site's own processes only (never part of a job)
    W/split/               the split the sites' data came from: the coordinator reads its
                           classes and public test sets
    W/storage/             the server's job store and snapshots (NVFlare's defaults are in /tmp)
    W/home/, W/tmp/        HOME and TMPDIR of every process of the deployment
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedbio.errors import FedbioError

PROJECT = "fedbio"
SERVER = "localhost"          # the server's name is its address: loopback only
CONSORTIUM = "consortium"     # the server's and the admin's organisation
ADMIN = "admin@consortium.org"
SITE_CONFIG = "fedbio_site.json"   # fedbio.federation.site.SITE_CONFIG
DATA_FILES = ("train.csv", "valid.csv")
PUBLIC_FILES = ("test.csv", "test_hard.csv", "classes.json", "tasks.json")
STORAGE = "storage"


def org_of(site: str) -> str:
    """A site's organisation (NVFlare allows letters, digits and ``_``)."""
    return "org_" + re.sub(r"[^A-Za-z0-9_]", "_", site)


def project_file(sites: list[str], port: int, admin_port: int) -> str:
    """The project file: the server, one client per site (each its own organisation), the admin."""
    lines = ["api_version: 3", f"name: {PROJECT}", "description: a fedbio deployment on this machine",
             "participants:",
             f"  - name: {SERVER}", "    type: server", f"    org: {CONSORTIUM}",
             f"    fed_learn_port: {port}", f"    admin_port: {admin_port}"]
    for site in sites:
        lines += [f"  - name: {site}", "    type: client", f"    org: {org_of(site)}"]
    lines += [f"  - name: {ADMIN}", "    type: admin", f"    org: {CONSORTIUM}", "    role: project_admin",
              "builders:",
              "  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder",
              "  - path: nvflare.lighter.impl.static_file.StaticFileBuilder",
              "    args:", "      config_folder: config",
              "  - path: nvflare.lighter.impl.cert.CertBuilder",
              "  - path: nvflare.lighter.impl.signature.SignatureBuilder"]
    return "\n".join(lines) + "\n"


def environment(workspace: Path) -> dict:
    """HOME and TMPDIR inside W: NVFlare writes nothing in ~/.nvflare or /tmp."""
    return {"HOME": str(workspace / "home"), "TMPDIR": str(workspace / "tmp")}


def provision(workspace: Path, sites: list[str], port: int, admin_port: int) -> dict[str, Path]:
    """Run ``nvflare provision`` into ``W/provision`` and move the kits to ``W/kits``."""
    for name in ("home", "tmp"):
        (workspace / name).mkdir(parents=True, exist_ok=True)
    project = workspace / "project.yml"
    project.write_text(project_file(sites, port, admin_port))
    cmd = [sys.executable, "-c", "import sys; from nvflare.cli import main; sys.exit(main())",
           "provision", "-p", str(project), "-w", str(workspace / "provision"), "--force"]
    done = subprocess.run(cmd, cwd=workspace, env={**os.environ, **environment(workspace)},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    made = workspace / "provision" / PROJECT / "prod_00"
    if done.returncode != 0 or not made.is_dir():
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise FedbioError(f"nvflare provision failed ({' / '.join(tail)}); see {workspace}/provision")
    kits = {}
    for name in [SERVER, *sites, ADMIN]:
        kits[name] = workspace / "kits" / name
        kits[name].parent.mkdir(exist_ok=True)
        shutil.move(str(made / name), str(kits[name]))
    return kits


def configure_server(kit: Path, workspace: Path, heartbeat_timeout: float) -> None:
    """The server's ``local/resources.json``: its job store inside W, a shorter dead-site
    detection (``heart_beat_timeout``), fedbio's components allowed."""
    res = _resources(kit)
    storage = workspace / STORAGE
    res["servers"][0]["heart_beat_timeout"] = heartbeat_timeout
    res["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(storage / "snapshots")
    for comp in res["components"]:
        if comp["id"] == "job_manager":
            comp["args"]["uri_root"] = str(storage / "jobs")
    _write_resources(kit, res)


def configure_site(kit: Path, data: Path) -> None:
    """A site's ``local/``: fedbio's components allowed, and where its data is."""
    _write_resources(kit, _resources(kit))
    (kit / "local" / SITE_CONFIG).write_text(json.dumps({"data": os.path.relpath(data, kit)}) + "\n")


def _resources(kit: Path) -> dict:
    res = json.loads((kit / "local" / "resources.json.default").read_text())
    res["class_allow_list"] = [*res.get("class_allow_list", []), "fedbio."]   # this site runs fedbio
    return res


def _write_resources(kit: Path, res: dict) -> None:
    (kit / "local" / "resources.json").write_text(json.dumps(res, indent=1) + "\n")


def site_data(split: Path, site: str, kit: Path) -> Path:
    """Copy a site's own files and the public test sets into ``KIT/data``; return that folder."""
    data = kit / "data"
    data.mkdir(exist_ok=True)
    for name in DATA_FILES:
        shutil.copy2(split / site / name, data / name)
    for name in PUBLIC_FILES:
        if (split / name).is_file():
            shutil.copy2(split / name, data / name)
    return data


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (for tests and notebooks)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and port_free(port + 1):
            return port
        time.sleep(0.01)
    raise FedbioError("no two free neighbouring ports on 127.0.0.1")
