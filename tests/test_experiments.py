"""``fedbio.experiments``: the sweeps the demo and notebooks 03-04 run, on a small split."""

from __future__ import annotations

import math

import pytest

from fedbio.experiments import compare, seed_summary, skew_sweep
from fedbio.federation import FedConfig


def test_compare_runs_each_mode_once_and_caches(small_split, tmp_path):
    fed = {"fedavg": FedConfig(rounds=2)}
    runs = compare("composition", "quick", tmp_path, (0, 1), fed, small_split)
    assert list(runs) == [0, 1] and all(list(r) == ["local", "central", "fedavg"] for r in runs.values())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 6
    again = compare("composition", "quick", tmp_path, (0, 1), fed, small_split)  # read back
    assert again[1]["fedavg"]["test"] == runs[1]["fedavg"]["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == folders

    table = seed_summary(runs)
    assert list(table.index) == ["local", "central", "fedavg"]
    assert list(table.columns) == ["mean", "sd", "seed 0", "seed 1"]
    local = [100 * runs[s]["local"]["test"]["accuracy"] for s in (0, 1)]
    assert math.isclose(table.loc["local", "mean"], round(sum(local) / 2, 1), abs_tol=0.051)


def test_skew_sweep_rows_and_gains(small_split, tmp_path):
    table = skew_sweep(["composition"], {1.0: small_split}, "quick", tmp_path,
                       {"fedavg": FedConfig(rounds=2), "fedprox": FedConfig(rounds=2, mu=0.1)})
    assert list(table.columns[:7]) == ["model", "alpha", "JS divergence", "local", "central", "fedavg",
                                       "fedprox"]
    row = table.iloc[0]
    assert math.isclose(row["FedAvg gain over local"], row["fedavg"] - row["local"])
    assert math.isclose(row["FedProx - FedAvg"], row["fedprox"] - row["fedavg"])


def test_fluid_means_average_each_mode_and_study_over_seeds():
    from fedbio.experiments import fluid_means

    def scores(v):
        return {"test": {"mcc": v}}

    runs = {seed: {"local": scores(0.1 + seed), "central": scores(0.3), "fedavg": scores(0.2),
                   "fluid": {"test": {"mcc": 0.4 + seed}, "fluid": {
                       "hybrid_mean": scores(0.5), "studies": [
                           {"kind": "teachers", "value": 1, "test": {"mcc": 0.1}},
                           {"kind": "teachers", "value": 1, "test": {"mcc": 0.3}}]}}}
            for seed in (0, 1)}
    means = fluid_means(runs)
    assert means["local"] == pytest.approx(0.6) and means["student"] == pytest.approx(0.9)
    assert means["hybrid"] == pytest.approx(0.5) and means["teachers=1"] == pytest.approx(0.2)
