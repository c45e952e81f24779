"""fedbio report with FLuID runs: the models table (local, FedAvg, FLuID student, FLuID hybrid,
central; accuracy, macro-F1, MCC; test and setHARD), the FLuID section (settings, bytes each site
sent, studies), on real runs made in-process (``engine="loop"``: the sites' and server's code in
one process) on a small split with a public set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import HARD, SCL

from fedbio.cli import main
from fedbio.errors import FedbioError
from fedbio.federation import FedConfig, run_federated
from fedbio.federation.fluid import FluidConfig
from fedbio.reporting.fluid import (
    bytes_table,
    class_scores,
    confusions,
    model_files,
    model_table,
    score_intervals,
    study_rows,
    teachers_vs_local,
)
from fedbio.reporting.report import collect, load_predictions, seed_table, write_report
from fedbio.reporting.runs import check_comparable, group_name, load_runs
from fedbio.reporting.summary import print_metrics
from fedbio.training import metrics as scores
from fedbio.training.run import plan, run

SCORES = ("accuracy", "macro_f1", "mcc")
EPOCHS = 10  # seconds a run; the models predict more than one class


def _small(split) -> None:
    """Each site's first 40 train / 8 valid records; every 30th test record (all classes, where
    the first records of the test set are of one class: MCC 0 everywhere), every 10th of setHARD;
    60 public records; every class trained somewhere."""
    from fedbio.data.split import restore_classes

    full = {name: parts["train"] for name, parts in split.sites.items()}
    for parts in split.sites.values():
        parts["train"], parts["valid"] = parts["train"][:40], parts["valid"][:8]
    split.test, split.test_hard, split.public = split.test[::30], split.test_hard[::10], split.public[:60]
    restore_classes(split, full)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seed 0: local, central, FedAvg (2 rounds), FLuID with hybrids and studies, and FLuID
    without either; seed 1: FLuID with hybrids and studies."""
    from fedbio.data.split import SplitConfig, make_split, write_split

    tmp = tmp_path_factory.mktemp("fluid_report")
    split = make_split(SCL, SplitConfig(seed=0, public_fraction=0.2), hard=HARD)
    _small(split)
    folder = write_split(split, tmp / "split", plot=False)
    root = tmp / "runs"

    def cfg(mode: str, seed: int = 0):
        return plan(mode=mode, model="composition", split=str(folder), seed=seed, epochs=EPOCHS)

    for mode in ("local", "central"):
        run(cfg(mode), root / f"{mode}0", progress=False)
    run_federated(cfg("fedavg"), FedConfig(rounds=2), root / "fedavg0", engine="loop", progress=False)
    for seed in (0, 1):
        run_federated(cfg("fluid", seed), FedConfig(), root / f"fluid{seed}", engine="loop",
                      fluid=FluidConfig(hybrid=True, studies=True), progress=False)
    run_federated(cfg("fluid"), FedConfig(), tmp / "plain" / "fluid0", engine="loop", progress=False)
    return SimpleNamespace(root=root, tmp=tmp, plain=tmp / "plain" / "fluid0",
                           **{d.name: d for d in root.iterdir()})


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _mean(cell: str) -> float:
    return float(cell.split(" ")[0])


def _interval(cell: str) -> tuple[float, float]:
    lo, hi = cell.split("[")[1].rstrip("]").split(", ")
    return float(lo), float(hi)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    """The report of local, FedAvg, both FLuID seeds and central."""
    out = tmp_path_factory.mktemp("fluid_out") / "r"
    folders = [runs.local0, runs.fedavg0, runs.fluid0, runs.fluid1, runs.central0]
    _, files = write_report(folders, out, n_boot=200)
    return SimpleNamespace(out=out, files=files, text=(out / "results.md").read_text(),
                           models=pd.read_csv(out / "models.csv", index_col=0))


# -- the models table ---------------------------------------------------------------------------

def test_the_models_table_has_the_five_rows_with_the_runs_numbers(runs, report):
    t = report.models
    assert list(t.index) == ["composition · local", "composition · fedavg", "composition · fluid student",
                             "composition · fluid hybrid", "composition · central"]
    assert list(t.columns) == [f"{part} {label}" for part in ("test", "setHARD")
                               for label in ("accuracy (%)", "macro-F1", "MCC")]
    fluid = [_metrics(runs.fluid0), _metrics(runs.fluid1)]
    expected = {"composition · local": [_metrics(runs.local0)],
                "composition · fedavg": [_metrics(runs.fedavg0)],
                "composition · fluid student": fluid,
                "composition · fluid hybrid": [m["fluid"]["hybrid_mean"] for m in fluid],
                "composition · central": [_metrics(runs.central0)]}
    for row, ms in expected.items():
        for part, label in (("test", "test"), ("test_hard", "setHARD")):
            for key, name, scale, digits in (("accuracy", "accuracy (%)", 100, 1), ("macro_f1", "macro-F1", 1, 3),
                                             ("mcc", "MCC", 1, 3)):
                values = [scale * m[part][key] for m in ms]
                cell = t.loc[row, f"{label} {name}"]
                assert _mean(cell) == pytest.approx(np.mean(values), abs=0.6 * 10 ** -digits), (row, label, key)
                assert (" ± " in cell) == (len(ms) > 1)
                lo, hi = _interval(cell)
                assert lo < hi and lo - 0.1 * scale <= _mean(cell) <= hi + 0.1 * scale
    assert "## Models" in report.text and "composition · fluid hybrid" in report.text


