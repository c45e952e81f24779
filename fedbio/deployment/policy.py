"""Site authorization: whose jobs a site runs (``fedbio deploy policy``).

    fedbio deploy policy --site site-2 --allow org_site_2 admin@consortium.org --workspace W
    fedbio deploy policy --site site-2 --workspace W          # show it
    fedbio deploy policy --site site-2 --allow any --workspace W   # NVFlare's default again

Each site decides for itself, in its own kit: ``W/kits/<site>/local/authorization.json``,
NVFlare's policy (role -> right -> conditions). ``--allow WHO ...`` writes NVFlare's default
policy (the kit's ``local/authorization.json.default``) with the rights ``submit_job`` and
``byoc`` (a fedbio job brings its training script: it needs both) narrowed, for every role, to
the submitters named: a user (``lead@site-1.org`` -> ``n:lead@site-1.org``), an organisation
(``org_site_2`` -> ``o:org_site_2``), or a role (``lead`` -> every lead), any of them matching;
every other right keeps NVFlare's default (view, manage_job and download_job for the job's
submitter, operate for the site's own organisation, ...). Names are checked against the
project's participants (``W/project.yml``). The file is replaced whole (a hand-edited one
included); a malformed one is simply replaced. A site reads its policy only when it starts,
so ``fedbio.deployment.deploy.set_policy`` restarts a running site (stop-site; start-site once
the server has let the old connection go, then until connected again; a job running there
meanwhile goes on without the site, as after any stop-site).

How "job approval" (Apheris-style: each data owner approves what may compute on its data)
maps onto NVFlare: approval is per submitter, not per job. The server accepts a job from any
user its own policy lets submit (project_admin, lead; never member); the server then deploys
it to every site, and each site's own policy decides whether that submitter's jobs run there.
A site that refuses is left out of the job: the job runs on the others if at least its
``min_sites`` accepted, else it fails to run (``FAILED_TO_RUN``). Each site records every
request and its decision in ``W/kits/<site>/fedbio/job_requests.jsonl``
(``fedbio.deployment.approval.JobRequests``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fedbio.errors import FedbioError

POLICY = "authorization.json"
DEFAULT = "authorization.json.default"
ROLES = ("project_admin", "org_admin", "lead", "member")
RIGHTS = ("submit_job", "byoc")                       # a fedbio job needs both at a site
REASON = "not allowed by local/authorization.json"
REQUESTS = Path("fedbio") / "job_requests.jsonl"      # each site's record, inside its kit
EXTRA_RIGHTS = ("byoc", "server-predeployed-flwr")    # rights that are no admin command


def participants(workspace: str | Path) -> dict[str, dict]:
    """The project's participants from ``W/project.yml``: name -> {type, org, role}."""
    import yaml

    path = Path(workspace) / "project.yml"
    try:
        project = yaml.safe_load(path.read_text())
        return {p["name"]: {"type": p.get("type"), "org": p.get("org"), "role": p.get("role")}
                for p in project["participants"]}
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        raise FedbioError(f"{path}: no project file fedbio wrote; deploy anew (fedbio deploy up)") from None


def conditions(allow: list[str], workspace: str | Path) -> tuple[list[str], list[str]]:
    """``--allow`` as NVFlare's conditions and whole roles: (["n:...", "o:..."], ["lead"])."""
    known = participants(workspace)
    users = {n for n, p in known.items() if p["type"] == "admin"}
    orgs = {p["org"] for p in known.values() if p["org"]}
    conds, roles = [], []
    for who in allow:
        if who in ROLES:
            roles.append(who)
        elif "@" in who:
            if who not in users:
                raise FedbioError(f"--allow {who}: no such user in {workspace}/project.yml; its users are "
                                  f"{', '.join(sorted(users))}")
            conds.append(f"n:{who}")
        elif who in orgs:
            conds.append(f"o:{who}")
        else:
            raise FedbioError(f"--allow {who}: not a user, organisation or role of {workspace}; give "
                              f"a user ({', '.join(sorted(users))}), an organisation "
                              f"({', '.join(sorted(orgs))}), a role ({', '.join(ROLES)}) or any")
        if who != who.lower() or not re.fullmatch(r"[A-Za-z0-9_.@%+-]+", who):
            raise FedbioError(f"--allow {who}: NVFlare's policies match lower-case names only; this "
                              "name cannot be allowed by name (allow its role instead)")
    return sorted(set(conds)), sorted(set(roles))


