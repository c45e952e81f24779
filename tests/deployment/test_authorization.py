"""Site authorization on a real deployment: each site runs only the jobs of submitters its own
policy (``local/authorization.json``) allows, and records every request.

The unit tests build a workspace by hand (no process); the rest share one 3-site deployment
where site-2 allows only its own organisation and the consortium's admin.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedbio.cli import main
from fedbio.deployment.deploy import set_policy
from fedbio.deployment.kits import ADMIN, MEMBER, SERVER, free_ports, lead_of, org_of, project_file
from fedbio.deployment.policy import DEFAULT, POLICY, REQUESTS
from fedbio.deployment.processes import write_record

SITES = ["site-1", "site-2", "site-3"]
RUN = ["run", "--mode", "fedavg", "--model", "composition", "--epochs", "1", "--rounds", "1"]


def _default_policy() -> dict:
    import nvflare.lighter
    import yaml

    template = Path(nvflare.lighter.__file__).parent / "templates" / "master_template.yml"
    return json.loads(yaml.safe_load(template.read_text())["default_authz"])


@pytest.fixture
def workspace(tmp_path):
    """A deployment's files as provisioning leaves them, no process running."""
    w = tmp_path / "W"
    w.mkdir()
    (w / "project.yml").write_text(project_file(SITES, 8002, 8003))
    write_record(w, {"sites": SITES, "port": 8002, "state": "down"})
    for site in SITES:
        (w / "kits" / site / "local").mkdir(parents=True)
        (w / "kits" / site / "local" / DEFAULT).write_text(json.dumps(_default_policy()))
    return w


def _decide(policy: dict, site: str, name: str, org: str, role: str) -> bool:
    from nvflare.security.security import FLAuthorizer

    from fedbio.deployment.approval import decide

    return decide(FLAuthorizer(org_of(site), policy), name, org, role)[0]


def test_a_policy_lets_only_the_named_submitters_run_jobs(workspace):
    policy = set_policy(workspace, "site-2", ["org_site_2", ADMIN], say=lambda *a: None)
    assert json.loads((workspace / "kits" / "site-2" / "local" / POLICY).read_text()) == policy
    allowed = {(ADMIN, "consortium", "project_admin"): True,
               (lead_of("site-2"), "org_site_2", "lead"): True,
               (lead_of("site-1"), "org_site_1", "lead"): False,
               (lead_of("site-3"), "org_site_3", "lead"): False,
               (MEMBER, "consortium", "member"): False}
    for person, want in allowed.items():
        assert _decide(policy, "site-2", *person) is want, person
    # every other right keeps NVFlare's default
    from nvflare.fuel.sec.authz import AuthzContext, Person
    from nvflare.security.security import FLAuthorizer

    authz = FLAuthorizer("org_site_2", policy)
    lead1 = Person(lead_of("site-1"), "org_site_1", "lead")
    assert authz.authorize(AuthzContext("view", lead1, lead1))[0]
    assert authz.authorize(AuthzContext("abort_job", lead1, lead1))[0]            # its own job
    other = Person(lead_of("site-3"), "org_site_3", "lead")
    assert not authz.authorize(AuthzContext("abort_job", lead1, other))[0]        # not another's
    admin = Person(ADMIN, "consortium", "project_admin")
    assert authz.authorize(AuthzContext("sys_info", admin, admin))[0]
    assert not authz.authorize(AuthzContext("sys_info", lead1, lead1))[0]        # o:site only
    # a whole role
    policy = set_policy(workspace, "site-3", ["lead"], say=lambda *a: None)
    assert _decide(policy, "site-3", lead_of("site-1"), "org_site_1", "lead")
    assert not _decide(policy, "site-3", ADMIN, "consortium", "project_admin")
    # any: NVFlare's default again
    assert set_policy(workspace, "site-2", ["any"], say=lambda *a: None) == _default_policy()
    assert _decide(_default_policy(), "site-2", lead_of("site-1"), "org_site_1", "lead")


