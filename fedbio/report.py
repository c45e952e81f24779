"""Results tables and curves from ``metrics.json`` files, shaped like the reference's table.

    from fedbio.report import results_table
    results_table({"local": local_metrics, "central": central_metrics})

Rows are the sites and their average; columns are ``# samples`` and one column per run (local,
central, FedAvg, …), each the test score of the model that site ends with.

``fedbio report RUN... --out DIR`` (:func:`write_report`) tables many runs as mean ± sd over
seeds with bootstrap intervals. Before anything is written it checks what it is given:

- every RUN is a finished run folder whose ``metrics.json`` and test predictions can be read;
  a report folder, a split, an unfinished (``*.running``) or failed (``*.failed``) run, a file,
  or the same run twice is refused with one line saying what it is;
- the runs are of one task type (classification, regression or multi-task), and comparable:
  same class list (tasks), same sites, and runs of the same seed made from the same split files
  (``manifest.json``'s ``data_md5``; other seeds legitimately draw other splits); runs grouped
  as seeds of one run (same model and mode) share its settings (``config.json``: tuning,
  epochs, learning rate, crop, rounds, …). ``--allow-mixed`` tables runs that differ in these
  anyway and says so in ``results.md``; a seed twice in one group is always refused;
- ``--n-boot`` is at least ``MIN_BOOT`` (100: fewer resamples make the ends of a 95 % percentile
  interval noise) and at most ``MAX_BOOT``.

``DIR`` follows :mod:`fedbio.outputs`: refused if non-empty without ``--overwrite``, and always
refused if it is, holds or lies inside one of the runs.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fedbio.errors import FedbioError

MIN_BOOT, MAX_BOOT = 100, 100_000
TASK_TYPES = ("classification", "regression", "multitask")
# What every run's metrics.json holds, with the type it must have (the report reads all of it).
REQUIRED = {"task_type": str, "mode": str, "seed": int, "model": str, "n_train": dict,
            "per_site": dict, "test": dict}
KIND = {str: "a string", int: "an integer", dict: "an object"}
# The validation score each kind of report plots per epoch / round.
CURVE_KEY = {"classification": "valid_accuracy", "regression": "valid_rmse",
             "multitask": "valid_mse_std"}
CURVE_LABEL = {"valid_accuracy": "validation accuracy", "valid_rmse": "validation RMSE",
               "valid_mse_std": "validation MSE (training-sd units)"}

Groups = dict[str, list[tuple[Path, dict]]]


def load_metrics(run_dir: str | Path) -> dict:
    """A run's ``metrics.json``, checked: a FedbioError names the file if it cannot be used."""
    path = Path(run_dir) / "metrics.json"
    metrics = _read_json(path)
    _check_metrics(metrics, path)
    return metrics


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


# -- uncertainty, confusion, per-class accuracy ----------------------------------------------

def read_predictions(path: str | Path):
    """A run's kept test predictions (``test_predictions.csv``) as a DataFrame."""
    import pandas as pd

    return pd.read_csv(path, dtype={"id": str, "label": str, "predicted": str})


