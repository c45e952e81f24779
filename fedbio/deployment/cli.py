"""``fedbio deploy up | status | logs | stop-site | start-site | policy | down``: a deployment here.

    fedbio deploy up --sites 3 --workspace W [--split DIR] [--port P]
    fedbio deploy status --workspace W [--json]
    fedbio deploy logs --workspace W [--site NAME] [--lines N]
    fedbio deploy stop-site NAME --workspace W
    fedbio deploy start-site NAME --workspace W
    fedbio deploy policy --site NAME [--allow WHO [WHO ...]] --workspace W
    fedbio deploy down --workspace W
"""

from __future__ import annotations

import json
from pathlib import Path

from fedbio.deployment.kits import ADMIN, SERVER
from fedbio.errors import FedbioError

DEFAULT_PORT = 8002          # NVFlare's; the admin port is the next one
CONNECT_TIMEOUT = 120.0      # seconds for every site to connect
HEARTBEAT_TIMEOUT = 60.0     # seconds without a heartbeat before the server drops a site


def register(sub) -> None:
    p = sub.add_parser("deploy", help="a real NVFlare deployment on this machine: provisioned kits, "
                       "one process per site, mutual TLS on 127.0.0.1")
    dsub = p.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    up = dsub.add_parser("up", help="provision kits, start the server and every site, wait until connected")
    up.add_argument("--sites", type=int, required=True, help="number of sites (1 to 32)")
    up.add_argument("--workspace", required=True, help="folder for everything: kits, data, logs, jobs "
                    "(new or empty)")
    up.add_argument("--split", default=None, help="a split folder with that many sites (default: the "
                    "shipped data split over --sites sites, seed 0)")
    up.add_argument("--task", default=None, choices=("scl", "classification", "regression", "antibody"),
                    help="what --split's labels are (default: antibody where it has tasks.json, else scl)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help=f"the server's port on 127.0.0.1; the admin's is the next (default {DEFAULT_PORT})")
    up.add_argument("--heartbeat-timeout", type=float, default=HEARTBEAT_TIMEOUT,
                    help=f"seconds before the server drops a silent site (default {HEARTBEAT_TIMEOUT:g}; "
                         "NVFlare's is 600)")
    up.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT,
                    help=f"seconds to wait for every site (default {CONNECT_TIMEOUT:g})")
    up.set_defaults(func=cmd_up)
    st = dsub.add_parser("status", help="connected sites, processes, jobs")
    st.add_argument("--workspace", required=True)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)
    lg = dsub.add_parser("logs", help="the end of each participant's log")
    lg.add_argument("--workspace", required=True)
    lg.add_argument("--site", default=None, help="one participant (a site, or localhost: the server)")
    lg.add_argument("--lines", type=int, default=30, help="lines from the end (default 30)")
    lg.set_defaults(func=cmd_logs)
    for name, func, text in (("stop-site", cmd_stop_site, "end a site's processes (a site going down)"),
                             ("start-site", cmd_start_site, "start a stopped site and wait until connected")):
        s = dsub.add_parser(name, help=text)
        s.add_argument("site")
        s.add_argument("--workspace", required=True)
        s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT)
        s.set_defaults(func=func)
    po = dsub.add_parser("policy", help="whose jobs a site runs (its local/authorization.json); shown "
                         "without --allow")
    po.add_argument("--site", required=True)
    po.add_argument("--allow", nargs="+", default=None, metavar="WHO",
                    help="users (lead@site-1.org), organisations (org_site_1) or roles (project_admin, "
                         "org_admin, lead, member) whose jobs the site runs; any: NVFlare's default")
    po.add_argument("--show", action="store_true", help="print the site's policy (the default without --allow)")
    po.add_argument("--workspace", required=True)
    po.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="seconds for a restarted site to connect")
    po.set_defaults(func=cmd_policy)
    dn = dsub.add_parser("down", help="end every process the deployment started (kits and logs are kept)")
    dn.add_argument("--workspace", required=True)
    dn.set_defaults(func=cmd_down)


