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
    """A DataFrame: rows site-1…site-N, ``average`` and ``delivered``; columns ``# samples`` and runs.

    A site's cell is the test score of the model that site ends with: its own model (``local``),
    the shared model (``central``), or its model after the last federated round (``fedavg``…, as
    the reference reports it). ``delivered`` is the model the run hands over: the global model of
    a federation, the central model, or for ``local`` the unweighted mean over sites.
    """
    import pandas as pd

    first = next(iter(runs.values()))
    metric = metric or _metric(first)
    scale = 100.0 if percent and metric in ("accuracy", "macro_f1") else 1.0
    sites = list(first["n_train"])
    table = {"# samples": [first["n_train"][s] for s in sites] + [sum(first["n_train"].values()), None]}
    for name, m in runs.items():
        values = [scale * m["per_site"][s]["test"][metric] if "test" in m["per_site"][s] else np.nan
                  for s in sites]
        table[name] = [*values, float(np.nanmean(values)), scale * m["test"][metric]]
    return pd.DataFrame(table, index=[*sites, "average", "delivered"]).round(2)


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


# -- uncertainty, confusion, per-class accuracy ----------------------------------------------

def read_predictions(path: str | Path):
    """A run's kept test predictions (``test_predictions.csv``) as a DataFrame."""
    import pandas as pd

    return pd.read_csv(path, dtype={"id": str, "label": str, "predicted": str})


def bootstrap_ci(hits, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean accuracy.

    ``hits`` is 1/0 per test record, or a [runs, records] array (seeds, or sites) over the same
    test set: records are resampled together across runs, so the interval belongs to the mean.
    """
    hits = np.atleast_2d(np.asarray(hits, float))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, hits.shape[1], size=(n_boot, hits.shape[1]))
    means = np.array([hits[:, i].mean() for i in idx])
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def confusion(labels, predicted, classes: list[str]) -> np.ndarray:
    """Counts: rows the true class, columns the predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(classes), len(classes)), int)
    for t, p in zip(labels, predicted, strict=True):
        out[index[t], index[p]] += 1
    return out