def site_policy(default: dict, conds: list[str], roles: list[str]) -> dict:
    """NVFlare's ``default`` policy with ``submit_job`` and ``byoc`` narrowed (see the module)."""
    from nvflare.apis.fl_constant import AdminCommandNames
    from nvflare.security.security import COMMAND_CATEGORIES

    every = sorted({v for k, v in vars(AdminCommandNames).items() if k.isupper() and isinstance(v, str)}
                   | set(COMMAND_CATEGORIES.values()) | set(EXTRA_RIGHTS))
    narrowed = conds or "none"
    permissions = {}
    for role, rights in default["permissions"].items():
        if not isinstance(rights, dict):   # one condition for every right (project_admin: any)
            rights = {right: rights for right in every}
        rights = dict(rights)
        for right in RIGHTS:
            rights[right] = "any" if role in roles else narrowed
        permissions[role] = rights
    for role in roles:   # a role the default does not list
        permissions.setdefault(role, {right: "any" for right in RIGHTS})
    return {**default, "permissions": permissions}


def _site(workspace: str | Path, site: str) -> Path:
    from fedbio.deployment.processes import kit, read_record

    record = read_record(workspace)
    if site not in record["sites"]:
        raise FedbioError(f"--site {site}: not a site of {workspace}; its sites are {', '.join(record['sites'])}")
    return kit(Path(workspace), site)


def _default(folder: Path) -> dict:
    try:
        return json.loads((folder / "local" / DEFAULT).read_text())
    except (OSError, ValueError):
        raise FedbioError(f"{folder}/local/{DEFAULT}: missing or damaged (not a kit NVFlare "
                          "provisioned?); deploy anew") from None


def write_policy(workspace: str | Path, site: str, allow: list[str]) -> tuple[dict, Path, str]:
    """Write ``site``'s policy allowing ``allow`` (``["any"]``: NVFlare's default); return it,
    its path and a line saying whose jobs it runs. The site itself is not restarted
    (``fedbio.deployment.deploy.set_policy`` does)."""
    folder = _site(workspace, site)
    default = _default(folder)
    if not allow:
        raise FedbioError("--allow needs at least one user, organisation or role (or any)")
    if "any" in allow:
        if len(allow) > 1:
            raise FedbioError("--allow any stands alone (NVFlare's default policy); drop the others")
        policy = default
    else:
        policy = site_policy(default, *conditions(allow, workspace))
    check_policy(policy)
    path = folder / "local" / POLICY
    part = path.with_name(POLICY + ".part")
    part.write_text(json.dumps(policy, indent=1) + "\n")
    part.replace(path)
    return policy, path, describe(policy, default)


def check_policy(policy: dict) -> None:
    """Refuse what NVFlare would refuse at the site's start."""
    from nvflare.fuel.sec.authz import parse_policy_config
    from nvflare.security.security import COMMAND_CATEGORIES

    try:
        _, err = parse_policy_config(policy, COMMAND_CATEGORIES)
    except Exception as exc:   # NVFlare asserts on some shapes (a list, a number)
        err = f"{type(exc).__name__}: {exc}"
    if err:
        raise FedbioError(f"the policy is not one NVFlare accepts ({err})")


def read_policy(workspace: str | Path, site: str) -> tuple[dict, dict]:
    """(the site's policy, NVFlare's default); the default when the site has none of its own."""
    folder = _site(workspace, site)
    default = _default(folder)
    path = folder / "local" / POLICY
    if not path.is_file():
        return default, default
    try:
        policy = json.loads(path.read_text())
        check_policy(policy)
    except (ValueError, FedbioError) as err:
        what = "not JSON" if not isinstance(err, FedbioError) else str(err)
        raise FedbioError(f"{path}: {what} (the site cannot start with it); write a new one "
                          f"with fedbio deploy policy --site {site} --allow ...") from None
    return policy, default


def describe(policy: dict, default: dict) -> str:
    """Whose jobs the policy lets run, in a line."""
    if policy == default:
        return "jobs from any submitter the server accepts (NVFlare's default policy)"
    seen = []
    for role, rights in policy.get("permissions", {}).items():
        exp = rights if not isinstance(rights, dict) else rights.get("submit_job", "none")
        exp = exp if isinstance(exp, list) else [exp]
        for e in exp:
            e = {"any": f"every {role}", "none": None}.get(e, e.replace("n:", "", 1).replace("o:", "organisation ", 1))
            if e and e not in seen:
                seen.append(e)
    return f"jobs only from {', '.join(seen)}" if seen else "no jobs at all"


def requests(workspace: str | Path, site: str) -> list[dict]:
    """A site's records of the jobs submitted to it, oldest first."""
    from fedbio.deployment.processes import kit

    path = kit(Path(workspace), site) / REQUESTS
    out = []
    if path.is_file():
        for text in path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):   # a stray or damaged line is no request
                out.append(line)
    return out


def refusals(workspace: str | Path, site: str) -> dict:
    """``{"refused": n, "last": {...} | None}`` from the site's record."""
    refused = [r for r in requests(workspace, site) if r.get("decision") == "refused"]
    return {"refused": len(refused), "last": refused[-1] if refused else None}
