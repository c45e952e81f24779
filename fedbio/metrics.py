"""Scores: accuracy and macro-F1 for classes; RMSE, Pearson and Spearman for values.

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
            "n": int(len(y_true))}


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


def key_metric(task_type: str) -> tuple[str, int]:
    """The metric used for model selection and its direction (+1: higher is better)."""
    return ("accuracy", 1) if task_type == "classification" else ("rmse", -1)