def test_the_policy_command_shows_and_refuses_in_one_line(workspace, capsys):
    w = str(workspace)
    assert main(["deploy", "policy", "--site", "site-1", "--workspace", w]) == 0
    assert "NVFlare's default" in capsys.readouterr().out
    assert main(["deploy", "policy", "--site", "site-1", "--allow", lead_of("site-1"), ADMIN, "--workspace", w]) == 0
    assert main(["deploy", "policy", "--site", "site-1", "--workspace", w]) == 0
    out = capsys.readouterr().out
    assert f"jobs only from {ADMIN}, {lead_of('site-1')}" in out, out
    cases = [(["--site", "site-2", "--allow", "nobody@nowhere.org"], "no such user"),
             (["--site", "site-2", "--allow", "org_nowhere"], "not a user, organisation or role"),
             (["--site", "site-2", "--allow", "any", ADMIN], "stands alone"),
             (["--site", "site-9", "--allow", ADMIN], "not a site"),
             (["--site", "site-2", "--allow", ADMIN, "--show"], "--show")]
    for argv, words in cases:
        assert main(["deploy", "policy", *argv, "--workspace", w]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fedbio: error: ") and "\n" not in err and words in err, (argv, err)
    assert not (workspace / "kits" / "site-2" / "local" / POLICY).exists()   # nothing written
    record = workspace / "kits" / "site-2" / REQUESTS   # what deploy status says of a site's record
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"job_id": "j1", "submitter": lead_of("site-1"), "decision": "refused",
                                  "reason": "not allowed", "time": "t"}) + "\n")
    assert main(["deploy", "status", "--workspace", w]) == 0
    out = capsys.readouterr().out
    assert f"site-2 refused 1 job(s); last: j1 from {lead_of('site-1')}" in out and "site-1 refused" not in out, out


@pytest.mark.parametrize("content", ["[1, 2]", '{"permissions": 5}', '{"permissions": {"lead": 7}}',
                                     '{"permissions": {"lead": {"submit_job": 7}}}', "{", ""])
