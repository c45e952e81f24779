"""A real NVFlare deployment on loopback: provisioned kits, mutual TLS, one process per site.

One deployment (3 sites, the small split) serves the module; every test leaves it with its
three sites connected. The module's end asserts that ``down`` leaves no process behind.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedbio.cli import main
from fedbio.deployment.admin import admin_session, connected_sites
from fedbio.deployment.deploy import deploy_up, on_round, start_site, status, stop_site
from fedbio.deployment.kits import SERVER, free_ports
from fedbio.deployment.processes import listening, participant_processes
from fedbio.federation import FedConfig, run_federated
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


def _cfg(workspace: Path, **kw):
    return plan(mode="fedavg", model="composition", split=str(workspace / "split"), epochs=4, **kw)


def _weights(run: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def test_every_socket_of_the_deployment_is_on_loopback(deployed):
    procs = participant_processes(deployed)
    names = {p.environ().get("FEDBIO_PARTICIPANT") for p in procs}
    assert names == {SERVER, *SITES}
    sockets = listening(procs)
    assert sockets, "the server listens somewhere"
    assert all(addr == "127.0.0.1" for addr, _ in sockets), sockets
    record = json.loads((deployed / "deployment.json").read_text())
    assert (("127.0.0.1", record["port"]) in sockets) and (("127.0.0.1", record["admin_port"]) in sockets)
    # one kit per organisation, certificates for mutual TLS, each site's data in its own kit
    for name in [SERVER, *SITES]:
        assert (deployed / "kits" / name / "startup" / "rootCA.pem").is_file()
    for site in SITES:
        local = json.loads((deployed / "kits" / site / "local" / "fedbio_site.json").read_text())
        assert (deployed / "kits" / site / local["data"] / "train.csv").is_file()
    server = json.loads((deployed / "kits" / SERVER / "local" / "resources.json").read_text())
    assert str(deployed) in json.dumps(server["components"])   # the job store is in W, not /tmp


def test_status_lists_connected_sites(deployed, capsys):
    assert main(["deploy", "status", "--workspace", str(deployed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["connected"] == SITES and all(info["processes"].values())


def test_a_deployed_job_gives_the_simulators_and_the_loops_numbers(deployed, tmp_path, capsys):
    """Plain FedAvg but for selective sharing (half of each update), whose records the sites
    keep: on a deployment in their kits, from where metrics.json is assembled as in the simulator."""
    from fedbio.privacy.config import PrivacyConfig

    cfg, fed, share = _cfg(deployed), FedConfig(rounds=2), PrivacyConfig(share_fraction=0.5)
    seen, done = set(), threading.Event()

    def sample():   # the sockets of every process of the deployment, job processes included
        while not done.wait(0.3):
            seen.update(listening(participant_processes(deployed)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        deployed_run = run_federated(cfg, fed, tmp_path / "deployed", deployment=deployed, privacy=share)
    finally:
        done.set()
        sampler.join()
    assert seen and all(addr == "127.0.0.1" for addr, _ in seen), seen
    out = capsys.readouterr().out
    assert "round 1/2" in out and "round 2/2" in out   # a line per round while it runs
    simulated = run_federated(cfg, fed, tmp_path / "simulated", progress=False, privacy=share)
    looped = run_federated(cfg, fed, tmp_path / "looped", progress=False, engine="loop", privacy=share)
    assert deployed_run["privacy"] == simulated["privacy"]   # what each site sent, read where it kept it
    cosines = deployed_run["privacy"]["update_filter"]["cosine_to_true_update"]
    assert sorted(cosines) == SITES and all(len(c) == 2 for c in cosines.values())
    for other in (simulated, looped):
        assert deployed_run["test"]["accuracy"] == pytest.approx(other["test"]["accuracy"], abs=1e-9)
        assert deployed_run["test"]["macro_f1"] == pytest.approx(other["test"]["macro_f1"], abs=1e-9)
    for name in ("simulated", "looped"):
        a, b = _weights(tmp_path / "deployed"), _weights(tmp_path / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    # the job carried no path of this machine; the sites kept their records in their kits
    run = tmp_path / "deployed"
    job = (run / "federation" / "job").rglob("*.json")
    text = "".join(p.read_text() for p in job)
    assert str(deployed) not in text and str(tmp_path) not in text
    info = deployed_run["deployment"]
    assert info["status"].startswith("FINISHED") and info["sites_connected"] == SITES
    for site, folder in info["site_records"].items():
        assert Path(folder).is_relative_to(deployed / "kits" / site)
        assert (Path(folder) / "federation" / "audit" / f"{site}.jsonl").is_file()
    assert (run / "federation" / "server" / "history.json").is_file()
    # fedbio report reads it unchanged
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "composition · fedavg" in (tmp_path / "report" / "results.md").read_text()


def _run_while(deployed, tmp_path, action, name, victim):
    """A 3-round job; ``action`` runs once round 1 has been aggregated, while ``victim`` waits 3 s
    before its second round's training (so the action lands in round 2)."""
    fed = FedConfig(rounds=3, min_sites=2, slow_sites=(victim,), slow_seconds=3)   # no task_timeout:
    # the dead site is noticed by its missed heartbeats (heartbeat_timeout 12 s here)
    watcher = on_round(deployed, 1, action)
    metrics = run_federated(_cfg(deployed), fed, tmp_path / name, deployment=deployed)
    watcher.join(timeout=60)
    return metrics