def plot_confusion(matrix: np.ndarray, classes: list[str], ax=None, title: str = ""):
    """Row-normalised confusion matrix (each row: where that class's proteins went)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 4.8))
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return fig if fig is not None else ax.figure


def per_class_accuracy(labels, predicted, classes: list[str]) -> dict[str, float]:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return {c: float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else float("nan")
            for c in classes}


# -- the report over many runs ---------------------------------------------------------------

def _prediction_files(run_dir: Path, metrics: dict) -> dict[str, Path]:
    """Per-site test predictions of a run (local: each site's own model; else the delivered one)."""
    if metrics["mode"] == "local":
        return {s: run_dir / s / "test_predictions.csv" for s in metrics["per_site"]}
    return {s: run_dir / "test_predictions.csv" for s in metrics["per_site"]}


def collect(run_dirs: list[str | Path]) -> dict[str, list[tuple[Path, dict]]]:
    """Group run folders by what they are (``model · mode``); seeds of the same run group together."""
    from fedbio.errors import FedbioError

    groups: dict[str, list[tuple[Path, dict]]] = {}
    for d in map(Path, run_dirs):
        if not (d / "metrics.json").is_file():
            raise FedbioError(f"{d} is not a finished run (no metrics.json)")
        m = load_metrics(d)
        model = "composition" if m["model"] == "composition" else Path(m["model"]).name
        groups.setdefault(f"{model} · {m['mode']}", []).append((d, m))
    return groups


def _hits(path: Path) -> np.ndarray:
    """1/0 per test record (sorted by id, so runs line up) from a predictions file."""
    p = read_predictions(path).sort_values("id")
    return (p["label"].to_numpy() == p["predicted"].to_numpy()).astype(float)


def seed_table(groups: dict[str, list[tuple[Path, dict]]], n_boot: int = 1000):
    """Rows site-1…N and average; per group: mean ± sd over seeds [bootstrap 95 % interval].

    The interval resamples the test set (jointly over the seeds' runs), so it says how much the
    mean could move with another test sample of the same size. ``# samples`` is the first seed's.
    """
    import pandas as pd

    first = next(iter(groups.values()))[0][1]
    sites = list(first["n_train"])
    rows = {s: {"# samples": first["n_train"][s]} for s in sites}
    rows["average"] = {"# samples": sum(first["n_train"].values())}
    for name, runs in groups.items():
        hits = np.array([[_hits(_prediction_files(d, m)[s]) for s in sites] for d, m in runs])
        acc = 100 * hits.mean(axis=2)                      # [seeds, sites]
        cells = [(acc[:, i], hits[:, i]) for i in range(len(sites))]
        cells.append((acc.mean(axis=1), hits.mean(axis=1)))  # average over sites
        for site, (per_seed, h) in zip([*sites, "average"], cells, strict=True):
            lo, hi = bootstrap_ci(h, n_boot)
            spread = f" ± {per_seed.std(ddof=1):.1f}" if len(per_seed) > 1 else ""
            rows[site][name] = f"{per_seed.mean():.1f}{spread} [{100 * lo:.1f}, {100 * hi:.1f}]"
    return pd.DataFrame(rows).T


def write_report(run_dirs: list[str | Path], out: str | Path, n_boot: int = 1000) -> Path:
    """``fedbio report``: markdown + CSV table, curves, confusion matrices, per-class accuracy."""
    import matplotlib.pyplot as plt

    from fedbio.paths import atomic_dir

    groups = collect(run_dirs)
    if next(iter(groups.values()))[0][1]["task_type"] == "multitask":
        return _write_task_report(groups, out)
    table = seed_table(groups, n_boot)
    seeds = {name: sorted(m["seed"] for _, m in runs) for name, runs in groups.items()}
    with atomic_dir(out, overwrite=True) as tmp:
        table.to_csv(tmp / "results.csv")
        lines = ["# Results", "", "Test accuracy (%) of the model each site ends with: mean ± sd "
                 "over seeds [bootstrap 95 % interval on the test set, first seed].", "",
                 table.to_markdown() if _has_tabulate() else table.to_string(), "",
                 "Seeds: " + "; ".join(f"{k}: {v}" for k, v in seeds.items()), ""]
        (tmp / "results.md").write_text("\n".join(lines))
        fig = plot_curves({name: runs[0][1] for name, runs in groups.items()})
        fig.savefig(tmp / "curves.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        n = len(groups)
        fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.8), squeeze=False)
        per_class = {}
        for ax, (name, runs) in zip(axes[0], groups.items(), strict=True):
            d, m = runs[0]
            path = next(iter(_prediction_files(d, m).values()))
            p = read_predictions(path)
            plot_confusion(confusion(p["label"], p["predicted"], m["classes"]), m["classes"], ax=ax,
                           title=f"{name} ({path.parent.name if m['mode'] == 'local' else 'delivered'})")
            per_class[name] = per_class_accuracy(p["label"], p["predicted"], m["classes"])
        fig.tight_layout()
        fig.savefig(tmp / "confusion.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig = plot_per_class(per_class)
        fig.savefig(tmp / "per_class.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    print(table.to_string())
    return Path(out)


def _write_task_report(groups: dict, out: str | Path) -> Path:
    """The multi-task report: per-task RMSE (original units) and Spearman tables, a bar plot."""
    import matplotlib.pyplot as plt

    from fedbio.paths import atomic_dir
    from fedbio.report_tasks import plot_task_scores, task_seed_table

    seeds = {name: sorted(m["seed"] for _, m in runs) for name, runs in groups.items()}
    tables = {metric: task_seed_table(groups, metric) for metric in ("rmse", "spearman")}
    with atomic_dir(out, overwrite=True) as tmp:
        lines = ["# Results", ""]
        for metric, table in tables.items():
            table.to_csv(tmp / f"results_{metric}.csv")
            what = "RMSE (original units of each task)" if metric == "rmse" else "Spearman correlation"
            lines += [f"Test {what}: mean ± sd over seeds [bootstrap 95 % interval over the test "
                      "antibodies, first seed].", "",
                      table.to_markdown() if _has_tabulate() else table.to_string(), ""]
        lines += ["Seeds: " + "; ".join(f"{k}: {v}" for k, v in seeds.items()), ""]
        (tmp / "results.md").write_text("\n".join(lines))
        fig = plot_task_scores({name: runs[0][1] for name, runs in groups.items()})
        fig.savefig(tmp / "tasks.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    print(tables["rmse"].to_string())
    return Path(out)


def plot_per_class(per_class: dict[str, dict[str, float]], ax=None):
    """Grouped bars: accuracy per class for each run."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 3.4))
    classes = list(next(iter(per_class.values())))
    width = 0.8 / len(per_class)
    for i, (name, acc) in enumerate(per_class.items()):
        ax.bar(np.arange(len(classes)) + i * width, [100 * acc[c] for c in classes], width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylabel("test accuracy per class (%)")
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
