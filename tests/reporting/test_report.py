"""fedbio report: bootstrap intervals, confusion, curves; and the multi-task report on real
local, central and federated antibody runs. (Single-task reports on real runs, and what a
report refuses: tests/reporting/test_report_runs.py.)"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from fedbio.cli import main
from fedbio.reporting.report import (
    bootstrap_ci,
    confusion,
    per_class_accuracy,
    plot_curves,
    write_report,
)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small, large = rng.random(100) < 0.4, rng.random(10_000) < 0.4
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5


def test_bootstrap_of_rmse_and_of_runs_over_different_records():
    rng = np.random.default_rng(1)
    errors = rng.normal(0, 2, 400)
    lo, hi = bootstrap_ci(errors ** 2, score="rmse")
    assert lo <= np.sqrt(np.mean(errors ** 2)) <= hi and 1.5 < lo < hi < 2.5
    # two runs over test sets of different sizes (other seeds, other splits): no crash, each
    # resampled on its own, the interval is around the mean of the two accuracies
    a, b = rng.random(300) < 0.3, rng.random(200) < 0.7
    lo, hi = bootstrap_ci([a, b], n_boot=500)
    assert lo <= (a.mean() + b.mean()) / 2 <= hi


def test_confusion_and_per_class():
    classes = ["a", "b", "c"]
    m = confusion(["a", "a", "b", "c"], ["a", "b", "b", "a"], classes)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    acc = per_class_accuracy(np.array(["a", "a", "b"]), np.array(["a", "b", "b"]), classes)
    assert acc["a"] == 0.5 and acc["b"] == 1.0 and np.isnan(acc["c"])


def test_plot_curves_on_one_given_axes_for_epoch_curves_only():
    """Notebooks draw local/central curves on an Axes of their own figure."""
    import matplotlib.pyplot as plt

    local = {"curves": {"site-1": [{"epoch": 1, "valid_accuracy": 0.2}, {"epoch": 2, "valid_accuracy": 0.3}]}}
    fed = {"curves": {"global": [{"round": 0, "valid_accuracy": 0.1}, {"round": 1, "valid_accuracy": 0.4}],
                      "site-1": [{"round": 1, "epoch": 1, "train_loss": 1.0}]}}
    fig, ax = plt.subplots()
    assert plot_curves({"local": local}, ax=ax) is fig and ax.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="two axes"):
        plot_curves({"local": local, "fed": fed}, ax=ax)
    fig, axes = plt.subplots(1, 2)
    plot_curves({"local": local, "fed": fed}, ax=axes)
    assert axes[1].get_xlabel().startswith("federated round") and len(axes[1].lines) == 1
    plt.close("all")


# -- the multi-task report on real antibody runs --------------------------------------------------

TASKS = ["thermostability", "expression", "aggregation", "polyreactivity", "immunogenicity"]


@pytest.fixture(scope="module")
def antibody_runs(tmp_path_factory):
    """Composition-model antibody runs: local, central, and FedAvg in the NVFlare simulator
    (1 round; shared heads, as the composition model has no encoder to federate alone)."""
    from fedbio.data.antibody import make_antibody_split
    from fedbio.federation import FedConfig, run_federated
    from fedbio.training.run import plan, run

    tmp = tmp_path_factory.mktemp("antibody_report")
    split = make_antibody_split(tmp / "split", setup="multitask", seed=0)

    def cfg(mode):
        c = plan(task="antibody", mode=mode, profile="quick", model="composition", epochs=1,
                 split=str(split))
        return replace(c, data=replace(c.data, max_length=48), train=replace(c.train, batch_size=16))

    root = tmp / "runs"
    for mode in ("local", "central"):
        run(cfg(mode), root / mode, progress=False)
    run_federated(cfg("fedavg"), FedConfig(rounds=1, private_heads=False), root / "fedavg",
                  progress=False)
    return [root / "local", root / "central", root / "fedavg"]


def test_multitask_report_on_local_central_and_federated_runs(antibody_runs, tmp_path):
    out, files = write_report(antibody_runs, tmp_path / "report")
    assert sorted(files) == sorted(p.name for p in out.iterdir() if p.name != ".fedbio.json") == sorted(
        ["results.md", "results_rmse.csv", "results_spearman.csv", "tasks.png", "curves.png"])
    text = (out / "results.md").read_text()
    assert all(t in text for t in TASKS)
    assert all(g in text for g in ("composition · local", "composition · central", "composition · fedavg"))
    fed = json.loads((antibody_runs[2] / "metrics.json").read_text())
    assert f"{fed['test']['per_task']['thermostability']['rmse']:.3g}" in text


def test_multitask_run_with_broken_task_scores_is_one_line(antibody_runs, tmp_path, capsys):
    local = tmp_path / "local"
    shutil.copytree(antibody_runs[0], local)
    metrics = json.loads((local / "metrics.json").read_text())
    metrics["test"]["per_task"]["expression"] = "n/a"
    (local / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(local), str(antibody_runs[1]), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == (f"fedbio: error: {local / 'metrics.json'}: the test scores of task 'expression' "
                   "are not numbers; the file was edited or damaged: rerun that run\n")
