"""``fedbio bench deploy``'s table: what it says of one measured run (the run itself is the
deployment suite's job, tests/deployment; here its rows are checked on a known result)."""

from __future__ import annotations

from fedbio.bench.common import table
from fedbio.bench.deploy import SMALL, checks


def _result(accuracies):
    runs = {name: {"seconds": s, "accuracy": a, "round_s": 2.0, "bytes_up": 16840.0}
            for (name, s), a in zip((("deployment", 30.0), ("simulator", 15.0), ("loop", 5.0)), accuracies,
                                    strict=True)}
    runs["he"] = {"seconds": 40.0, "accuracy": 0.39, "round_s": 3.0, "bytes_up": 705147.0}
    return {"up_s": 8.0, "down_s": 2.5, "runs": runs, "same_numbers": len(set(accuracies)) == 1}


def test_the_table_gives_ratios_measured_in_the_run():
    rows = checks(_result([0.4, 0.4, 0.4]), SMALL)
    text = table(rows)
    assert "8.0 s / 2.5 s" in text
    assert "30.0 s / 15.0 s = 2.00x" in text and "30.0 s / 5.0 s = 6.00x" in text
    assert "3.00 s / 2.00 s = 1.50x" in text and "705 kB / 16.8 kB = 41.9x" in text
    assert [r["ok"] for r in rows if r["goal"] == "equal"] == [True]


def test_different_numbers_fail_the_table():
    assert [r["ok"] for r in checks(_result([0.4, 0.41, 0.4]), SMALL) if r["goal"] == "equal"] == [False]
