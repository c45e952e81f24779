"""Results tables and curves from ``metrics.json`` files, shaped like the reference's table.

    from fedbio.report import results_table
    results_table({"local": local_metrics, "central": central_metrics})

Rows are the sites and their average; columns are ``# samples`` and one column per run (local,
central, FedAvg, …), each the test score of the model that site ends with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def load_metrics(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def _metric(metrics: dict) -> str:
    return "accuracy" if metrics["task_type"] == "classification" else "rmse"


def results_table(runs: Mapping[str, dict], metric: str | None = None, percent: bool = True):
    """A DataFrame: rows site-1…site-N and ``average``, columns ``# samples`` and each run.

    For a ``local`` run a site's cell is its own model; for ``central`` (and federated runs) it is
    the model the run delivers, so the ``average`` row compares like with like.
    """
    import pandas as pd

    first = next(iter(runs.values()))
    metric = metric or _metric(first)
    scale = 100.0 if percent and metric in ("accuracy", "macro_f1") else 1.0
    sites = list(first["n_train"])
    table = {"# samples": [first["n_train"][s] for s in sites] + [sum(first["n_train"].values())]}
    for name, m in runs.items():
        values = [scale * m["per_site"][s]["test"][metric] for s in sites]
        table[name] = [*values, float(np.mean(values))]
    return pd.DataFrame(table, index=[*sites, "average"]).round(2)


def summary_row(metrics: dict, metric: str | None = None) -> dict:
    """One line per run: its delivered test (and setHARD) score."""
    metric = metric or _metric(metrics)
    row = {"mode": metrics["mode"], "model": metrics["model"], "seed": metrics["seed"],
           f"test {metric}": metrics["test"][metric]}
    if metrics.get("test_hard"):
        row[f"setHARD {metric}"] = metrics["test_hard"][metric]
    return row


def plot_curves(runs: Mapping[str, dict], key: str = "valid_accuracy", ax=None):
    """Validation curves per epoch (or round) of every model in every run."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, m in runs.items():
        for who, rows in m.get("curves", {}).items():
            xs = [r["epoch"] for r in rows if r.get(key) is not None]
            ys = [r[key] for r in rows if r.get(key) is not None]
            ax.plot(xs, ys, marker="o", ms=3, label=f"{name}: {who}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure
