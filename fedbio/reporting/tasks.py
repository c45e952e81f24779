"""Results of multi-task runs (antibody developability): one row per task, in original units.

    from fedbio.reporting.tasks import task_table, plot_task_scores
    task_table({"local": local_metrics, "FedAvg": fed_metrics}, "rmse")

Each cell is the test score of the model(s) scored on that task: a site's own model (local; a
federation with private heads: global trunk + the site's head), or the one shared model
(central, or a federation with shared heads). Intervals are 95 % percentile bootstraps over the
test antibodies, computed where the model was scored; with a few dozen antibodies per task they
are wide, and the table says so rather than hiding it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedbio.reporting.curves import CURVE_KEY, plot_curves
from fedbio.reporting.document import Report, markdown, mixed_lines

LOWER_IS_BETTER = {"rmse"}


def tasks_of(metrics: dict) -> list[str]:
    """The run's tasks in the split's order (``tasks.json``), those that were scored."""
    per = metrics["test"]["per_task"]
    return [t for t in metrics.get("classes") or [] if t in per] or list(per)


def task_table(runs: Mapping[str, dict], metric: str = "rmse", digits: int = 3):
    """A DataFrame: rows = tasks, columns = ``n test`` and one ``value [lo, hi]`` per run."""
    import pandas as pd

    first = next(iter(runs.values()))
    tasks = tasks_of(first)
    table = {"n test": [first["test"]["per_task"][t]["n"] for t in tasks]}
    for name, m in runs.items():
        cells = []
        for t in tasks:
            s = m["test"]["per_task"].get(t, {})
            value = s.get(metric, np.nan)
            ci = ""
            if f"{metric}_lo" in s:
                ci = f" [{s[f'{metric}_lo']:.{digits}g}, {s[f'{metric}_hi']:.{digits}g}]"
            cells.append(f"{value:.{digits}g}{ci}")
        table[name] = cells
    return pd.DataFrame(table, index=tasks)


def task_seed_table(groups: Mapping[str, list[tuple]], metric: str = "rmse", digits: int = 3):
    """Rows = tasks; per group of runs (seeds): mean ± sd over seeds [first seed's interval]."""
    import pandas as pd

    first = next(iter(groups.values()))[0][1]
    tasks = tasks_of(first)
    table = {"n test": [first["test"]["per_task"][t].get("n") for t in tasks]}
    for name, runs in groups.items():
        cells = []
        for t in tasks:
            values = np.array([m["test"]["per_task"].get(t, {}).get(metric, np.nan) for _, m in runs])
            s = runs[0][1]["test"]["per_task"].get(t, {})
            spread = f" ± {np.nanstd(values, ddof=1):.{digits}g}" if len(values) > 1 else ""
            ci = (f" [{s[f'{metric}_lo']:.{digits}g}, {s[f'{metric}_hi']:.{digits}g}]"
                  if f"{metric}_lo" in s else "")
            cells.append(f"{np.nanmean(values):.{digits}g}{spread}{ci}")
        table[name] = cells
    return pd.DataFrame(table, index=tasks)


def plot_task_scores(runs: Mapping[str, dict], metric: str = "spearman", ax=None):
    """Grouped bars per task with bootstrap intervals (Spearman by default: unit-free, so tasks
    share one axis; RMSE is per task in its own units, see ``task_table``)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
    tasks = tasks_of(next(iter(runs.values())))
    width = 0.8 / len(runs)
    for i, (name, m) in enumerate(runs.items()):
        per = m["test"]["per_task"]
        values = np.array([per.get(t, {}).get(metric, np.nan) for t in tasks])
        lo = np.array([per.get(t, {}).get(f"{metric}_lo", np.nan) for t in tasks])
        hi = np.array([per.get(t, {}).get(f"{metric}_hi", np.nan) for t in tasks])
        err = np.vstack([values - lo, hi - values])
        ax.bar(np.arange(len(tasks)) + i * width, values, width, label=name,
               yerr=None if np.isnan(err).all() else np.nan_to_num(err), capsize=3)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure


def plot_federated_curves(metrics: dict, axes=None):
    """A federated multi-task run: each site's training loss per local epoch, and the global
    model's validation MSE (training-sd units, mean over sites) per round."""
    import matplotlib.pyplot as plt

    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    curves = metrics["curves"]
    for site, rows in curves.items():
        if site == "global":
            continue
        axes[0].plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], marker="o", ms=3,
                     label=site)
    glob = [r for r in curves.get("global", []) if r.get("valid_mse_std") is not None]
    axes[1].plot([r["round"] for r in glob], [r["valid_mse_std"] for r in glob], marker="o", color="k")
    axes[0].set(xlabel="local epoch", ylabel="training loss (sd units)")
    axes[1].set(xlabel="round", ylabel="validation MSE (sd units)")
    axes[0].legend(fontsize=7, frameon=False)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else axes[0].figure


def task_report(groups: Mapping[str, list[tuple]], notes: Sequence[str] = ()) -> Report:
    """``fedbio report`` on multi-task runs (local, central or federated): per-task RMSE (original
    units) and Spearman tables, a bar plot of Spearman per task, and the validation curves.

    The intervals are the runs' own (first seed's) per-task bootstraps from ``metrics.json``;
    ``notes`` are the differences ``--allow-mixed`` let through, said first in results.md.
    """
    seeds = {name: sorted(m["seed"] for _, m in runs) for name, runs in groups.items()}
    tables = {metric: task_seed_table(groups, metric) for metric in ("rmse", "spearman")}
    texts, lines = {}, ["# Results", "", *mixed_lines(list(notes))]
    for metric, table in tables.items():
        texts[f"results_{metric}.csv"] = table.to_csv()
        what = "RMSE (original units of each task)" if metric == "rmse" else "Spearman correlation"
        lines += [f"Test {what}: mean ± sd over seeds [bootstrap 95 % interval over the test "
                  "antibodies, first seed].", "", markdown(table), ""]
    lines += ["Seeds: " + "; ".join(f"{k}: {v}" for k, v in seeds.items()), ""]
    texts["results.md"] = "\n".join(lines)
    firsts = {name: runs[0][1] for name, runs in groups.items()}
    figures = {"tasks.png": lambda: plot_task_scores(firsts),
               "curves.png": lambda: plot_curves(firsts, CURVE_KEY["multitask"])}
    return Report(texts, figures, tables["rmse"].to_string())
