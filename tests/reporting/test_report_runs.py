"""fedbio report on real run folders: local, central and federated (NVFlare) composition runs,
attacked the way a user might: broken files, folders that are not runs, mixed splits, an --out
that is one of the runs. Every refusal is one line and leaves the runs as they were."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SCL

from fedbio.cli import main
from fedbio.errors import FedbioError
from fedbio.federation import FedConfig, run_federated
from fedbio.reporting.report import collect, plot_curves, seed_table, write_report
from fedbio.training.run import plan, run


def _central(split: Path, out: Path, seed: int = 0, task: str = "scl") -> Path:
    run(plan(task=task, mode="central", model="composition", split=str(split), seed=seed), out,
        progress=False)
    return out


def _variant(split: Path, out: Path, edit) -> Path:
    """A copy of ``split`` changed by ``edit(folder)``: another split, as a user might make one."""
    shutil.copytree(split, out)
    edit(out)
    return out


def _edit_a_sequence(folder: Path) -> None:
    """One residue of one training record changed: the same classes, other data."""
    path = folder / "site-1" / "train.csv"
    lines = path.read_text().splitlines(keepends=True)
    rid, seq, rest = lines[1].split(",", 2)
    lines[1] = f"{rid},{'A' if seq[0] != 'A' else 'G'}{seq[1:]},{rest}"
    path.write_text("".join(lines))


def _add_class(folder: Path) -> None:
    """Every Peroxisome record relabelled Imaginary: another class list (a class listed in
    classes.json without records is refused)."""
    for path in folder.rglob("*.csv"):
        path.write_text(path.read_text().replace(",Peroxisome\n", ",Imaginary\n"))
    path = folder / "classes.json"
    path.write_text(json.dumps(["Imaginary" if c == "Peroxisome" else c
                                for c in json.loads(path.read_text())]))


def _regression_split(folder: Path) -> Path:
    """Per-site CSVs with a numeric label (hydrophobic share, %) of real sequences."""
    from fedbio.data.records import read_records

    rows = [f"{r.id},{r.sequence},{100 * sum(c in 'AILMFVW' for c in r.sequence) / len(r.sequence):.3f}"
            for r in read_records(SCL)[:240]]
    parts = {"site-1/train.csv": rows[:80], "site-1/valid.csv": rows[80:100],
             "site-2/train.csv": rows[100:180], "site-2/valid.csv": rows[180:200], "test.csv": rows[200:]}
    for name, lines in parts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("id,sequences,labels\n" + "\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def runs(small_split, tmp_path_factory):
    """Real runs on the small split: local, central, FedAvg (2 rounds) with seed 0, local with
    seed 1; and, for the comparison checks, central runs on altered copies of the split and two
    regression runs."""
    tmp = tmp_path_factory.mktemp("report_runs")
    root = tmp / "runs"
    for mode, seed in (("local", 0), ("central", 0), ("local", 1)):
        run(plan(mode=mode, model="composition", split=str(small_split), seed=seed),
            root / f"{mode}{seed}", progress=False)
    run_federated(plan(mode="fedavg", model="composition", split=str(small_split), seed=0),
                  FedConfig(rounds=2), root / "fedavg0", progress=False)
    other = tmp / "other"
    other_data = _variant(small_split, tmp / "split-data", _edit_a_sequence)
    other_classes = _variant(small_split, tmp / "split-classes", _add_class)
    other_sites = _variant(small_split, tmp / "split-sites", lambda f: (f / "site-3").rename(f / "site-4"))
    reg = _regression_split(tmp / "split-reg")
    run(plan(task="regression", mode="local", model="composition", split=str(reg), seed=0),
        other / "reg-local0", progress=False)
    return SimpleNamespace(
        root=root, tmp=tmp, split=small_split, **{d.name: d for d in root.iterdir()},
        other_data=_central(other_data, other / "central0-data"),
        other_classes=_central(other_classes, other / "central0-classes"),
        other_sites=_central(other_sites, other / "central1-sites", seed=1),
        reg_local=other / "reg-local0",
        reg_central=_central(reg, other / "reg-central0", task="regression"))


def _hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders: a run must come out of a report byte for byte."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, *argv: str) -> str:
    """Run ``fedbio report ARGV``: it must exit 2 with one line and no traceback; the line."""
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedbio: error: ") and "Traceback" not in err, err
    return err


# -- the report itself ---------------------------------------------------------------------------

def test_cli_report_on_local_central_fedavg_then_refuses_to_replace_it(runs, tmp_path, capsys):
    """Real local + central + FedAvg runs: the report is written; a second one into the same
    folder needs --overwrite; the runs are untouched throughout."""
    folders = [runs.local0, runs.local1, runs.central0, runs.fedavg0]
    before = _hashes(runs.root)
    out = tmp_path / "report"
    assert main(["report", *map(str, folders), "--out", str(out), "--n-boot", "100"]) == 0
    printed = capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir() if p.name != ".fedbio.json")
    assert written == sorted(["results.md", "results.csv", "models.csv", "curves.png", "confusion.png",
                              "per_class.png"])
    assert f"wrote {out}/ (" in printed and all(name in printed for name in written)
    text = (out / "results.md").read_text()
    assert all(g in text for g in ("composition · local", "composition · central", "composition · fedavg"))
    assert " ± " in text  # local has two seeds
    assert "Mixed runs" not in text

    err = _refused(capsys, *map(str, folders), "--out", str(out), "--n-boot", "100")
    assert "--overwrite" in err
    assert _hashes(runs.root) == before
    assert main(["report", *map(str, folders), "--out", str(out), "--n-boot", "100", "--overwrite"]) == 0
    assert _hashes(runs.root) == before
    assert not (tmp_path / "report.running").exists() and not (tmp_path / "report.lock").exists()


def test_federated_curves_are_plotted_per_round_beside_the_epoch_curves(runs):
    """The global model's validation accuracy per round (x: round, from round 0), local and
    central curves per epoch; a federation's site rows (training loss only) are no curve."""
    metrics = {name: json.loads((getattr(runs, name) / "metrics.json").read_text())
               for name in ("local0", "central0", "fedavg0")}
    fig = plot_curves(metrics)
    epochs, rounds = fig.axes[:2]
    assert epochs.get_xlabel() == "epoch" and rounds.get_xlabel().startswith("federated round")
    assert [line.get_label() for line in rounds.lines] == ["fedavg0: global model"]
    assert list(rounds.lines[0].get_xdata()) == [0, 1, 2]
    assert {line.get_label() for line in epochs.lines} == {
        "local0: site-1", "local0: site-2", "local0: site-3", "central0: central"}
    assert len(plot_curves({"fedavg0": metrics["fedavg0"]}).axes) == 1  # rounds only


