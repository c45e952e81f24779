"""Provisioning: NVFlare's ``nvflare provision`` on fedbio's project file, and the kits it makes.

Everything lives under the workspace W::

    W/project.yml          the project file: server ``localhost`` (its sockets on 127.0.0.1),
                           one organisation per site, the consortium's admin
    W/kits/<name>/         one startup kit per participant: ``localhost`` (the server), each
                           site, and each user: ``admin@consortium.org`` (project_admin),
                           ``member@consortium.org`` (member: may look, not submit), and one
                           ``lead@<site>.org`` per site's organisation (lead: may submit jobs,
                           where the sites' policies let it; ``fedbio deploy policy``);
                           certificates for mutual TLS inside,
                           and CKKS contexts for ``--he`` (``startup/client_context.tenseal``
                           at each site, with the secret key; ``server_context.tenseal``, without)
    W/kits/<site>/data/    the site's own data: its train.csv and valid.csv, and the public
                           test sets (test.csv, test_hard.csv)
    W/kits/<site>/local/fedbio_site.json   {"data": "data"}: where the site's data is, read
                           by the site's own processes only (never part of a job)
    W/kits/<site>/local/authorization.json   whose jobs the site runs (``fedbio deploy policy``)
    W/kits/<site>/fedbio/job_requests.jsonl  every job submitted to the site, and its decision
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
MEMBER = "member@consortium.org"   # a user who may look but not submit (NVFlare's role member)
SITE_CONFIG = "fedbio_site.json"   # fedbio.federation.site.SITE_CONFIG
DATA_FILES = ("train.csv", "valid.csv")
PUBLIC_FILES = ("test.csv", "test_hard.csv", "classes.json", "tasks.json")
STORAGE = "storage"


def org_of(site: str) -> str:
    """A site's organisation (NVFlare allows letters, digits and ``_``)."""
    return "org_" + re.sub(r"[^A-Za-z0-9_]", "_", site)


def lead_of(site: str) -> str:
    """The lead of a site's organisation: ``lead@site-1.org`` (an e-mail-like name, as NVFlare
    wants for users)."""
    return f"lead@{re.sub(r'[^a-z0-9-]', '-', site.lower())}.org"


def users(sites: list[str]) -> dict[str, tuple[str, str]]:
    """The project's users: name -> (organisation, role)."""
    return {ADMIN: (CONSORTIUM, "project_admin"), MEMBER: (CONSORTIUM, "member"),
            **{lead_of(site): (org_of(site), "lead") for site in sites}}


def project_file(sites: list[str], port: int, admin_port: int) -> str:
    """The project file: the server, one client per site (each its own organisation), the admin."""
    from fedbio.federation.nvflare.he import POLY_DEGREE as HE_POLY_DEGREE  # imports NVFlare
    lines = ["api_version: 3", f"name: {PROJECT}", "description: a fedbio deployment on this machine",
             "participants:",
             f"  - name: {SERVER}", "    type: server", f"    org: {CONSORTIUM}",
             f"    fed_learn_port: {port}", f"    admin_port: {admin_port}"]
    for site in sites:
        lines += [f"  - name: {site}", "    type: client", f"    org: {org_of(site)}"]
    for user, (org, role) in users(sites).items():
        lines += [f"  - name: {user}", "    type: admin", f"    org: {org}", f"    role: {role}"]
    lines += ["builders:",
              "  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder",
              "  - path: nvflare.lighter.impl.static_file.StaticFileBuilder",
              "    args:", "      config_folder: config",
              "  - path: nvflare.lighter.impl.cert.CertBuilder",
              # CKKS contexts for --he: the sites' with the secret key, the server's without
              "  - path: nvflare.lighter.impl.he.HEBuilder",
              "    args:", f"      poly_modulus_degree: {HE_POLY_DEGREE}", "      scale_bits: 40",
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
    for name in [SERVER, *sites, *users(sites)]:
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
    """A site's ``local/``: fedbio's components allowed, the record of the jobs submitted to it
    (``fedbio.deployment.approval.JobRequests``), and where its data is."""
    res = _resources(kit)
    res["components"] = [*res.get("components", []),
                         {"id": "fedbio_job_requests", "path": "fedbio.deployment.approval.JobRequests", "args": {}}]
    _write_resources(kit, res)
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


def check_he_contexts(workspace: Path, sites: list[str]) -> None:
    """``--he`` needs the CKKS contexts provisioning made (deployments made before fedbio
    provisioned them have none): refused in one line, before anything is written."""
    from fedbio.federation.nvflare.he import CLIENT_CONTEXT, SERVER_CONTEXT

    kits = Path(workspace) / "kits"
    missing = [name for name, ctx in [(SERVER, SERVER_CONTEXT), *((s, CLIENT_CONTEXT) for s in sites)]
               if not (kits / name / "startup" / ctx).is_file()]
    if missing:
        raise FedbioError(f"--he: {', '.join(missing)} in {workspace} hold no CKKS context "
                          "(startup/*_context.tenseal); bring a new deployment up (fedbio deploy up) "
                          "in another folder")
