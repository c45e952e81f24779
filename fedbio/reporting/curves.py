"""The report's figures: learning curves (epochs and federated rounds on their own axes),
confusion matrices and per-class accuracy.

    from fedbio.reporting.curves import plot_curves
    plot_curves({"local": local_metrics, "FedAvg": fed_metrics}, "valid_accuracy")
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# The validation score each kind of report plots per epoch / round.
CURVE_KEY = {"classification": "valid_accuracy", "regression": "valid_rmse",
             "multitask": "valid_mse_std"}
CURVE_LABEL = {"valid_accuracy": "validation accuracy", "valid_rmse": "validation RMSE",
               "valid_mse_std": "validation MSE (training-sd units)"}


# -- learning curves: epochs and federated rounds are different axes -------------------------

def epoch_curves(runs: Mapping[str, dict], key: str) -> list[tuple[str, list, list]]:
    """(label, epochs, values) of every model trained per epoch (local sites, central) that
    recorded ``key``; a federated site's epoch rows hold only its training loss."""
    out = []
    for name, m in runs.items():
        for who, rows in _curves(m).items():
            points = _points(rows, "epoch", key)
            if points and who != "global":
                out.append((f"{name}: {who}", *points))
    return out


def round_curves(runs: Mapping[str, dict], key: str) -> list[tuple[str, list, list]]:
    """(label, rounds, values) of each federation's global model (round 0: the initial model)."""
    out = []
    for name, m in runs.items():
        points = _points(_curves(m).get("global", []), "round", key)
        if points:
            out.append((f"{name}: global model", *points))
    return out


def _curves(m: dict) -> dict[str, list]:
    """``metrics["curves"]``, only its well-formed parts (curves are optional: old or hand-made
    runs may lack them, and a figure should not stop a report)."""
    curves = m.get("curves")
    if not isinstance(curves, dict):
        return {}
    return {who: [r for r in rows if isinstance(r, dict)] for who, rows in curves.items()
            if isinstance(rows, list)}


def _points(rows: list[dict], x: str, y: str) -> tuple[list, list] | None:
    """(xs, ys) of the rows that have both as numbers; None if none has."""
    number = (int, float)
    pairs = [(r[x], r[y]) for r in rows if isinstance(r.get(x), number) and isinstance(r.get(y), number)]
    return tuple(list(v) for v in zip(*pairs, strict=True)) if pairs else None


def plot_curves(runs: Mapping[str, dict], key: str = "valid_accuracy", ax=None):
    """Validation curves: models trained per epoch on one panel (x: epoch), federations' global
    models per round on another (x: round). ``ax``: one Axes when only one kind is present,
    else a pair (epochs, rounds); without it the figure gets one panel per kind present."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [(curves, xlabel) for curves, xlabel in
              ((epoch_curves(runs, key), "epoch"),
               (round_curves(runs, key), "federated round (0: the initial model)"))
              if curves] or [([], "epoch")]
    fig = None
    if ax is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.4), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) < len(panels):
            raise ValueError("these runs have curves per epoch and per round: give two axes")
    ylabel = CURVE_LABEL.get(key, key.replace("_", " "))
    for axis, (curves, xlabel) in zip(axes, panels, strict=False):
        for label, xs, ys in curves:
            axis.plot(xs, ys, marker="o", ms=3, label=label)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.set_title(f"{ylabel} per {xlabel.split(' (')[0]}", fontsize=10)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and rounds are counts
        if curves:  # below the panel: beside it, a legend would cover the next panel
            axis.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                        ncol=2)
        axis.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else axes[0].figure


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


def plot_per_class(per_class: dict[str, dict[str, float]], ax=None):
    """Grouped bars: accuracy per class for each run (a class a run lacks has no bar)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 3.4))
    classes = list(dict.fromkeys(c for acc in per_class.values() for c in acc))
    width = 0.8 / len(per_class)
    for i, (name, acc) in enumerate(per_class.items()):
        ax.bar(np.arange(len(classes)) + i * width,
               [100 * acc.get(c, float("nan")) for c in classes], width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylabel("test accuracy per class (%)")
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig if fig is not None else ax.figure