def test_seed_table_over_seeds(runs):
    table = seed_table(collect([runs.local0, runs.local1, runs.central0]), n_boot=100)
    assert list(table.index) == ["site-1", "site-2", "site-3", "average", "delivered"]
    assert table.loc["delivered", "composition · local"] == "—"  # a local run delivers no model
    assert table.loc["delivered", "# samples"] == ""  # the delivered model has no site of its own
    assert "NaN" not in table.to_string() and "None" not in table.to_string()
    cell = table.loc["average", "composition · local"]
    mean = float(cell.split(" ± ")[0])
    lo, hi = (float(v) for v in cell.split("[")[1].rstrip("]").split(", "))
    assert lo <= mean <= hi
    central = json.loads((runs.central0 / "metrics.json").read_text())["test"]["accuracy"]
    assert float(table.loc["site-1", "composition · central"].split(" [")[0]) == pytest.approx(
        100 * central, abs=0.06)


def test_federated_rows_are_the_sites_own_models_and_the_delivered_one(runs):
    """The demo's table and the report disagreed: the report showed the delivered global model
    in every federated site's row. Each site keeps its final model's test predictions."""
    m = json.loads((runs.fedavg0 / "metrics.json").read_text())
    table = seed_table(collect([runs.fedavg0]), n_boot=100)
    for site in ("site-1", "site-2", "site-3"):
        assert (runs.fedavg0 / "sites" / site / "test_predictions.csv").is_file()
        cell = float(table.loc[site, "composition · fedavg"].split(" [")[0])
        assert cell == pytest.approx(100 * m["per_site"][site]["test"]["accuracy"], abs=0.06)
    delivered = float(table.loc["delivered", "composition · fedavg"].split(" [")[0])
    assert delivered == pytest.approx(100 * m["test"]["accuracy"], abs=0.06)


