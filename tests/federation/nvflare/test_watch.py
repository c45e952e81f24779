"""The simulator watchdog, with real child processes and short limits: the job's end is
``done.json`` (not the first record a round writes), the limit is on silence (not on the run's
length), a stalled child is stopped, retried and reported, and every process of the run is
ended, whatever session it put itself in."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from fedbio.errors import FedbioError
from fedbio.federation.config import FedConfig
from fedbio.federation.nvflare.watch import run_watched
from fedbio.processes import RUN_ENV, run_processes


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_gives_its_exit_code(tmp_path):
    assert run_watched(_python("raise SystemExit(3)"), tmp_path / "ws", tmp_path / "done", timeout=30) == 3
    assert run_watched(_python("pass"), tmp_path / "ws", tmp_path / "done", timeout=30) == 0


def test_rounds_longer_than_the_grace_are_not_the_end_of_the_job(tmp_path):
    """The defect of the last release: the server's history (written after every round) was
    taken for the job's end, and a run whose next round outlasted the grace was killed."""
    history, done = tmp_path / "history.json", tmp_path / "done.json"
    code = (f"import pathlib, time\nfor r in range(3):\n    time.sleep(1.5)\n"
            f"    pathlib.Path({str(history)!r}).write_text(str(r))\n"
            f"pathlib.Path({str(done)!r}).write_text('{{}}')\nraise SystemExit(0)")
    seen = []
    assert run_watched(_python(code), tmp_path / "ws", done, progress=[history], timeout=30, grace=0.5,
                       on_progress=seen.append) == 0
    assert done.is_file() and history.read_text() == "2"     # every round ran to the end
    assert len(seen) == 3                                     # and each was reported as progress


def test_the_limit_is_on_silence_not_on_length(tmp_path):
    """A child that runs for three times the limit but shows progress all along is left alone."""
    beat, done = tmp_path / "progress", tmp_path / "done.json"
    code = (f"import pathlib, time\np = pathlib.Path({str(beat)!r}); p.mkdir()\n"
            f"for i in range(12):\n    time.sleep(0.5)\n    (p / 'site-1.json').write_text(str(i))\n"
            f"pathlib.Path({str(done)!r}).write_text('{{}}')")
    start = time.monotonic()
    assert run_watched(_python(code), tmp_path / "ws", done, progress=[beat], timeout=2, retries=0) == 0
    assert time.monotonic() - start > 5


def test_a_stalled_child_is_stopped_retried_and_reported(tmp_path):
    workspace = tmp_path / "nvflare" / "job"
    # Each attempt writes a log into the workspace, then hangs.
    code = (f"import pathlib, time; p = pathlib.Path({str(workspace)!r}) / 'server' / 'log.txt'; "
            "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('waiting for clients\\n'); "
            "time.sleep(60)")
    said, stalls = [], []
    start = time.monotonic()
    with pytest.raises(FedbioError) as err:
        run_watched(_python(code), workspace, tmp_path / "done", timeout=2, retries=1, say=said.append,
                    on_stall=stalls.append)
    assert time.monotonic() - start < 30
    assert "no progress for 2 s, in the last of 2 attempt(s)" in str(err.value)
    assert "waiting for clients" in str(err.value)           # the log tail is quoted
    assert len(said) == 1 and "starting it again" in said[0]
    assert stalls == [workspace.parent / "job-stalled-1"]
    assert (workspace.parent / "job-stalled-1" / "server" / "log.txt").is_file()  # kept for reading


def test_a_child_stuck_after_the_end_of_the_job_is_ended_as_a_success(tmp_path):
    done = tmp_path / "done.json"
    code = f"import pathlib, time; pathlib.Path({str(done)!r}).write_text('{{}}'); time.sleep(60)"
    start = time.monotonic()
    assert run_watched(_python(code), tmp_path / "ws", done, timeout=1, grace=0.5) == 0
    assert time.monotonic() - start < 20


# A child that starts a grandchild in a session of its own (as NVFlare starts its site workers)
# which ignores SIGTERM, then waits: a killpg of the child's group would miss the grandchild.
_FAMILY = """
import os, signal, subprocess, sys, time
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
open(sys.argv[1], "w").write("started")
time.sleep(120)
"""