def test_a_site_stopped_mid_job_is_marked_and_takes_part_again_once_started(deployed, tmp_path):
    metrics = _run_while(deployed, tmp_path, lambda: stop_site(deployed, "site-3"), "stopped", "site-3")
    missed = metrics["federation"]["failed_sites"]["site-3"]
    assert set(missed) == {"2", "3"}, missed            # the rounds after it stopped, by number
    assert "site-3" not in metrics["federation"]["failed_sites"].get("site-1", {})
    assert not participant_processes(deployed, "site-3")
    start_site(deployed, "site-3")
    again = run_federated(_cfg(deployed), FedConfig(rounds=1), tmp_path / "again", deployment=deployed,
                          progress=False)
    assert again["deployment"]["sites_connected"] == SITES
    assert not again["federation"]["failed_sites"]


def test_a_site_killed_with_sigkill_is_marked_and_stays_down(deployed, tmp_path):
    def kill():
        for proc in participant_processes(deployed, "site-2"):
            proc.send_signal(signal.SIGKILL)

    metrics = _run_while(deployed, tmp_path, kill, "killed", "site-2")
    assert set(metrics["federation"]["failed_sites"]["site-2"]) == {"2", "3"}
    time.sleep(2)
    assert not participant_processes(deployed, "site-2")   # no restart loop brought it back
    assert status(deployed)["processes"]["site-2"] == []
    start_site(deployed, "site-2")
    with admin_session(deployed) as session:
        assert connected_sites(session) == SITES