def test_the_hybrid_row_is_the_hybrids_prediction_files_mean_over_sites(runs):
    """hybrid_mean (the sites' own scores) is what the kept per-site predictions give."""
    m = _metrics(runs.fluid0)
    for part in ("test", "test_hard"):
        files = model_files(runs.fluid0, m, "hybrid", part)
        assert sorted(files) == ["site-1", "site-2", "site-3"]
        got = []
        for path in files.values():
            p = load_predictions(path, m)
            y, pred = (pd.Categorical(p[c], categories=m["classes"]).codes for c in ("label", "predicted"))
            got.append(class_scores(confusions(y[None].astype(int), pred[None].astype(int), len(m["classes"]))))
        for key in SCORES:
            assert np.mean([g[key][0] for g in got]) == pytest.approx(m["fluid"]["hybrid_mean"][part][key], abs=1e-9)


def test_bootstrap_scores_are_the_training_metrics():
    """Accuracy, macro-F1 and MCC of every resample at once equal fedbio.training.metrics'."""
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 4, 300)  # class 4 never predicted
    p[:120] = y[:120]
    got = class_scores(confusions(np.stack([y, y[::-1]]), np.stack([p, p[::-1]]), 6))  # class 5: none
    assert got["accuracy"][0] == pytest.approx(scores.accuracy(y, p))
    assert got["macro_f1"][0] == pytest.approx(scores.macro_f1(y, p, 6))
    assert got["mcc"][0] == pytest.approx(scores.mcc(y, p, 5))
    assert got["mcc"][1] == pytest.approx(scores.mcc(y[::-1], p[::-1], 5))
    constant = class_scores(confusions(y[None], np.zeros((1, 300), int), 5))
    assert constant["mcc"][0] == 0.0 == scores.mcc(y, np.zeros(300, int), 5)
    lo, hi = score_intervals([(np.arange(300), y, p)], 5, n_boot=300)["mcc"]
    assert lo < scores.mcc(y, p, 5) < hi and hi - lo < 0.3


def test_runs_without_mcc_show_a_dash(runs, tmp_path):
    old = tmp_path / "local0"
    shutil.copytree(runs.local0, old)
    m = _metrics(old)
    for scores_ in (m["test"], m["test_hard"], *(s["test"] for s in m["per_site"].values())):
        del scores_["mcc"]
    (old / "metrics.json").write_text(json.dumps(m))
    write_report([old, runs.fluid0], tmp_path / "r", n_boot=100)
    t = pd.read_csv(tmp_path / "r" / "models.csv", index_col=0)
    assert t.loc["composition · local", "test MCC"] == "—" == t.loc["composition · local", "setHARD MCC"]
    assert t.loc["composition · local", "test macro-F1"] != "—"
    assert t.loc["composition · fluid student", "test MCC"] != "—"


def test_runs_without_sethard_have_no_sethard_columns(runs, tmp_path):
    bare = tmp_path / "fluid0"
    shutil.copytree(runs.fluid0, bare)
    m = _metrics(bare)
    m["test_hard"] = m["fluid"]["hybrid_mean"]["test_hard"] = None
    (bare / "metrics.json").write_text(json.dumps(m))
    table = model_table(collect([bare]), 100, lambda path, m: load_predictions(path, m))
    assert list(table.columns) == ["test accuracy (%)", "test macro-F1", "test MCC"]
    assert list(table.index) == ["composition · fluid student", "composition · fluid hybrid"]


def test_the_fluid_column_shows_hybrids_per_site_and_the_student_delivered(runs):
    m = _metrics(runs.fluid0)
    table = seed_table(collect([runs.fluid0]), n_boot=100)
    for site, s in m["fluid"]["hybrid_scores"].items():
        assert _mean(table.loc[site, "composition · fluid"]) == pytest.approx(100 * s["test"]["accuracy"], abs=0.06)
    assert _mean(table.loc["delivered", "composition · fluid"]) == pytest.approx(100 * m["test"]["accuracy"], abs=0.06)


