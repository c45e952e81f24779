"""``make notebooks`` (fedbio.reporting.notebooks) and the nbval settings ``make test`` checks the
committed notebooks with: a changed committed number fails, stderr, timings and unchecked cells
do not."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from conftest import ROOT

from fedbio.reporting.notebooks import (
    LOCK,
    MARK,
    WIDGET,
    checked_cells,
    clean,
    execute,
    main,
    run_cache,
)

FIXTURE = ROOT / "tests" / "fixtures" / "notebooks" / "results.ipynb"


def _nbval_options() -> list[str]:
    """The Makefile's ``NBVAL`` options, the sanitiser's path made absolute."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if re.match(r"NBVAL\s*:?=", line))
    options = line.split("=", 1)[1].split()
    return [str(ROOT / o) if o.endswith(".cfg") else o for o in options]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The fixture notebook as ``make notebooks`` commits it."""
    runs = tmp_path_factory.mktemp("nbruns") / "runs"
    return execute(FIXTURE, run_cache(runs))


def _cell(nb, start: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start))


def test_execute_numbers_the_cells_and_keeps_no_stderr(executed):
    counts = [c.execution_count for c in executed.cells if c.cell_type == "code" and c.source.strip()]
    assert counts == list(range(1, len(counts) + 1))
    assert [c.execution_count for c in executed.cells if c.cell_type == "code" and not c.source.strip()] == [None]
    streams = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert streams and all(o.name == "stdout" for o in streams)
    first = _cell(executed, "# NBVAL_CHECK_OUTPUT\nimport os").outputs
    assert first[0].text == "FedAvg test accuracy 48.7 %, local 41.2 %\nthreads pinned to 2\n"
    assert "execution" not in _cell(executed, "print(").metadata
    assert checked_cells(executed) == [1, 2, 5]


def test_clean_keeps_order_resolves_carriage_returns_and_relative_paths(tmp_path):
    folder = tmp_path / "repo" / "notebooks"
    out = nbformat.v4.new_output
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [out("stream", name="stdout", text="epoch 1\repoch 2\n"),
                           out("stream", name="stderr", text="10%|#  |\r"),
                           out("display_data", data={WIDGET: {"model_id": "ab12"}}),
                           out("stream", name="stdout", text=f"done: {folder}/a.csv\r\nbar\r\n"),
                           out("display_data", data={"text/plain": "mid"}),
                           out("stream", name="stdout", text="last\r"),
                           out("execute_result", data={"text/plain": f"{folder.parent}/runs/x"}, execution_count=1),
                           out("error", ename="OSError", evalue=f"{folder}/nope",
                               traceback=[f"File {folder.parent}/fedbio/x.py"])]
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-12-04T00:00:00Z"}
    clean(nb, folder)
    kept = nb.cells[0].outputs
    assert [o.output_type for o in kept] == ["stream", "display_data", "stream", "execute_result", "error"]
    assert kept[0].text == "epoch 2\ndone: a.csv\nbar\n" and kept[2].text == "last"
    assert kept[3].data["text/plain"] == "../runs/x"
    assert kept[4].evalue == "nope" and kept[4].traceback == ["File ../fedbio/x.py"]
    assert nb.cells[0].metadata == {}


def _notebook_in(folder, *sources):
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in sources])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, folder / "n.ipynb")
    return folder / "n.ipynb"


def _one_line(capsys, rc, expected):
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("fedbio: error: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_a_run_cache_made_elsewhere_is_never_emptied(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("a user's file")
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    _one_line(capsys, main([str(notebook), "--runs", str(theirs)]), "was not made by `make notebooks`")
    assert (theirs / "keep.txt").read_text() == "a user's file"
    ours = run_cache(tmp_path / "ours")
    (ours / "old-run").mkdir()
    (ours / LOCK).write_text("999999999\n")    # a run that died: no such process
    assert sorted(p.name for p in run_cache(ours).iterdir()) == sorted([MARK, LOCK])


@pytest.mark.parametrize("where", ["the notebook's folder", "its parent", "the working folder"])
def test_a_run_cache_holding_a_notebook_or_the_working_folder_is_refused(tmp_path, capsys, monkeypatch, where):
    notebook = _notebook_in(tmp_path / "work" / "nb", "print(1)")
    runs = {"the notebook's folder": notebook.parent, "its parent": notebook.parent.parent,
            "the working folder": tmp_path / "work"}[where]
    (runs / MARK).write_text("planted\n")     # even a folder that looks like ours
    monkeypatch.chdir(tmp_path / "work")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    _one_line(capsys, main([str(notebook), "--runs", str(runs)]), "which emptying it would delete")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("planted", ["", "mine\n"])
def test_a_marker_planted_in_a_user_folder_does_not_get_it_emptied(tmp_path, capsys, planted):
    user = tmp_path / "userdata"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    (user / MARK).write_text(planted)
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    _one_line(capsys, main([str(notebook), "--runs", str(user)]), "was not made by `make notebooks`")
    assert (user / "thesis.txt").read_text() == "precious"


def test_a_link_as_the_run_cache_is_refused(tmp_path, capsys):
    target = run_cache(tmp_path / "cache")
    (tmp_path / "link").symlink_to(target)
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    _one_line(capsys, main([str(notebook), "--runs", str(tmp_path / "link")]), "is a link")
    assert (target / MARK).is_file()


def test_a_notebook_that_cannot_run_or_be_written_back_is_refused_first(tmp_path, capsys, monkeypatch):
    r_notebook = _notebook_in(tmp_path / "r", "print(1)")
    nb = nbformat.read(r_notebook, as_version=4)
    nb.metadata["kernelspec"] = {"display_name": "R", "language": "R", "name": "ir"}
    nbformat.write(nb, r_notebook)
    _one_line(capsys, main([str(r_notebook), "--runs", str(tmp_path / "runs")]), "its kernel is 'ir'")
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    monkeypatch.setattr("fedbio.reporting.notebooks.os.access", lambda path, mode: False)
    _one_line(capsys, main([str(notebook), "--runs", str(tmp_path / "runs")]), "cannot be written back")
    assert not (tmp_path / "runs").exists()


def test_whatever_stops_an_execution_keeps_the_notebook_and_says_where(tmp_path, capsys, monkeypatch):
    """A kernel shut down by a signal surfaces as whatever nbclient raises next."""
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    before = notebook.read_bytes()

    def stopped(*args, **kwargs):
        raise AssertionError("the kernel went away")

    monkeypatch.setattr("fedbio.reporting.notebooks.execute", stopped)
    assert main([str(notebook), "--runs", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "stopped (AssertionError: the kernel went away)" in err
    assert f"kept in {tmp_path / 'runs'}" in err
    assert notebook.read_bytes() == before and (tmp_path / "runs" / MARK).is_file()
    (tmp_path / "runs" / LOCK).write_text("0\n")        # not a process: stale
    monkeypatch.undo()
    assert main([str(notebook), "--runs", str(tmp_path / "runs")]) == 0


def test_a_cache_in_use_by_a_live_run_is_refused(tmp_path, capsys):
    runs = run_cache(tmp_path / "runs")
    (runs / LOCK).write_text(f"{os.getppid()}\n")   # alive: the process that started this one
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    _one_line(capsys, main([str(notebook), "--runs", str(runs)]), "in use by `make notebooks`")
    assert (runs / MARK).is_file()


@pytest.mark.parametrize(("args", "expected"), [
    (["--timeout", "0"], "--timeout must be a whole number of seconds >= 1"),
    (["--timeout", "abc"], "invalid int value"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, expected):
    notebook = _notebook_in(tmp_path / "nb", "print(1)")
    with pytest.raises(SystemExit) as stop:
        rc = main([str(notebook), "--runs", str(tmp_path / "runs"), *args])
        raise SystemExit(rc)
    _one_line(capsys, stop.value.code, expected)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", ["not a notebook", "{\"cells\": 3}", ""])
def test_a_broken_notebook_is_refused_before_anything_runs(tmp_path, capsys, content):
    good = _notebook_in(tmp_path / "nb", "print(1)")
    before = good.read_bytes()
    bad = tmp_path / "nb" / "bad.ipynb"
    bad.write_text(content)
    _one_line(capsys, main([str(good), str(bad), "--runs", str(tmp_path / "runs")]), "not a readable notebook")
    assert good.read_bytes() == before and not (tmp_path / "runs").exists()


def test_a_cell_past_its_timeout_fails_keeps_the_notebook_and_says_where(tmp_path, capsys):
    notebook = _notebook_in(tmp_path / "nb", "print(1)", "import time\ntime.sleep(30)")
    before = notebook.read_bytes()
    assert main([str(notebook), "--runs", str(tmp_path / "runs"), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"kept in {tmp_path / 'runs'}" in err
    assert notebook.read_bytes() == before and (tmp_path / "runs" / MARK).is_file()


def test_a_clean_pass_removes_what_it_made_and_only_that(tmp_path, monkeypatch, capsys):
    notebook = _notebook_in(tmp_path / "nb", "print('hello')")
    monkeypatch.chdir(tmp_path)
    assert main([str(notebook), f"./{notebook.relative_to(tmp_path)}", "--runs", "made/for/it"]) == 0
    assert capsys.readouterr().out.count("executing") == 1      # one notebook, however spelt
    assert not (tmp_path / "made").exists()
    assert nbformat.read(notebook, as_version=4).cells[0].outputs[0].text == "hello\n"


def _variant(nb, folder, name, change=None):
    nb = copy.deepcopy(nb)
    if change:
        change(nb)
    nbformat.write(nb, folder / f"{name}.ipynb")


def test_nbval_with_the_project_settings_fails_on_a_changed_committed_number(executed, tmp_path):
    """Each variant of the committed fixture under ``make test``'s nbval options and hook: only
    a changed number in a checked cell fails."""
    def number(nb):
        out = _cell(nb, "# NBVAL_CHECK_OUTPUT\nimport os").outputs[0]
        out.text = out.text.replace("48.7", "48.8")

    def unchecked(nb):
        _cell(nb, "print(").outputs[0].text = "unchecked: 1.0\n"

    def stderr_and_timing(nb):
        cell = _cell(nb, "# NBVAL_CHECK_OUTPUT\nstart")
        cell.outputs[0].text = cell.outputs[0].text.replace(cell.outputs[0].text.split("in ")[1], "17.5 s\n")
        cell.outputs.insert(0, nbformat.v4.new_output("stream", name="stderr", text="a warning\n"))

    def table(nb):
        out = _cell(nb, "# NBVAL_CHECK_OUTPUT\nstart").outputs[-1]
        out.data["text/plain"] = out.data["text/plain"].replace("0.4871", "0.4872")

    for name, change in (("same", None), ("number", number), ("unchecked", unchecked),
                         ("stderr_timing", stderr_and_timing), ("table", table)):
        _variant(executed, tmp_path, name, change)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "FEDBIO_THREADS": "2"}
    env.pop("MPLBACKEND", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "-rf", *_nbval_options(), "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    failed = sorted(set(re.findall(r"^FAILED (\w+)\.ipynb", done.stdout, re.M)))
    assert failed == ["number", "table"], done.stdout[-3000:]
    assert "Cell outputs differ" in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_cell_ends_in_a_message_not_a_traceback(tmp_path, sig):
    notebook = _notebook_in(tmp_path / "nb", "import time\ntime.sleep(120)")
    before = notebook.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.Popen([sys.executable, "-m", "fedbio.reporting.notebooks", str(notebook), "--runs",
                             str(tmp_path / "runs")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("kernel-*.log")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)   # the kernel is up and in the cell
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert f"kept in {tmp_path / 'runs'}" in err and notebook.read_bytes() == before
    assert (tmp_path / "runs" / MARK).is_file()


def test_the_sanitiser_masks_the_run_cache_however_it_is_spelt():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "nbval-sanitize.cfg")
    rules = [(cfg[s]["regex"], cfg[s]["replace"]) for s in cfg.sections()]

    def sanitise(text):
        for regex, replace in rules:
            text = re.sub(regex, replace, text)
        return text

    committed = "records (../runs/notebooks/cache/splits/public.csv); took 12.5 s on 2 cores"
    clone = "records (/home/ci/fedbio/runs/cache/splits/public.csv); took 3 s on 16 cores"
    assert sanitise(committed) == sanitise(clone) == "records (RUNS/cache/splits/public.csv); took DURATION on N cores"
    assert sanitise("accuracy 48.7 %") != sanitise("accuracy 48.8 %")