# A bootstrap statistic of one run's per-record values, for every resample at once ([boot, n]).
SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda a: a.mean(axis=1),                    # accuracy from 1/0 hits
    "rmse": lambda a: np.sqrt(a.mean(axis=1)),           # RMSE from squared errors
}


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 score: str = "mean", joint: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean score over runs.

    ``values`` is one value per test record (1/0 hits for ``score="mean"``, squared errors for
    ``"rmse"``), or one such row per run (seeds, or sites). Rows over the same test records
    (``joint``, same lengths) are resampled together, so the interval belongs to their mean;
    rows over different records (``joint=False``, or different lengths) each on their own.
    """
    rows = [np.asarray(r, float) for r in (values if _is_rows(values) else [values])]
    joint = joint and len({len(r) for r in rows}) == 1
    rng = np.random.default_rng(seed)
    shared = rng.integers(0, len(rows[0]), size=(n_boot, len(rows[0]))) if joint else None
    stats = np.zeros(n_boot)
    for row in rows:  # one row at a time: [boot, records] stays small
        idx = shared if joint else rng.integers(0, len(row), size=(n_boot, len(row)))
        stats += SCORES[score](row[idx])
    lo, hi = np.quantile(stats / len(rows), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _is_rows(values) -> bool:
    if isinstance(values, np.ndarray):
        return values.ndim == 2
    return len(values) > 0 and np.ndim(values[0]) == 1


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


# -- reading runs: every problem is one line naming the file -----------------------------------

def _read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a FedbioError saying what is wrong with the file."""
    redo = "rerun that run or leave it out"
    if path.is_dir():
        raise FedbioError(f"{path}: a folder, not a file; {redo}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FedbioError(f"{path}: missing; the run is incomplete: {redo}") from None
    except OSError as err:
        raise FedbioError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise FedbioError(f"{path}: not a text file; {redo}") from None
    if not text.strip():
        raise FedbioError(f"{path}: empty (the run stopped while writing it?); {redo}")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise FedbioError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}; cut off while it "
                          f"was written?); {redo}") from None
    if not isinstance(data, dict):
        raise FedbioError(f"{path}: holds a JSON {type(data).__name__}, not a run's record (an "
                          f"object); {redo}")
    return data


