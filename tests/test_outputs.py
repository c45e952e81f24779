"""Where commands write: ``OUT.running`` while working, ``OUT`` on success, ``OUT.failed`` on a
failure, one writer per ``OUT``, nothing deleted that the command did not create, never an input
or the current folder, and nothing written outside the output (not /tmp, not the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, SCL

from fedbio.cli import main
from fedbio.errors import FedbioError
from fedbio.outputs import output_dir, output_file
from fedbio.reporting.manifest import code_version


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size: what a command must leave as it was."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedbio: error: "), err
    return err[0]


# -- the rule, on its own --------------------------------------------------------------------------
def test_success_renames_running_to_out(tmp_path):
    out = tmp_path / "out"
    with output_dir(out, kind="run") as work:
        assert work == tmp_path / "out.running" and work.is_dir()
        assert (tmp_path / "out.lock").is_file()
        (work / "config.json").write_text("{}")
    assert (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]     # no lock, no tmp, no running
    assert sorted(p.name for p in out.iterdir()) == [".fedbio.json", "config.json"]


def test_a_failure_keeps_what_was_written_in_failed(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError) as err:
        with output_dir(out) as work:
            (work / "log.txt").write_text("the logs")
            raise RuntimeError("boom")
    assert err.value.kept == tmp_path / "out.failed"
    assert (tmp_path / "out.failed" / "log.txt").read_text() == "the logs"
    assert "boom" in (tmp_path / "out.failed" / "error.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.failed"]
    with pytest.raises(RuntimeError):  # a second failure does not replace the first
        with output_dir(out) as work:
            (work / "log.txt").write_text("again")
            raise RuntimeError("boom")
    assert (tmp_path / "out.failed-2" / "log.txt").read_text() == "again"


def test_overwrite_replaces_only_once_the_new_output_is_complete(tmp_path):
    out = tmp_path / "out"
    with output_dir(out) as work:
        (work / "config.json").write_text("old")
    with pytest.raises(FedbioError, match="--overwrite"):
        with output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with output_dir(out, overwrite=True) as work:
            (work / "config.json").write_text("new")
            raise RuntimeError("boom")
    assert (out / "config.json").read_text() == "old"              # a failed --overwrite run
    with output_dir(out, overwrite=True) as work:
        (work / "config.json").write_text("new")
    assert (out / "config.json").read_text() == "new"


def test_overwrite_replaces_only_what_fedbio_wrote(tmp_path):
    """A folder that merely holds a config.json is not a run: ``--overwrite`` deleted it."""
    out = tmp_path / "home"
    out.mkdir()
    (out / "config.json").write_text('{"name": "my web app"}')
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(FedbioError, match="not a folder fedbio wrote"):
        with output_dir(out, overwrite=True, kind="run"):
            pass
    assert (out / "thesis.tex").read_text() == "years of work"


def test_overwrite_never_deletes_what_a_user_added_or_another_kind(tmp_path):
    out = tmp_path / "run"
    with output_dir(out, kind="run") as work:
        (work / "config.json").write_text("{}")
    (out / "my notes.txt").write_text("ideas")
    with pytest.raises(FedbioError, match="holds my notes.txt, which fedbio did not write"):
        with output_dir(out, overwrite=True, kind="run"):
            pass
    (out / "my notes.txt").unlink()
    with pytest.raises(FedbioError, match="holds a fedbio run, not a split"):
        with output_dir(out, overwrite=True, kind="split"):
            pass
    with output_dir(out, overwrite=True, kind="run") as work:
        (work / "config.json").write_text('{"new": 1}')
    assert (out / "config.json").read_text() == '{"new": 1}'
    assert (out / ".fedbio.json").is_file()


def test_a_second_writer_fails_at_once(tmp_path):
    out = tmp_path / "out"
    entered, release = threading.Event(), threading.Event()

    def first():
        with output_dir(out):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(10)
    start = time.monotonic()
    try:
        with pytest.raises(FedbioError, match="being written by another fedbio command"):
            with output_dir(out):
                pass
    finally:
        release.set()
        thread.join()
    assert time.monotonic() - start < 2


def test_a_lock_dies_with_its_process(tmp_path):
    """A killed writer leaves its lock file, but not its lock: the next command proceeds, and
    finds the killed run's folder (moved aside, never deleted)."""
    out = tmp_path / "out"
    code = ("import sys, time\nfrom fedbio.outputs import output_dir\n"
            f"with output_dir({str(out)!r}) as w:\n    (w / 'x').write_text('1'); print('in', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in"
    proc.kill()
    proc.wait()
    assert (tmp_path / "out.lock").exists() and (tmp_path / "out.running").is_dir()
    with output_dir(out) as work:
        (work / "config.json").write_text("{}")
    assert (tmp_path / "out.failed" / "x").read_text() == "1"     # the killed run, kept
    assert (out / "config.json").is_file() and not (tmp_path / "out.lock").exists()


@pytest.mark.parametrize("case", ["symlink", "file", "under-a-file", "input", "holds-input",
                                  "inside-input", "cwd", "parent-of-cwd", "package", "data"])
def test_refused_outputs_write_nothing(tmp_path, monkeypatch, case):
    (tmp_path / "real").mkdir()
    (tmp_path / "inp").mkdir()
    (tmp_path / "inp" / "data.csv").write_text("x")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "cwd" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd" / "deep")
    out = {"symlink": tmp_path / "link", "file": tmp_path / "afile",
           "under-a-file": tmp_path / "afile" / "out", "input": tmp_path / "inp",
           "holds-input": tmp_path, "inside-input": tmp_path / "inp" / "out", "cwd": Path("."),
           "parent-of-cwd": tmp_path / "cwd", "package": ROOT / "fedbio",
           "data": ROOT / "data" / "mine"}[case]
    before = listing(tmp_path)
    with pytest.raises(FedbioError):
        with output_dir(out, overwrite=True, inputs=[tmp_path / "inp"]):
            pytest.fail("the block must not run")
    assert listing(tmp_path) == before
    assert not (ROOT / "data" / "mine").exists()


def test_output_file_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "sub" / "preds.csv"
    with pytest.raises(RuntimeError):
        with output_file(out) as work:
            work.write_text("half")
            raise RuntimeError("boom")
    assert not (tmp_path / "sub").exists()
    with output_file(out) as work:
        work.write_text("all")
    assert out.read_text() == "all" and sorted(p.name for p in out.parent.iterdir()) == ["preds.csv"]


def test_a_read_only_folder_is_one_clear_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes into read-only folders; the kernel's are closed to it too
        folder = Path("/sys/kernel")
    try:
        assert main(["split", "--fasta", str(SCL), "--out", str(folder / "out")]) == 2
        assert "cannot write" in one_error_line(capsys)
    finally:
        (tmp_path / "ro").chmod(0o700)


# -- the commands ---------------------------------------------------------------------------------
def test_split_never_deletes_the_current_folder_or_its_input(tmp_path, monkeypatch, capsys):
    """``fedbio split --out . --overwrite`` deleted the current folder, input included."""
    fasta = tmp_path / "mine.fasta"
    fasta.write_bytes(SCL.read_bytes())
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    for out in (".", str(tmp_path), str(fasta)):
        assert main(["split", "--fasta", str(fasta), "--out", out, "--overwrite"]) == 2
        assert "fedbio: error: --out" in one_error_line(capsys)
    assert listing(tmp_path) == before


def test_two_splits_into_one_folder_at_once(tmp_path):
    """Two writers to one ``--out``: the second fails at once instead of silently replacing."""
    out = tmp_path / "split"
    args = [sys.executable, "-m", "fedbio", "split", "--fasta", str(SCL), "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (tmp_path / "split.lock").exists():
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(args, capture_output=True, text=True, timeout=60)
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 2 and "being written by another fedbio command" in second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_nothing_is_written_outside_the_output(tmp_path, small_split):
    """A local and a federated run write nothing in the current folder, $TMPDIR or $HOME (only
    interpreter caches) and nothing in the checkout; NVFlare's job copy stays in the run."""
    home, tmp, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for folder in (home, tmp, cwd):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "FEDBIO_PROFILE": "quick",
           "MPLCONFIGDIR": str(home / ".config" / "matplotlib")}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    checkout = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain",
                               "--ignored"], capture_output=True, text=True).stdout
    git_index = ROOT / ".git" / "index"  # a plain clone (a worktree's .git is a file)
    index = git_index.stat().st_mtime_ns if git_index.is_file() else None
    for mode in ("local", "fedavg"):
        out = tmp_path / "runs" / mode
        rounds = ["--rounds", "2"] if mode == "fedavg" else []
        done = subprocess.run([sys.executable, "-m", "fedbio", "run", "--mode", mode, "--model",
                               "composition", "--epochs", "2", *rounds, "--split",
                               str(small_split), "--out", str(out)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert not (out / "tmp").exists()
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    cached = {p.relative_to(home).parts[:2] for p in home.rglob("*") if p.is_file()}
    assert cached <= {(".config", "matplotlib"), (".cache", "matplotlib")}, cached
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fedavg", "local"]
    assert subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain",
                           "--ignored"], capture_output=True, text=True).stdout == checkout
    if index is not None:
        assert git_index.stat().st_mtime_ns == index


def test_the_code_version_is_read_without_writing_the_checkout(tmp_path):
    """``git describe --dirty`` rewrote the checkout's index (and took its lock) on every run."""
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    time.sleep(1.1)
    os.utime(tmp_path / "f.txt")  # same content, new time: what a refresh would write down
    index = (tmp_path / ".git" / "index").stat().st_mtime_ns
    assert not code_version(tmp_path).endswith("-dirty")
    (tmp_path / "f.txt").write_text("b")
    assert code_version(tmp_path).endswith("-dirty")
    assert (tmp_path / ".git" / "index").stat().st_mtime_ns == index