# -- grouping and comparison ----------------------------------------------------------------------

def test_a_fluid_run_compares_with_the_others_and_its_teachers_are_the_local_models(runs, tmp_path):
    loaded = load_runs([runs.local0, runs.fedavg0, runs.fluid0, runs.central0])
    assert check_comparable(loaded) == []
    assert [group_name(m) for _, m in loaded] == [
        "composition · local", "composition · fedavg", "composition · fluid", "composition · central"]
    local, fluid = _metrics(runs.local0), _metrics(runs.fluid0)
    for site, t in fluid["fluid"]["teacher_scores"].items():
        assert t["test"] == local["per_site"][site]["test"]
    groups = collect([runs.local0, runs.fluid0])
    assert "here their test scores equal the local runs' (seed 0)." in teachers_vs_local(groups)
    # a local run whose site-2 scored otherwise: said, not hidden
    other = tmp_path / "local0"
    shutil.copytree(runs.local0, other)
    local["per_site"]["site-2"]["test"]["accuracy"] += 0.01
    (other / "metrics.json").write_text(json.dumps(local))
    line = teachers_vs_local(collect([other, runs.fluid0]))
    assert "differ from the local run of their seed (seed 0 site-2: accuracy" in line


def test_fluid_settings_separate_groups_and_seeds(runs, tmp_path):
    """Another weighting is another group; a seed of the same group with another neighbours
    setting is refused as not a seed of that run."""
    uniform = tmp_path / "uniform"
    shutil.copytree(runs.fluid1, uniform)
    m = _metrics(uniform)
    m["fluid"]["weighting"] = "uniform"
    (uniform / "metrics.json").write_text(json.dumps(m))
    assert list(collect([runs.fluid0, uniform])) == ["composition · fluid", "composition · fluid · uniform weighting"]
    config = json.loads((runs.fluid1 / "config.json").read_text())
    config["fluid"]["neighbours"] += 1
    (uniform / "config.json").write_text(json.dumps(config))
    (uniform / "metrics.json").write_text((runs.fluid1 / "metrics.json").read_text())
    with pytest.raises(FedbioError, match="differ in settings \\(fluid.neighbours"):
        collect([runs.fluid0, uniform])


# -- the FLuID section -----------------------------------------------------------------------------

def test_the_bytes_table_is_what_each_site_sent(runs, report):
    table = bytes_table(collect([runs.fluid0, runs.fedavg0]))
    fluid, fedavg = _metrics(runs.fluid0), _metrics(runs.fedavg0)
    for site, steps in fluid["fluid"]["bytes_sent"].items():
        for step, size in steps.items():
            assert int(table.loc[site, f"FLuID: {step}"]) == size
        assert int(table.loc[site, "FLuID: total"]) == sum(steps.values()) > 0
        up = [r["up"][site] for r in fedavg["bytes_per_round"]]
        assert len(up) == 2 and table.loc[site, "composition · fedavg: per round"] == str(up[0])
        assert int(table.loc[site, "composition · fedavg: 2 rounds"]) == sum(up) > 0
    assert "## FLuID" in report.text and "composition · fedavg: 2 rounds" in report.text
    section = report.text.split("## FLuID")[1]
    shown = next(line for line in section.splitlines() if line.startswith("site-1 ")).split()
    sent = fluid["fluid"]["bytes_sent"]["site-1"]
    assert shown[1:] == [*map(str, sent.values()), str(sum(sent.values())), str(up[0]), str(sum(up))]
    public = fluid["fluid"]["public"]
    assert f"public set {public['n']} records" in report.text and "weighting domain; selection balanced" in report.text


def test_the_studies_figure_and_its_data(runs, report):
    assert (report.out / "fluid_studies.png").stat().st_size > 10_000
    assert {"fluid_studies.png", "fluid_studies.csv", "models.csv"} <= set(report.files)
    data = pd.read_csv(report.out / "fluid_studies.csv")
    ms = [_metrics(runs.fluid0), _metrics(runs.fluid1)]

    def row(study, value):
        found = data[(data["study"] == study) & (data["value"].astype(str) == str(value))]
        assert len(found) == 1, (study, value)
        return found.iloc[0]

    for k in (1, 2):
        subsets = [s for m in ms for s in m["fluid"]["studies"] if s["kind"] == "teachers" and s["value"] == k]
        assert row("teachers", k)["n"] == len(subsets) == 2 * 3  # 3 subsets of 3 sites, 2 seeds
        for key in SCORES:
            values = [s["test"][key] for s in subsets]
            assert row("teachers", k)[f"test_{key}_mean"] == pytest.approx(np.mean(values))
            assert row("teachers", k)[f"test_{key}_sd"] == pytest.approx(np.std(values, ddof=1))
    full = row("teachers", 3)
    assert bool(full["student"]) and full["test_mcc_mean"] == pytest.approx(np.mean([m["test"]["mcc"] for m in ms]))
    for share in (0.25, 0.5):
        assert row("public_share", share)["test_hard_accuracy_mean"] == pytest.approx(np.mean(
            [s["test_hard"]["accuracy"] for m in ms for s in m["fluid"]["studies"] if s["value"] == share]))
    assert row("public_share", 1.0)["test_accuracy_mean"] == full["test_accuracy_mean"]
    assert row("weighting", "uniform")["n"] == 2 and bool(row("weighting", "domain")["student"])
    ref = row("reference", "local models (teachers), mean over sites")
    assert ref["test_mcc_mean"] == pytest.approx(np.mean([m["fluid"]["teacher_mean"]["test"]["mcc"] for m in ms]))
    assert "3 (the student)" in report.text and "0.25" in report.text