def _check_metrics(m: dict, path: Path) -> None:
    """The entries the report reads, with the right types."""
    for key, kind in REQUIRED.items():
        if key not in m:
            raise FedbioError(f"{path}: no {key!r} entry (not written by fedbio run/federate, or "
                              "cut short); rerun that run or leave it out")
        if not isinstance(m[key], kind) or (kind is int and isinstance(m[key], bool)):
            raise FedbioError(f"{path}: {key!r} is {json.dumps(m[key])[:40]}, not {KIND[kind]}; "
                              "the file was edited or damaged: rerun that run")
    if m["task_type"] not in TASK_TYPES:
        raise FedbioError(f"{path}: unknown task_type {m['task_type']!r} (expected one of "
                          f"{', '.join(TASK_TYPES)}); rerun that run or leave it out")
    if not m["n_train"] or not all(_is_int(n) and n >= 0 for n in m["n_train"].values()):
        raise FedbioError(f"{path}: 'n_train' is not a count of training records per site; "
                          "the file was edited or damaged: rerun that run")
    classes = m.get("classes")
    if m["task_type"] != "regression" and not (
            isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise FedbioError(f"{path}: no 'classes' list (needed for a {m['task_type']} run); "
                          "rerun that run or leave it out")
    if m["task_type"] == "multitask":
        _check_task_scores(m["test"].get("per_task"), path)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_task_scores(per_task, path: Path) -> None:
    """A multi-task run's per-task test scores: ``{task: {"rmse": number, …}}``."""
    if not isinstance(per_task, dict) or not per_task:
        raise FedbioError(f"{path}: no per-task test scores ('test' has no 'per_task'); rerun that run")
    for task, scores in per_task.items():
        if not isinstance(scores, dict) or not all(
                isinstance(v, (int, float)) or v is None for k, v in scores.items() if k != "models"):
            raise FedbioError(f"{path}: the test scores of task {task!r} are not numbers; the file "
                              "was edited or damaged: rerun that run")


_FAILED = re.compile(r"\.failed(-\d+)?$")


def _not_a_run(d: Path) -> str | None:
    """Why ``d`` is not a finished run folder (one line, with what to do), or None if it is one."""
    if d.name.endswith(".running"):
        return (f"{d}: an unfinished run (being written, or stopped before it finished); wait for "
                "it or rerun it, and leave it out")
    if _FAILED.search(d.name):
        return f"{d}: a failed run (its error is in {d / 'error.txt'}); rerun it and leave this one out"
    if d.name.endswith(".lock"):
        return f"{d}: the lock file of a fedbio command still writing {d.name[:-5]}; leave it out"
    if d.name.startswith(".") and ".replaced" in d.name:
        return f"{d}: an old output being replaced by a newer one; leave it out"
    if not d.exists():
        return f"{d}: no such run folder"
    if not d.is_dir():
        if d.name == "metrics.json":
            return f"{d}: give the run folder ({d.parent}), not its metrics.json"
        return f"{d}: a file, not a run folder; give folders written by fedbio run or federate"
    if (d / "metrics.json").exists():
        return None
    return _what_else(d)


def _what_else(d: Path) -> str:
    """A folder without metrics.json: say what it looks like, so a glob's catch is plain."""
    if (d / "results.md").exists():
        return (f"{d}: a fedbio report, not a run; leave it out (a glob such as "
                f"{d.parent / '*'} matches it)")
    if (d / "summary.json").exists() or (d / "tasks.json").exists():
        return f"{d}: a split folder, not a run; give the runs made from it"
    if (d / "config.json").exists():
        return (f"{d}: a run that never finished (no metrics.json); rerun it with --overwrite "
                "or leave it out")
    for inner in (d, d / "runs"):  # `fedbio report runs` for `runs/*`, or a demo folder
        held = sorted(p.parent.name for p in inner.glob("*/metrics.json")) if inner.is_dir() else []
        if held:
            more = ", …" if len(held) > 3 else ""
            return f"{d}: holds runs ({', '.join(held[:3])}{more}) but is not one; give them: {inner / '*'}"
    return f"{d}: not a finished run (no metrics.json); give folders written by fedbio run or federate"


def group_name(m: dict) -> str:
    """What a run is (``model · mode``): seeds of the same run group together."""
    model = "composition" if m["model"] == "composition" else Path(m["model"]).name
    return f"{model} · {m['mode']}"


def load_runs(run_dirs: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """Each run folder and its checked metrics; refuses non-runs and a run given twice."""
    if not run_dirs:
        raise FedbioError("no run folders given; give the folders written by fedbio run or federate")
    runs, seen = [], {}
    for d in map(Path, run_dirs):
        reason = _not_a_run(d)
        if reason:
            raise FedbioError(reason)
        real = os.path.realpath(d)
        if real in seen:
            same = "is given twice" if str(seen[real]) == str(d) else f"and {seen[real]} are the same folder"
            raise FedbioError(f"{d} {same}; give each run once")
        seen[real] = d
        runs.append((d, load_metrics(d)))
    return runs


def _check_seeds(runs: list[tuple[Path, dict]]) -> None:
    """Two runs of one kind with one seed (a copy, or a rerun) would count that seed twice."""
    first: dict[tuple[str, int], Path] = {}
    for d, m in runs:
        key = (group_name(m), m["seed"])
        if key in first:
            raise FedbioError(f"{first[key]} and {d} are both '{key[0]}' runs with seed {key[1]}: the "
                              "mean over seeds would count that seed twice; leave one out")
        first[key] = d


def collect(run_dirs: Sequence[str | Path], allow_mixed: bool = False) -> Groups:
    """Group run folders by what they are (``model · mode``); seeds of the same run group together.

    Every run is checked (see the module docstring); runs that are not comparable are refused
    unless ``allow_mixed``.
    """
    runs = load_runs(run_dirs)
    check_comparable(runs, allow_mixed)
    return group_runs(runs)


def group_runs(runs: list[tuple[Path, dict]]) -> Groups:
    groups: Groups = {}
    for d, m in runs:
        groups.setdefault(group_name(m), []).append((d, m))
    return groups


# -- are the runs comparable? ------------------------------------------------------------------

def _data_md5(d: Path) -> dict | None:
    """The split files' checksums the run recorded (None: no manifest.json to tell)."""
    path = d / "manifest.json"
    if not path.exists():
        return None
    md5 = _read_json(path).get("data_md5")
    return md5 if isinstance(md5, dict) else None


def _differ_classes(a: dict, b: dict) -> str | None:
    ca, cb = a.get("classes") or [], b.get("classes") or []
    if set(ca) == set(cb):
        return None
    only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
    what = "tasks" if a["task_type"] == "multitask" else "class lists"
    parts = [f"only the first has {', '.join(only_a[:3])}" if only_a else "",
             f"only the second has {', '.join(only_b[:3])}" if only_b else ""]
    return f"differ in {what} ({'; '.join(p for p in parts if p)})"


def _differ_sites(a: dict, b: dict) -> str | None:
    sa, sb = list(a["n_train"]), list(b["n_train"])
    if set(sa) == set(sb):
        return None
    return f"differ in sites ({', '.join(sa)} vs {', '.join(sb)})"


def _differ_data(a: Path, b: Path, seed: int, md5: dict[Path, dict | None]) -> str | None:
    missing = [d for d in (a, b) if md5[d] is None]
    if missing:
        return (f"both have seed {seed}, but {missing[0] / 'manifest.json'} holds no data checksums "
                "to show they used the same split")
    changed = sorted(k for k in set(md5[a]) | set(md5[b]) if md5[a].get(k) != md5[b].get(k))
    if not changed:
        return None
    more = ", …" if len(changed) > 3 else ""
    return (f"both have seed {seed} but were made from different split files "
            f"({', '.join(changed[:3])}{more} differ)")


# The settings that make a run what it is (config.json): seeds grouped as one run share them.
# Not compared: seeds, where the split and weights lie, threads, device, and simulator knobs.
SETTINGS = {"model": ("name", "backend", "tuning", "head_hidden", "dropout", "lora_r", "lora_alpha",
                      "lora_dropout"),
            "data": ("task", "max_length", "crop", "setup", "source"),
            "train": ("epochs", "lr", "batch_size", "weight_decay", "warmup_frac", "grad_clip"),
            "federation": ("algorithm", "rounds", "mu", "server_optimizer", "server_lr",
                           "server_momentum", "private_heads")}


def _settings(d: Path) -> dict[str, object] | None:
    """``section.key -> value`` of ``SETTINGS`` from the run's config.json (None: no config.json)."""
    path = d / "config.json"
    if not path.exists():
        return None
    config = _read_json(path)
    return {f"{part}.{key}": (config.get(part) or {}).get(key)
            for part, keys in SETTINGS.items() for key in keys}


def _differ_settings(a: dict | None, b: dict | None, group: str) -> str | None:
    if a is None or b is None:
        return None
    changed = [k for k in a if a[k] != b[k]]
    if not changed:
        return None
    shown = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in changed[:2])
    return f"are both '{group}' runs but differ in settings ({shown}); seeds of one run share its settings"


def _differences(runs: list[tuple[Path, dict]]):
    """(run, other run, what differs): each run against the first run, against the first run of
    its seed (same seed, same split files), and against the first run of its group (same
    settings)."""
    d0, m0 = runs[0]
    md5 = {d: _data_md5(d) for d, _ in runs}  # every manifest read: a broken one is always said
    settings = {d: _settings(d) for d, _ in runs}
    first_of_seed: dict[int, Path] = {}
    first_of_group: dict[str, Path] = {}
    for d, m in runs:
        if d is not d0:
            for why in (_differ_classes(m0, m), _differ_sites(m0, m)):
                if why:
                    yield d0, d, why
        ref = first_of_seed.setdefault(m["seed"], d)
        why = _differ_data(ref, d, m["seed"], md5) if ref is not d else None
        if why:
            yield ref, d, why
        ref = first_of_group.setdefault(group_name(m), d)
        why = _differ_settings(settings[ref], settings[d], group_name(m)) if ref is not d else None
        if why:
            yield ref, d, why


def check_comparable(runs: list[tuple[Path, dict]], allow_mixed: bool = False) -> list[str]:
    """Refuse runs that are not like for like; with ``allow_mixed``, return what differs instead.

    A task type never mixes, nor does a seed appear twice in one group. Class lists and sites
    must match the first run's; runs of the same seed must come from the same split files (other
    seeds legitimately draw other splits); the seeds of one group must share its settings.
    """
    d0, m0 = runs[0]
    for d, m in runs[1:]:
        if m["task_type"] != m0["task_type"]:
            raise FedbioError(f"{d0} is a {m0['task_type']} run but {d} a {m['task_type']} run; a "
                              "report tables runs of one task type: report them separately")
    notes = []
    for a, b, why in _differences(runs):
        if not allow_mixed:
            raise FedbioError(f"{a} and {b} {why}; their scores are not comparable: report them "
                              "separately, or pass --allow-mixed to table them anyway")
        notes.append(f"{a} and {b} {why}")
    _check_seeds(runs)  # after: two runs of one seed on different splits are told as such
    return notes


def check_n_boot(n_boot: int) -> None:
    """Fewer than ``MIN_BOOT`` resamples make a 95 % interval's ends noise; more than
    ``MAX_BOOT`` only cost time."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not MIN_BOOT <= n_boot <= MAX_BOOT:
        raise FedbioError(f"--n-boot {n_boot}: give {MIN_BOOT} to {MAX_BOOT} bootstrap resamples "
                          "(1000 is the default)")


# -- per-record scores from the kept predictions ------------------------------------------------

def _prediction_files(run_dir: Path, metrics: dict) -> dict[str, Path]:
    """Per-site test predictions of a run (local: each site's own model; else the delivered one)."""
    if metrics["mode"] == "local":
        return {s: run_dir / s / "test_predictions.csv" for s in metrics["n_train"]}
    return {s: run_dir / "test_predictions.csv" for s in metrics["n_train"]}


def load_predictions(path: Path, metrics: dict):
    """A run's test predictions, checked against the run: a FedbioError names the file."""
    import pandas as pd

    redo = "rerun that run or leave it out"
    if not path.is_file():
        raise FedbioError(f"{path}: missing (the report needs each run's test predictions); {redo}")
    try:
        p = read_predictions(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise FedbioError(f"{path}: not a predictions table ({str(err).splitlines()[0][:80]}); {redo}") from None
    missing = [c for c in ("id", "label", "predicted") if c not in p.columns]
    if missing:
        raise FedbioError(f"{path}: no {', '.join(missing)} column; {redo}")
    if p.empty:
        raise FedbioError(f"{path}: no rows; {redo}")
    if metrics["task_type"] == "classification":
        _check_classes(p, path, metrics["classes"])
    else:
        for col in ("label", "predicted"):
            p[col] = _numbers(p[col], path, col)
    return p.sort_values("id", kind="stable").reset_index(drop=True)


def _check_classes(p, path: Path, classes: list[str]) -> None:
    for col in ("label", "predicted"):
        bad = ~p[col].isin(classes)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise FedbioError(f"{path}:{row + 2}: {col} {p[col].iloc[row]!r} is not one of the run's "
                              "classes (metrics.json); the file does not belong to this run: rerun it")


def _numbers(column, path: Path, name: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise FedbioError(f"{path}:{row + 2}: {name} {column.iloc[row]!r} is not a number; "
                          "rerun that run or leave it out")
    return values


def record_values(p, task_type: str) -> np.ndarray:
    """Per record: 1/0 hit (classification) or squared error (regression)."""
    if task_type == "classification":
        return (p["label"].to_numpy() == p["predicted"].to_numpy()).astype(float)
    return (p["predicted"].to_numpy(float) - p["label"].to_numpy(float)) ** 2


class _Predictions:
    """Each predictions file read and checked once (central and federated runs share one file
    across all sites)."""

    def __init__(self):
        self.cache: dict[Path, object] = {}

    def frame(self, path: Path, metrics: dict):
        if path not in self.cache:
            self.cache[path] = load_predictions(path, metrics)
        return self.cache[path]

    def values(self, run_dir: Path, metrics: dict, site: str) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, per-record values) of the model ``site`` ends with."""
        p = self.frame(_prediction_files(run_dir, metrics)[site], metrics)
        return p["id"].to_numpy(), record_values(p, metrics["task_type"])


# -- the tables ------------------------------------------------------------------------------

def _cell(rows: list[tuple[np.ndarray, np.ndarray]], per_seed: np.ndarray, score: str,
          n_boot: int) -> str:
    """``mean ± sd [lo, hi]``: spread over seeds, bootstrap interval over the test records."""
    joint = all(np.array_equal(rows[0][0], ids) for ids, _ in rows)
    lo, hi = bootstrap_ci([v for _, v in rows], n_boot, score=score, joint=joint)
    scale, fmt = (100.0, ".1f") if score == "mean" else (1.0, ".3g")
    spread = f" ± {per_seed.std(ddof=1) * scale:{fmt}}" if len(per_seed) > 1 else ""
    return f"{per_seed.mean() * scale:{fmt}}{spread} [{lo * scale:{fmt}}, {hi * scale:{fmt}}]"


def _sites(groups: Groups) -> list[str]:
    """Every site of every run, in the order first seen (runs agree unless --allow-mixed)."""
    return list(dict.fromkeys(s for runs in groups.values() for _, m in runs for s in m["n_train"]))


def seed_table(groups: Groups, n_boot: int = 1000, predictions: _Predictions | None = None):
    """Rows site-1…N and average; per group: mean ± sd over seeds [bootstrap 95 % interval].

    Accuracy (%) for classification, RMSE (the label's units) for regression. The interval
    resamples the test records (jointly over the seeds' runs when they share a test set), so it
    says how much the mean could move with another test sample of the same size. ``# samples``
    is the training records of the first run holding that site.
    """
    import pandas as pd

    predictions = predictions or _Predictions()
    score = "mean" if _task_type(groups) == "classification" else "rmse"
    sites = _sites(groups)
    first_n = {}
    for runs in groups.values():
        for _, m in runs:
            for s, n in m["n_train"].items():
                first_n.setdefault(s, n)
    rows = {s: {"# samples": first_n[s]} for s in sites}
    rows["average"] = {"# samples": sum(first_n.values())}
    for name, runs in groups.items():
        got = [{s: predictions.values(d, m, s) for s in m["n_train"]} for d, m in runs]  # per run
        for s in sites:
            cells = [g[s] for g in got if s in g]
            per_seed = np.array([_score(v, score) for _, v in cells])
            rows[s][name] = _cell(cells, per_seed, score, n_boot) if cells else "—"
        per_seed = np.array([np.mean([_score(v, score) for _, v in g.values()]) for g in got])
        rows["average"][name] = _cell([c for g in got for c in g.values()], per_seed, score, n_boot)
    return pd.DataFrame(rows).T


def _score(values: np.ndarray, score: str) -> float:
    """One run's score from its per-record values (accuracy, or RMSE)."""
    return float(SCORES[score](values[None, :])[0])


def _task_type(groups: Groups) -> str:
    return next(iter(groups.values()))[0][1]["task_type"]


# -- the report ------------------------------------------------------------------------------

def write_report(run_dirs: Sequence[str | Path], out: str | Path, n_boot: int = 1000,
                 overwrite: bool = False, allow_mixed: bool = False) -> tuple[Path, list[str]]:
    """``fedbio report``: markdown + CSV table, curves, and for classification confusion
    matrices and per-class accuracy. Returns ``out`` and the names of the files written.

    Everything is checked and computed before ``out`` is touched; see the module docstring for
    what is refused. ``n_boot`` (``MIN_BOOT``…``MAX_BOOT``) is unused by multi-task reports, whose
    intervals come from the runs' own per-task bootstraps.
    """
    from fedbio.outputs import check_output, output_dir

    check_n_boot(n_boot)
    runs = load_runs(run_dirs)
    notes = check_comparable(runs, allow_mixed)
    groups = group_runs(runs)
    inputs = [d for d, _ in runs]
    check_output(out, overwrite=overwrite, inputs=inputs, kind="report")  # before the work
    if _task_type(groups) == "multitask":
        from fedbio.report_tasks import task_report

        report = task_report(groups, notes)
    else:
        report = _seed_report(groups, n_boot, notes)
    with output_dir(out, overwrite=overwrite, inputs=inputs, kind="report") as tmp:
        files = report.write(tmp)
    print(report.summary)
    for note in notes:  # results.md says it too; the terminal should not hide it
        print(f"note (--allow-mixed): {note}", file=sys.stderr)
    return Path(out), files


class Report:
    """What a report writes: text files and figures, all computed before the output exists."""

    def __init__(self, texts: dict[str, str], figures: dict[str, Callable], summary: str):
        self.texts, self.figures, self.summary = texts, figures, summary

    def write(self, folder: Path) -> list[str]:
        import matplotlib.pyplot as plt

        for name, text in self.texts.items():
            (folder / name).write_text(text)
        for name, draw in self.figures.items():
            fig = draw()
            fig.savefig(folder / name, dpi=110, bbox_inches="tight")
            plt.close(fig)
        return [*self.texts, *self.figures]


def mixed_lines(notes: list[str]) -> list[str]:
    """The results.md paragraph that says the columns are not like for like (--allow-mixed)."""
    if not notes:
        return []
    return ["**Mixed runs (--allow-mixed):** these runs come from different splits, sites or "
            "class lists, so their columns do not compare like for like:", "",
            *(f"- {n}" for n in notes), ""]


def markdown(table) -> str:
    return table.to_markdown() if _has_tabulate() else table.to_string()


def _seed_report(groups: Groups, n_boot: int, notes: list[str]) -> Report:
    """Classification or regression: the seed table and its figures."""
    predictions = _Predictions()
    table = seed_table(groups, n_boot, predictions)
    task_type = _task_type(groups)
    seeds = {name: sorted(m["seed"] for _, m in runs) for name, runs in groups.items()}
    what = ("Test accuracy (%)" if task_type == "classification"
            else "Test RMSE (the label's units; lower is better)")
    lines = ["# Results", "", *mixed_lines(notes),
             f"{what} of the model each site ends with: mean ± sd over seeds [bootstrap 95 % "
             "interval over the test records, resampled jointly across the seeds' runs when they "
             "share a test set].", "", markdown(table), "",
             "Seeds: " + "; ".join(f"{k}: {v}" for k, v in seeds.items()), ""]
    firsts = {name: runs[0][1] for name, runs in groups.items()}
    figures = {"curves.png": lambda: plot_curves(firsts, CURVE_KEY[task_type])}
    if task_type == "classification":
        figures["confusion.png"] = lambda: _confusions(groups, predictions)
        figures["per_class.png"] = lambda: plot_per_class(_per_class(groups, predictions))
        for runs in groups.values():  # read (and check) the files the figures use, before writing
            predictions.frame(next(iter(_prediction_files(*runs[0]).values())), runs[0][1])
    return Report({"results.csv": table.to_csv(), "results.md": "\n".join(lines)}, figures,
                  table.to_string())


def _first_predictions(runs: list[tuple[Path, dict]], predictions: _Predictions):
    d, m = runs[0]
    path = next(iter(_prediction_files(d, m).values()))
    return path, m, predictions.frame(path, m)


def _confusions(groups: Groups, predictions: _Predictions):
    import matplotlib.pyplot as plt

    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.8), squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items(), strict=True):
        path, m, p = _first_predictions(runs, predictions)
        plot_confusion(confusion(p["label"], p["predicted"], m["classes"]), m["classes"], ax=ax,
                       title=f"{name} ({path.parent.name if m['mode'] == 'local' else 'delivered'})")
    fig.tight_layout()
    return fig


def _per_class(groups: Groups, predictions: _Predictions) -> dict[str, dict[str, float]]:
    out = {}
    for name, runs in groups.items():
        _, m, p = _first_predictions(runs, predictions)
        out[name] = per_class_accuracy(p["label"], p["predicted"], m["classes"])
    return out


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