def cmd_up(args) -> int:
    from fedbio.deployment.deploy import deploy_up

    record = deploy_up(args.workspace, args.sites, split=args.split, task=args.task, port=args.port,
                       heartbeat_timeout=args.heartbeat_timeout, timeout=args.timeout, say=print)
    print(f"deployment up in {args.workspace}: server {SERVER}:{record['port']} (admin port "
          f"{record['admin_port']}), sites {', '.join(record['sites'])} connected; admin kit "
          f"{args.workspace}/kits/{ADMIN}")
    print(f"run a job: fedbio run --mode fedavg --deployment {args.workspace} --out RUN;"
          f" end it: fedbio deploy down --workspace {args.workspace}")
    return 0


def cmd_status(args) -> int:
    from fedbio.deployment.deploy import status

    info = status(args.workspace)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"deployment {args.workspace}: server {info['server']}, {info['state']}")
    for name, pids in info["processes"].items():
        left = info["left_without_parent"].get(name)
        print(f"  {name:<24} {'running, pid ' + ', '.join(map(str, pids)) if pids else 'stopped'}"
              + (f" (job processes left: {', '.join(map(str, left))}; deploy down ends them)" if left else ""))
    print(f"connected sites: {', '.join(info['connected']) or 'none'}")
    if info.get("error"):
        print(f"server: {info['error']}")
    for job in info["jobs"]:
        print(f"job {job['id']} ({job['name']}): {job['status']}")
    for site, seen in info["refusals"].items():
        if seen["refused"]:
            last = seen["last"]
            print(f"{site} refused {seen['refused']} job(s); last: {last.get('job_id')} from "
                  f"{last.get('submitter')} at {last.get('time')} ({last.get('reason')})")
    return 0


def cmd_policy(args) -> int:
    from fedbio.deployment.deploy import set_policy
    from fedbio.deployment.policy import POLICY, describe, read_policy

    if args.allow is not None:
        if args.show:
            raise FedbioError("--show prints the policy; give it without --allow")
        set_policy(args.workspace, args.site, args.allow, timeout=args.timeout, say=print)
        return 0
    policy, default = read_policy(args.workspace, args.site)
    print(f"{args.site} ({args.workspace}/kits/{args.site}/local/{POLICY}): runs {describe(policy, default)}")
    if args.show:
        print(json.dumps(policy, indent=1))
    return 0


def cmd_logs(args) -> int:
    from fedbio.deployment.processes import kit, read_record

    record = read_record(args.workspace)
    names = [SERVER, *record["sites"]]
    if args.site is not None and args.site not in names:
        raise FedbioError(f"--site {args.site}: not a participant of {args.workspace}; choose one of "
                          f"{', '.join(names)}")
    if args.lines < 1:
        raise FedbioError(f"--lines {args.lines}: give a whole number of at least 1")
    for name in [args.site] if args.site else names:
        for log in (kit(Path(args.workspace), name) / "log.txt", kit(Path(args.workspace), name) / "console.txt"):
            if log.is_file():
                lines = log.read_text(errors="replace").splitlines()[-args.lines:]
                print(f"== {name}: {log} (last {len(lines)} lines)")
                print("\n".join(lines))
                break
        else:
            print(f"== {name}: no log yet")
    return 0


def cmd_stop_site(args) -> int:
    from fedbio.deployment.deploy import stop_site

    n = stop_site(args.workspace, args.site)
    print(f"stopped {args.site} ({n} process(es) ended)")
    return 0


def cmd_start_site(args) -> int:
    from fedbio.deployment.deploy import start_site

    start_site(args.workspace, args.site, timeout=args.timeout, say=print)
    print(f"started {args.site}: connected")
    return 0


def cmd_down(args) -> int:
    from fedbio.deployment.deploy import deploy_down

    n, seconds = deploy_down(args.workspace)
    print(f"deployment {args.workspace} down: {n} process(es) ended in {seconds:.1f} s; kits and logs kept")
    return 0