def test_a_job_needing_more_sites_than_are_connected_is_refused(deployed, tmp_path, capsys):
    """Refused before submitting once the server has dropped the site; before that (its
    heartbeat not yet missed) the job starts without it, and the server stops the run: never a
    run that silently trains on fewer sites than it asked for."""
    stop_site(deployed, "site-1")
    try:
        code = main(["run", "--mode", "fedavg", "--model", "composition", "--epochs", "2", "--rounds", "1",
                     "--deployment", str(deployed), "--out", str(tmp_path / "refused")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "only 2" in err, err
        assert not (tmp_path / "refused").exists()
    finally:
        start_site(deployed, "site-1")


@pytest.fixture(scope="module")
def antibody_split(tmp_path_factory):
    from fedbio.data.antibody import build_antibody_split, save_antibody_split

    return save_antibody_split(build_antibody_split("multitask", "jain", 0),
                               tmp_path_factory.mktemp("antibody") / "split")


def test_refusals_are_one_line_and_write_nothing(deployed, tmp_path, capsys, antibody_split):
    busy = json.loads((deployed / "deployment.json").read_text())["port"]
    empty = tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "note.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    import shutil

    split_copy = tmp_path / "split"
    shutil.copytree(deployed / "split", split_copy)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "deployment.json").write_text('{"sites": "site-1", "port": 1}')
    cases = [
        (["deploy", "up", "--sites", "3", "--workspace", str(tmp_path / "with space")], "' '"),
        (["deploy", "up", "--sites", "3", "--workspace", str(split_copy / "W"), "--split", str(split_copy)],
         "lies inside"),
        (["deploy", "up", "--sites", "3", "--workspace", str(tmp_path / "afile" / "W")], "is a file"),
        (["deploy", "start-site", "site-1", "--workspace", str(deployed), "--timeout", "nan"], "--timeout nan"),
        (["deploy", "status", "--workspace", str(tmp_path / "damaged")], "not a deployment record"),
        (["run", "--mode", "fedavg", "--model", "composition", "--deployment", str(tmp_path / "empty2"),
          "--out", str(tmp_path / "r")], "no fedbio deployment here"),
        (["run", "--mode", "fedavg", "--model", "composition", "--deployment", str(deployed),
          "--out", str(deployed / "kits" / "site-1" / "r")], "lies inside"),
        (["deploy", "up", "--sites", "3", "--workspace", "/proc/fedbio-no"], "cannot make it"),
        (["deploy", "up", "--sites", "2", "--workspace", str(empty), "--split", str(antibody_split)],
         "has 5 sites, not --sites 2"),   # read as the multi-task split it is
        (["deploy", "up", "--sites", "0", "--workspace", str(empty)], "--sites 0"),
        (["deploy", "up", "--sites", "3", "--workspace", str(empty), "--port", "80"], "--port 80"),
        (["deploy", "up", "--sites", "3", "--workspace", str(empty), "--port", str(busy)], "in use"),
        (["deploy", "up", "--sites", "3", "--workspace", str(tmp_path / "full")], "not empty"),
        (["deploy", "up", "--sites", "3", "--workspace", str(deployed)], "holds a deployment"),
        (["deploy", "up", "--sites", "2", "--workspace", str(empty), "--split", str(deployed / "split")],
         "has 3 sites"),
        (["deploy", "up", "--sites", "3", "--workspace", str(empty), "--timeout", "nan"], "--timeout"),
        (["deploy", "status", "--workspace", str(tmp_path)], "no fedbio deployment here"),
        (["deploy", "stop-site", "site-9", "--workspace", str(deployed)], "not a site"),
        (["deploy", "start-site", "site-1", "--workspace", str(deployed)], "running already"),
        (["deploy", "logs", "--workspace", str(deployed), "--site", "nope"], "not a participant"),
        (["run", "--mode", "local", "--deployment", str(deployed), "--out", str(tmp_path / "r")], "--deployment applies only"),
        (["run", "--mode", "fedavg", "--model", "composition", "--deployment", str(tmp_path),
          "--split", str(deployed / "split"), "--out", str(tmp_path / "r")], "no fedbio deployment"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("fedbio: error: ") and "\n" not in err and words in err, (argv, err)
    assert not empty.exists() and not (tmp_path / "r").exists() and not (tmp_path / "with space").exists()
    assert not (deployed / "kits" / "site-1" / "r").exists()
    assert sorted(p.name for p in split_copy.iterdir()) == sorted(p.name for p in (deployed / "split").iterdir())
    assert (tmp_path / "full" / "note.txt").read_text() == "mine"


def test_logs_show_each_participant(deployed, capsys):
    assert main(["deploy", "logs", "--workspace", str(deployed), "--lines", "3"]) == 0
    out = capsys.readouterr().out
    assert all(f"== {name}: " in out for name in [SERVER, *SITES])


def test_a_reader_that_stops_early_is_no_error(deployed):
    import subprocess
    import sys

    fedbio = Path(sys.executable).parent / "fedbio"
    for command in (f"deploy status --workspace {deployed}", f"deploy logs --workspace {deployed}"):
        done = subprocess.run(["bash", "-c", f"{fedbio} {command} | head -1 > /dev/null; "
                                             "echo ${PIPESTATUS[0]}"], capture_output=True, text=True)
        assert done.stdout.strip() == "0" and "error" not in done.stderr, (command, done.stdout, done.stderr)


def test_a_second_ctrl_c_does_not_stop_the_abort():
    import os

    from fedbio.deployment.jobs import _signals_held

    with _signals_held():
        os.kill(os.getpid(), signal.SIGINT)   # noted, not raised
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_killed_server_ends_watching_in_one_line_and_down_cleans_up(tmp_path, small_split, capsys):
    workspace = tmp_path / "W"
    deploy_up(workspace, 3, split=str(small_split), port=free_ports(), say=lambda *a: None)
    try:
        for proc in participant_processes(workspace, SERVER):
            proc.send_signal(signal.SIGKILL)
        time.sleep(1)
        info = status(workspace)
        assert info["processes"][SERVER] == [] and info["state"] == "server not running"
        code = main(["run", "--mode", "fedavg", "--model", "composition", "--epochs", "2", "--rounds", "1",
                     "--deployment", str(workspace), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "cannot reach the deployment's server" in err and "\n" not in err, err
        assert not list(tmp_path.glob("run*"))   # refused before anything was written
        assert main(["deploy", "start-site", "site-1", "--workspace", str(workspace)]) == 2
        assert "server" in capsys.readouterr().err
    finally:
        (workspace / "deployment.json").write_text('{"sites": ')   # damaged: down still ends it all
        started = time.monotonic()
        assert main(["deploy", "down", "--workspace", str(workspace)]) == 0
        assert time.monotonic() - started < 60
    assert participant_processes(workspace) == []
    assert (workspace / "kits" / "site-1" / "log.txt").is_file()   # logs kept
    (workspace / "deployment.json").write_text(json.dumps({"sites": SITES, "port": 1, "state": "down"}))
    assert main(["deploy", "stop-site", "site-1", "--workspace", str(workspace)]) == 2
    assert "is down" in capsys.readouterr().err
