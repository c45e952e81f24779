"""The simulator watchdog: a stalled child is stopped, retried and reported; a child stuck after
writing its result is ended without failing the run. Real processes, short limits."""

from __future__ import annotations

import sys
import time

import pytest

from fedbio.errors import FedbioError
from fedbio.federation.config import FedConfig
from fedbio.federation.watch import run_watched


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_gives_its_exit_code(tmp_path):
    assert run_watched(_python("raise SystemExit(3)"), tmp_path / "ws", tmp_path / "done", timeout=30) == 3
    assert run_watched(_python("pass"), tmp_path / "ws", tmp_path / "done", timeout=30) == 0


def test_a_stalled_child_is_stopped_retried_and_reported(tmp_path):
    workspace = tmp_path / "nvflare" / "job"
    # Each attempt writes a log into the workspace, then hangs.
    code = (f"import pathlib, time; p = pathlib.Path({str(workspace)!r}) / 'server' / 'log.txt'; "
            "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('waiting for clients\\n'); "
            "time.sleep(60)")
    said = []
    start = time.monotonic()
    with pytest.raises(FedbioError) as err:
        run_watched(_python(code), workspace, tmp_path / "done", timeout=2, retries=1, say=said.append)
    assert time.monotonic() - start < 30
    assert "no result within 2 s in 2 attempt(s)" in str(err.value)
    assert "waiting for clients" in str(err.value)           # the log tail is quoted
    assert len(said) == 1 and "starting it again" in said[0]
    assert (workspace.parent / "job-stalled-1" / "server" / "log.txt").is_file()  # kept for reading


def test_a_child_stuck_after_its_result_is_ended_as_a_success(tmp_path):
    done = tmp_path / "history.json"
    code = f"import pathlib, time; pathlib.Path({str(done)!r}).write_text('{{}}'); time.sleep(60)"
    said = []
    start = time.monotonic()
    assert run_watched(_python(code), tmp_path / "ws", done, timeout=1, grace=1, say=said.append) == 0
    assert time.monotonic() - start < 30
    assert said and "did not exit" in said[0]


def test_sim_settings_are_validated():
    with pytest.raises(FedbioError, match="sim_timeout"):
        FedConfig(sim_timeout=-1).validate(3)
    with pytest.raises(FedbioError, match="sim_retries"):
        FedConfig(sim_retries=-1).validate(3)


def test_the_child_starts_without_python_code_between_fork_and_exec(tmp_path, monkeypatch):
    """``preexec_fn`` runs Python in the forked child and can deadlock a process that has threads
    (torch's, tqdm's); NVFlare's own launcher passes ``preexec_fn=os.setsid``. The watchdog asks
    for a new session the safe way (``start_new_session``), and closes the child's stdin."""
    import subprocess

    import fedbio.federation.watch as watch

    seen = {}
    real = subprocess.Popen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(watch.subprocess, "Popen", spy)
    assert run_watched(_python("pass"), tmp_path / "ws", tmp_path / "done", timeout=30) == 0
    assert seen.get("start_new_session") is True and "preexec_fn" not in seen
    assert seen.get("stdin") == subprocess.DEVNULL
