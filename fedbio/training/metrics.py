"""Scores: accuracy, macro-F1 and Matthews' correlation (MCC) for classes; RMSE, Pearson and Spearman for values.

Plain numpy, so the server, the sites and the notebooks compute the same numbers.
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or ``y_pred``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def mcc(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Matthews' correlation coefficient, for any number of classes (Gorodkin's R_K, as
    scikit-learn computes it): 1 perfect, 0 no better than chance, 0 when either side is
    constant."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if not len(y_true):
        return float("nan")
    confusion = np.zeros((n_classes, n_classes), np.float64)
    np.add.at(confusion, (y_true, y_pred), 1.0)
    true, pred = confusion.sum(1), confusion.sum(0)
    total, correct = confusion.sum(), np.trace(confusion)
    denominator = np.sqrt((total ** 2 - pred @ pred) * (total ** 2 - true @ true))
    return float((correct * total - pred @ true) / denominator) if denominator > 0 else 0.0


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), float)
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(_rank(np.asarray(a, float)), _rank(np.asarray(b, float)))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def classification_scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    pred = np.asarray(probs).argmax(axis=1)
    return {"accuracy": accuracy(y_true, pred), "macro_f1": macro_f1(y_true, pred, probs.shape[1]),
            "mcc": mcc(y_true, pred, probs.shape[1]), "n": int(len(y_true))}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray,
                      names: list[str] | None = None) -> dict[str, float]:
    """Scores per target (original units) and their mean over targets."""
    y_true = np.asarray(y_true, float).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, float).reshape(len(y_pred), -1)
    names = names or [f"target{i}" for i in range(y_true.shape[1])]
    per = {name: {"rmse": rmse(y_true[:, i], y_pred[:, i]),
                  "pearson": pearson(y_true[:, i], y_pred[:, i]),
                  "spearman": spearman(y_true[:, i], y_pred[:, i])}
           for i, name in enumerate(names)}
    out = {key: float(np.nanmean([p[key] for p in per.values()])) for key in ("rmse", "pearson", "spearman")}
    out["n"] = int(len(y_true))
    if len(names) > 1:
        out["per_target"] = per
    return out


def bootstrap_interval(truth: np.ndarray, pred: np.ndarray, metric, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(truth, pred)`` over resampled records."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    if n < 3:
        return float("nan"), float("nan")
    values = [metric(truth[idx], pred[idx]) for idx in rng.integers(0, n, size=(n_boot, n))]
    values = np.array([v for v in values if np.isfinite(v)])
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def multitask_scores(y_std: np.ndarray, out_std: np.ndarray, tasks: list[str],
                     mean, std, ci: bool = False) -> dict:
    """Scores of a multi-task regression: per task in original units, plus their means.

    ``y_std`` [N, T] holds each record's standardised target in its own task's column and NaN
    elsewhere; ``out_std`` [N, T] the model's standardised outputs. Per task: ``rmse`` (original
    units), ``pearson``, ``spearman``, ``n``, flattened as ``<task>.<metric>``; overall:
    ``mse_std`` (mean squared error in training-sd units, averaged over tasks: the selection
    metric, since units differ between tasks), mean ``pearson`` / ``spearman``, ``n``.
    ``ci=True`` adds 95 % bootstrap intervals per task (``rmse_lo``/``rmse_hi``,
    ``spearman_lo``/``spearman_hi``): test sets of a few dozen antibodies need them, and they
    are scalars, so a site can report them.
    """
    y_std, out_std = np.asarray(y_std, float), np.asarray(out_std, float)
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    per, mse = {}, []
    for j, task in enumerate(tasks):
        rows = ~np.isnan(y_std[:, j])
        if not rows.any():
            continue
        truth = y_std[rows, j] * std[j] + mean[j]
        pred = out_std[rows, j] * std[j] + mean[j]
        per[task] = {"rmse": rmse(truth, pred), "pearson": pearson(truth, pred),
                     "spearman": spearman(truth, pred), "n": int(rows.sum())}
        if ci:
            per[task]["rmse_lo"], per[task]["rmse_hi"] = bootstrap_interval(truth, pred, rmse)
            per[task]["spearman_lo"], per[task]["spearman_hi"] = bootstrap_interval(truth, pred, spearman)
        mse.append(float(np.mean((y_std[rows, j] - out_std[rows, j]) ** 2)))
    return _task_summary(per, mse)


def _task_summary(per: dict[str, dict], mse: list[float]) -> dict:
    """Per-task scores flattened as ``<task>.<metric>``, with the overall ``mse_std`` (mean of
    ``mse``), mean ``pearson`` / ``spearman`` over tasks, total ``n`` and ``per_task``."""
    out: dict = {f"{task}.{key}": value for task, scores in per.items() for key, value in scores.items()}
    out["mse_std"] = float(np.mean(mse)) if mse else float("nan")
    for key in ("pearson", "spearman"):
        values = [p[key] for p in per.values() if np.isfinite(p[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    out["n"] = int(sum(p["n"] for p in per.values()))
    out["per_task"] = per
    return out


def combine_task_scores(rows: list[dict]) -> dict:
    """Multi-task scores of several models (sites) merged: per task, the mean over the models
    that were scored on that task; overall means as ``multitask_scores`` forms them."""
    per: dict = {}
    for row in rows:
        for task, scores in row.get("per_task", {}).items():
            per.setdefault(task, []).append(scores)
    merged = {}
    for task, group in per.items():
        keys = [k for k in group[0] if k not in ("n", "models") and all(k in g for g in group)]
        merged[task] = {k: float(np.mean([g[k] for g in group])) for k in keys}
        merged[task]["n"] = int(group[0]["n"])
        merged[task]["models"] = len(group)
    mse = [r["mse_std"] for r in rows if np.isfinite(r.get("mse_std", np.nan))]
    return _task_summary(merged, mse)


def key_metric(task_type: str) -> tuple[str, int]:
    """The metric used for model selection and its direction (+1: higher is better)."""
    if task_type == "classification":
        return "accuracy", 1
    if task_type == "multitask":
        return "mse_std", -1
    return "rmse", -1