def test_a_damaged_policy_file_is_one_line(workspace, capsys, content):
    (workspace / "kits" / "site-3" / "local" / POLICY).write_text(content)
    assert main(["deploy", "policy", "--site", "site-3", "--show", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedbio: error: ") and "\n" not in err and "fedbio deploy policy --site site-3" in err, err


def test_stray_lines_in_a_site_record_are_no_requests(workspace, capsys):
    record = workspace / "kits" / "site-1" / REQUESTS
    record.parent.mkdir(parents=True)
    line = {"job_id": "j2", "submitter": ADMIN, "decision": "refused", "reason": "r", "time": "t"}
    record.write_text("[1]\n\"refused\"\n7\nnot json\n" + json.dumps(line) + "\n")
    for argv in (["deploy", "status", "--workspace", str(workspace)], ["deploy", "status", "--json", "--workspace",
                                                                        str(workspace)]):
        assert main(argv) == 0, capsys.readouterr().err
        assert "j2" in capsys.readouterr().out


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, small_split):
    from fedbio.deployment.deploy import deployment

    workspace = tmp_path_factory.mktemp("authz") / "W"
    with deployment(workspace, 3, split=str(small_split), port=free_ports(), heartbeat_timeout=12,
                    say=lambda *a: None):
        set_policy(workspace, "site-2", ["org_site_2", ADMIN], say=lambda *a: None)   # restarts it
        yield workspace


def _requests(workspace: Path, site: str) -> list[dict]:
    path = workspace / "kits" / site / REQUESTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_job_too_few_sites_accept_is_refused_as_a_whole(deployed, tmp_path, capsys):
    before = len(_requests(deployed, "site-2"))
    code = main([*RUN, "--deployment", str(deployed), "--submitter", lead_of("site-1"),
                 "--out", str(tmp_path / "refused")])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and err.count("\n") == 0 and "site-2" in err and "fedbio deploy policy" in err, err
    assert "site-2 refused job" in captured.out and str(REQUESTS) in captured.out
    assert not (tmp_path / "refused").exists() and (tmp_path / "refused.failed").is_dir()
    job_id = json.loads((tmp_path / "refused.failed" / "federation" / "deployment.json").read_text())["job_id"]
    assert not (deployed / "kits" / "site-2" / job_id).exists()          # never started there
    mine = [r for r in _requests(deployed, "site-2")[before:] if r["job_id"] == job_id]
    assert [(r["submitter"], r["org"], r["role"], r["decision"]) for r in mine] == [
        (lead_of("site-1"), "org_site_1", "lead", "refused")]
    assert "local/authorization.json" in mine[0]["reason"]
    assert [r["decision"] for r in _requests(deployed, "site-1") if r["job_id"] == job_id] == ["accepted"]
    log = (deployed / "kits" / "site-2" / "log.txt").read_text()
    assert f"fedbio: refused job {job_id} submitted by {lead_of('site-1')}" in log
    assert main(["deploy", "status", "--workspace", str(deployed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["refusals"]["site-2"]["refused"] >= 1 and info["refusals"]["site-2"]["last"]["job_id"] == job_id
    assert info["refusals"]["site-1"]["refused"] == 0


def test_the_other_sites_run_it_when_enough_accept(deployed, tmp_path, capsys):
    assert main([*RUN, "--deployment", str(deployed), "--submitter", lead_of("site-1"), "--min-sites", "2",
                 "--out", str(tmp_path / "two")]) == 0
    assert "site-2 refused job" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    job_id = metrics["deployment"]["job_id"]
    assert list(metrics["deployment"]["refused"]) == ["site-2"]
    assert metrics["deployment"]["submitter"] == lead_of("site-1")
    assert set(metrics["federation"]["failed_sites"]) == {"site-2"}        # absent from every round
    assert set(metrics["federation"]["failed_sites"]["site-2"]) == {"1"}
    assert not (deployed / "kits" / "site-2" / job_id).exists()
    for site in ("site-1", "site-3"):
        assert (deployed / "kits" / site / job_id).is_dir()


def test_an_approved_submitter_runs_on_every_site_and_a_member_none(deployed, tmp_path, capsys):
    assert main([*RUN, "--deployment", str(deployed), "--out", str(tmp_path / "all")]) == 0
    metrics = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert metrics["deployment"]["refused"] == {} and metrics["deployment"]["submitter"] == ADMIN
    assert not metrics["federation"]["failed_sites"]
    job_id = metrics["deployment"]["job_id"]
    assert [r["decision"] for r in _requests(deployed, "site-2") if r["job_id"] == job_id] == ["accepted"]
    capsys.readouterr()
    assert main([*RUN, "--deployment", str(deployed), "--submitter", MEMBER, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "may not submit jobs" in err and "\n" not in err, err
    assert not list(tmp_path.glob("m*"))   # refused before anything was written
    assert (deployed / "kits" / SERVER).is_dir()


@pytest.mark.timeout(400)
def test_a_policy_changed_mid_job_does_not_hang_the_job(deployed, tmp_path):
    """The restarted site is started only once the server has let its old connection go: started
    before, it was taken for its old self and the job's next task waited for it forever."""
    from fedbio.deployment.admin import admin_session, connected_sites
    from fedbio.deployment.deploy import on_round
    from fedbio.federation import FedConfig, run_federated
    from fedbio.training.run import plan

    cfg = plan(mode="fedavg", model="composition", split=str(deployed / "split"), epochs=3)
    watcher = on_round(deployed, 1, lambda: set_policy(deployed, "site-3", ["any"], say=lambda *a: None))
    metrics = run_federated(cfg, FedConfig(rounds=3, min_sites=2, slow_sites=("site-3",), slow_seconds=4),
                            tmp_path / "mid", progress=False, deployment=deployed)
    watcher.join(120)
    missed = metrics["federation"]["failed_sites"]
    assert set(missed) == {"site-3"} and "1" not in missed["site-3"], missed
    with admin_session(deployed) as session:
        assert connected_sites(session) == SITES


def test_a_site_that_dies_while_starting_is_not_said_connected(deployed):
    from fedbio.deployment.deploy import start_site, stop_site
    from fedbio.errors import FedbioError

    policy = deployed / "kits" / "site-3" / "local" / POLICY
    saved = policy.read_text() if policy.is_file() else None
    stop_site(deployed, "site-3")
    policy.write_text("[1, 2]")   # NVFlare's site cannot start with it
    try:
        with pytest.raises(FedbioError, match="site-3"):
            start_site(deployed, "site-3", timeout=60)
    finally:
        if saved is None:
            policy.unlink()
        else:
            policy.write_text(saved)
        start_site(deployed, "site-3")
