"""fedbio report: tables over seeds with bootstrap intervals, and the figures."""

from __future__ import annotations

import numpy as np

from fedbio.cli import main
from fedbio.report import bootstrap_ci, collect, confusion, per_class_accuracy, seed_table
from fedbio.run import cached_run, plan


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small, large = rng.random(100) < 0.4, rng.random(10_000) < 0.4
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5


def test_confusion_and_per_class():
    classes = ["a", "b", "c"]
    m = confusion(["a", "a", "b", "c"], ["a", "b", "b", "a"], classes)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    acc = per_class_accuracy(np.array(["a", "a", "b"]), np.array(["a", "b", "b"]), classes)
    assert acc["a"] == 0.5 and acc["b"] == 1.0 and np.isnan(acc["c"])


def test_report_over_seeds(tmp_path, capsys):
    root = tmp_path / "runs"
    for mode in ("local", "central"):
        for seed in (0, 1):
            cached_run(plan(mode=mode, model="composition", profile="quick", seed=seed), root,
                       progress=False)
    runs = sorted(root.iterdir())
    assert len(runs) == 4
    table = seed_table(collect(runs), n_boot=200)
    assert list(table.index) == ["site-1", "site-2", "site-3", "average"]
    cell = table.loc["average", "composition · local"]
    mean = float(cell.split(" ± ")[0])
    lo, hi = (float(v) for v in cell.split("[")[1].rstrip("]").split(", "))
    assert lo <= mean <= hi
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out), "--n-boot", "200"]) == 0
    for name in ("results.md", "results.csv", "curves.png", "confusion.png", "per_class.png"):
        assert (out / name).stat().st_size > 100
    assert "composition · central" in (out / "results.md").read_text()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "not a finished run" in capsys.readouterr().err