def test_write_report_returns_the_files_it_wrote(runs, tmp_path):
    out, files = write_report([runs.local0, runs.fedavg0], tmp_path / "r", n_boot=100)
    assert out == tmp_path / "r" and sorted(files) == sorted(p.name for p in out.iterdir() if p.name != ".fedbio.json")


def test_regression_runs_table_rmse(runs, tmp_path, capsys):
    out = tmp_path / "reg"
    assert main(["report", str(runs.reg_local), str(runs.reg_central), "--out", str(out),
                 "--n-boot", "100"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != ".fedbio.json") == ["curves.png", "results.csv", "results.md"]
    text = (out / "results.md").read_text()
    assert "RMSE" in text and "accuracy" not in text
    rmse = json.loads((runs.reg_central / "metrics.json").read_text())["test"]["rmse"]
    assert f"{rmse:.3g}" in text


# -- --out never harms what is read -------------------------------------------------------------

@pytest.mark.parametrize("where", ["the run", "inside the run", "above the runs"])
def test_out_may_not_be_hold_or_lie_inside_a_run(runs, capsys, where):
    out = {"the run": runs.local0, "inside the run": runs.local0 / "report",
           "above the runs": runs.root}[where]
    before = _hashes(runs.root)
    err = _refused(capsys, str(runs.local0), str(runs.central0), "--out", str(out), "--overwrite")
    assert "which this command reads" in err
    assert _hashes(runs.root) == before and not (runs.local0 / "report").exists()


def test_a_glob_that_catches_an_earlier_report(runs, tmp_path, capsys):
    """`fedbio report runs/* --out runs/report`, run twice: the second time the glob matches the
    first report, which is named as such (not "no metrics.json")."""
    root = tmp_path / "runs"
    for name in ("local0", "central0"):
        shutil.copytree(getattr(runs, name), root / name)
    assert main(["report", *map(str, sorted(root.iterdir())), "--out", str(root / "report"),
                 "--n-boot", "100"]) == 0
    err = _refused(capsys, *map(str, sorted(root.iterdir())), "--out", str(root / "report"), "--overwrite")
    assert f"{root / 'report'}: a fedbio report, not a run; leave it out" in err


# -- what is not a run ----------------------------------------------------------------------------

def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def _truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _drop_key(path: Path) -> None:
    metrics = json.loads(path.read_text())
    del metrics["n_train"]
    path.write_text(json.dumps(metrics))


def _foreign_class(path: Path) -> None:
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "Nowhere"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


BROKEN = {
    "cut-off metrics": ("metrics.json", _truncate, "not valid JSON"),
    "empty metrics": ("metrics.json", lambda p: p.write_text(""), "empty"),
    "list metrics": ("metrics.json", lambda p: p.write_text("[1, 2]"), "holds a JSON list"),
    "metrics without n_train": ("metrics.json", _drop_key, "no 'n_train' entry"),
    "metrics as a folder": ("metrics.json", lambda p: (p.unlink(), p.mkdir()), "a folder, not a file"),
    "cut-off manifest": ("manifest.json", _truncate, "not valid JSON"),
    "missing predictions": ("site-2/test_predictions.csv", Path.unlink, "missing"),
    "malformed predictions": ("site-1/test_predictions.csv", lambda p: p.write_text('id,label\n"a,b\n'),
                              "not a predictions table"),
    "empty predictions": ("site-1/test_predictions.csv", lambda p: p.write_text(""),
                          "not a predictions table"),
    "predictions without 'predicted'": ("site-1/test_predictions.csv",
                                        lambda p: p.write_text("id,label\na,b\n"), "no predicted column"),
    "predictions of another run": ("site-3/test_predictions.csv", _foreign_class,
                                   ":4: predicted 'Nowhere' is not one of the run's classes"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_run_file_is_one_line_naming_it(runs, tmp_path, capsys, case):
    name, edit, expected = BROKEN[case]
    local = _copy(runs.local1, tmp_path / "local1")  # seed 1: the manifest is compared to no one
    edit(local / name)
    err = _refused(capsys, str(runs.central0), str(local), "--out", str(tmp_path / "r"))
    assert f"fedbio: error: {local / name}" in err and expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local1"]  # nothing written, no r.failed


def test_folders_that_are_not_runs(runs, tmp_path, capsys):
    unfinished = _copy(runs.local1, tmp_path / "local2.running")
    failed = _copy(runs.local1, tmp_path / "local2.failed-2")
    lock = tmp_path / "local3.lock"
    lock.write_text("pid 1\n")
    cases = {unfinished: "an unfinished run", failed: "a failed run", lock: "lock file",
             runs.split: "a split folder, not a run",
             runs.root: f"holds runs (central0, fedavg0, local0, …) but is not one; give them: {runs.root / '*'}",
             runs.local0 / "metrics.json": f"give the run folder ({runs.local0})",
             runs.local0 / "config.json": "a file, not a run folder",
             tmp_path / "nowhere": "no such run folder"}
    for folder, expected in cases.items():
        err = _refused(capsys, str(runs.central0), str(folder), "--out", str(tmp_path / "r"))
        assert f"{folder}: {expected}" in err or expected in err, err
    assert not (tmp_path / "r").exists()


def test_the_same_run_twice_or_one_seed_twice(runs, tmp_path, capsys):
    err = _refused(capsys, str(runs.local0), str(runs.local0) + "/", "--out", str(tmp_path / "r"))
    assert "given twice" in err
    copy = _copy(runs.local0, tmp_path / "copy")
    err = _refused(capsys, str(runs.local0), str(copy), "--out", str(tmp_path / "r"))
    assert f"{runs.local0} and {copy} are both 'composition · local' runs with seed 0" in err


@pytest.mark.parametrize("n_boot", ["0", "-5", "99", "100001"])
def test_n_boot_is_refused_outside_100_to_100000(runs, tmp_path, capsys, n_boot):
    err = _refused(capsys, str(runs.local0), "--out", str(tmp_path / "r"), "--n-boot", n_boot)
    assert f"--n-boot {n_boot}: give 100 to 100000" in err


# -- runs that do not compare --------------------------------------------------------------------

def test_task_types_never_mix(runs, tmp_path, capsys):
    err = _refused(capsys, str(runs.local0), str(runs.reg_local), "--out", str(tmp_path / "r"),
                   "--allow-mixed")
    assert f"{runs.local0} is a classification run but {runs.reg_local} a regression run" in err


MIXED = {"classes": ("other_classes", "differ in class lists (only the first has Peroxisome; only "
                                      "the second has Imaginary)"),
         "same seed, other data": ("other_data", "both have seed 0 but were made from different "
                                   "split files (site-1/train.csv differ)"),
         "sites": ("other_sites", "differ in sites (site-1, site-2, site-3 vs site-1, site-2, site-4)")}


@pytest.mark.parametrize("case", list(MIXED))
def test_runs_from_different_splits_need_allow_mixed(runs, tmp_path, capsys, case):
    attr, why = MIXED[case]
    other = getattr(runs, attr)
    argv = [str(runs.local0), str(runs.local1), str(other), "--out", str(tmp_path / "r"), "--n-boot", "100"]
    err = _refused(capsys, *argv)
    assert f"{runs.local0} and {other} {why}" in err and "--allow-mixed" in err
    assert main(["report", *argv, "--allow-mixed"]) == 0
    text = (tmp_path / "r" / "results.md").read_text()
    assert "Mixed runs (--allow-mixed)" in text and why in text


def test_collect_refuses_what_write_report_refuses(runs):
    with pytest.raises(FedbioError, match="class lists"):
        collect([runs.local0, runs.other_classes])
    assert list(collect([runs.local0, runs.other_classes], allow_mixed=True)) == [
        "composition · local", "composition · central"]


def test_one_seed_on_two_splits_is_told_as_such(runs, tmp_path, capsys):
    """Two central seed-0 runs on different split files: the data differ (said first), not merely
    a seed given twice."""
    err = _refused(capsys, str(runs.central0), str(runs.other_data), "--out", str(tmp_path / "r"))
    assert f"{runs.central0} and {runs.other_data} both have seed 0 but were made from different" in err


def test_seeds_of_one_run_must_share_its_settings(runs, tmp_path, capsys):
    """A run with other settings (here: fewer epochs) is not another seed of the same run."""
    other = _copy(runs.local1, tmp_path / "local1-short")
    config = json.loads((other / "config.json").read_text())
    config["train"]["epochs"] = 20
    (other / "config.json").write_text(json.dumps(config))
    err = _refused(capsys, str(runs.local0), str(other), "--out", str(tmp_path / "r"))
    assert (f"{runs.local0} and {other} are both 'composition · local' runs but differ in settings "
            "(train.epochs 40 vs 20)") in err