def test_study_rows_pool_subsets_and_seeds_of_one_group_only(runs):
    m = _metrics(runs.fluid0)
    rows = study_rows(collect([runs.fluid0]))
    assert {r["seeds"] for r in rows} == {"0"}
    got = [(r["study"], r["value"]) for r in rows]
    assert got[:8] == [("teachers", 1), ("teachers", 2), ("teachers", 3), ("public_share", 0.25),
                       ("public_share", 0.5), ("public_share", 1.0), ("weighting", "domain"),
                       ("weighting", "uniform")]
    assert got[-1] == ("reference", "local models (teachers), mean over sites")
    own = {("selection", m["fluid"]["selection"])} if any(s["kind"] == "selection" for s in m["fluid"]["studies"]) else set()
    assert set(got[8:-1]) == {(s["kind"], s["value"]) for s in m["fluid"]["studies"]
                              if s["kind"] not in ("teachers", "public_share", "weighting")} | own


# -- a FLuID run alone, with or without hybrids and studies, and the command line -----------------

def test_a_fluid_run_alone(runs, tmp_path):
    out, files = write_report([runs.fluid0], tmp_path / "r", n_boot=100)
    text = (out / "results.md").read_text()
    assert "no FedAvg run is in this report" in text and "no local run of a FLuID run's seed" in text
    assert list(pd.read_csv(out / "models.csv", index_col=0).index) == [
        "composition · fluid student", "composition · fluid hybrid"]
    assert "fluid_studies.png" in files


def test_a_fluid_run_without_hybrids_or_studies(runs, tmp_path):
    m = _metrics(runs.plain)
    assert m["fluid"]["hybrid_mean"] is None and m["fluid"]["studies"] is None
    out, files = write_report([runs.local0, runs.plain], tmp_path / "r", n_boot=100)
    models = pd.read_csv(out / "models.csv", index_col=0)
    assert list(models.index) == ["composition · local", "composition · fluid student"]
    assert not any(name.startswith("fluid_studies") for name in files)
    assert "Studies" not in (out / "results.md").read_text() and "## FLuID" in (out / "results.md").read_text()
    # without hybrids, a site ends with its teacher: the fluid column's site rows are the local ones
    table = pd.read_csv(out / "results.csv", index_col=0)
    for site in ("site-1", "site-2", "site-3"):
        assert _mean(table.loc[site, "composition · fluid"]) == _mean(table.loc[site, "composition · local"])


def test_cli_report_with_fluid_runs(runs, tmp_path, capsys):
    folders = [runs.local0, runs.fedavg0, runs.fluid0, runs.central0]
    assert main(["report", *map(str, folders), "--out", str(tmp_path / "r"), "--n-boot", "100"]) == 0
    printed = capsys.readouterr().out
    assert "fluid_studies.png" in printed and "models.csv" in printed
    # a broken hybrid predictions file is one line naming it, and nothing is written
    broken = tmp_path / "fluid0"
    shutil.copytree(runs.fluid0, broken)
    (broken / "sites" / "site-2" / "hybrid" / "test_predictions.csv").write_text("id,label\na,b\n")
    assert main(["report", str(broken), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedbio: error: {broken}/sites/site-2/hybrid/test_predictions.csv: no predicted")
    assert err.count("\n") == 1 and not (tmp_path / "r2").exists()


def test_the_printed_summary_shows_mcc(runs, capsys):
    m = _metrics(runs.fluid0)
    print_metrics(m)
    delivered = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fluid "))
    assert delivered.endswith(f"macro-F1 {m['test']['macro_f1']:.3f}  MCC {m['test']['mcc']:.3f}")
    del m["test"]["mcc"]  # a run from before MCC was recorded
    print_metrics(m)
    delivered = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fluid "))
    assert delivered.endswith(f"macro-F1 {m['test']['macro_f1']:.3f}")