def _family(tmp_path) -> tuple[list[str], object]:
    flag = tmp_path / "started"
    return [sys.executable, "-c", _FAMILY, str(flag)], flag


def test_every_process_of_the_run_is_ended_whatever_its_session(tmp_path):
    cmd, flag = _family(tmp_path)
    done = tmp_path / "done.json"
    mark = str(tmp_path / "run")

    def finish(path):  # once the family is up, the job "ends"
        done.write_text("{}")

    # the flag file is the progress that lets the test end the job once both processes run
    assert run_watched(cmd, tmp_path / "ws", done, progress=[flag], timeout=30, grace=0.2,
                       on_progress=finish, mark=mark) == 0
    time.sleep(0.3)
    assert not [p for p in run_processes(mark) if p.status() != psutil.STATUS_ZOMBIE]


def test_an_interrupted_watch_ends_every_process(tmp_path):
    cmd, flag = _family(tmp_path)
    mark = str(tmp_path / "run")

    def interrupt(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_watched(cmd, tmp_path / "ws", tmp_path / "done", progress=[flag], timeout=30,
                    on_progress=interrupt, mark=mark)
    time.sleep(0.3)
    assert not [p for p in run_processes(mark) if p.status() != psutil.STATUS_ZOMBIE]


def test_the_children_carry_the_run_mark(tmp_path):
    out = tmp_path / "env.txt"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ.get({RUN_ENV!r}, ''))"
    run_watched(_python(code), tmp_path / "ws", tmp_path / "done", mark="RUN-X", env={"A": "1"})
    assert out.read_text() == "RUN-X"


def test_sim_settings_are_validated():
    with pytest.raises(FedbioError, match="sim_timeout"):
        FedConfig(sim_timeout=-1).validate(3)
    with pytest.raises(FedbioError, match="sim_retries"):
        FedConfig(sim_retries=-1).validate(3)
    with pytest.raises(FedbioError, match="sim_grace"):
        FedConfig(sim_grace=float("nan")).validate(3)


def test_the_child_starts_without_python_code_between_fork_and_exec(tmp_path, monkeypatch):
    """``preexec_fn`` runs Python in the forked child and can deadlock a process that has threads
    (torch's, tqdm's); NVFlare's own launcher passes ``preexec_fn=os.setsid``. The watchdog asks
    for a new session the safe way (``start_new_session``), and closes the child's stdin."""
    import fedbio.federation.nvflare.watch as watch

    seen = {}
    real = subprocess.Popen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(watch.subprocess, "Popen", spy)
    assert run_watched(_python("pass"), tmp_path / "ws", tmp_path / "done", timeout=30) == 0
    assert seen.get("start_new_session") is True and "preexec_fn" not in seen
    assert seen.get("stdin") == subprocess.DEVNULL
    assert os.environ.get(RUN_ENV) is None  # the mark is the children's, not this process's


def test_lost_sites_are_those_with_no_log_of_their_own(tmp_path):
    from fedbio.federation.nvflare.watch import LostSites

    (tmp_path / "server").mkdir()
    (tmp_path / "site-3").mkdir()
    (tmp_path / "site-3" / "log.txt").write_text("started\n")
    log = tmp_path / "server" / "log.txt"
    watch = LostSites(tmp_path)
    assert watch.lost() is None  # no log yet
    log.write_text("x - SimulatorClientRunner - ERROR - Communication error with client site-3: \n")
    assert watch.lost() is None  # site-3 ran, then died: NVFlare drops it, not a lost start
    with log.open("a") as f:
        f.write("x - SimulatorClientRunner - ERROR - Communication error with cli")
    assert watch.lost() is None  # half a line: read again when it is whole
    with log.open("a") as f:
        f.write("ent site-1: [Errno 104] Connection reset by peer\n")
    assert watch.lost() == "site-1"


def test_a_writers_hidden_temporary_file_is_not_progress(tmp_path):
    """``write_progress`` writes ``.site-3.json.part`` then renames it: the temporary file used
    to show up as a site named ".site-3.json" in the progress lines."""
    from fedbio.federation.nvflare.watch import _watched_files

    (tmp_path / ".site-3.json.part").write_text("{}")
    (tmp_path / "site-3.json").write_text("{}")
    assert [p.name for p in _watched_files([tmp_path])] == ["site-3.json"]
