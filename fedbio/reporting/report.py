"""Results tables and curves from ``metrics.json`` files, shaped like the reference's table.

    from fedbio.reporting.report import results_table
    results_table({"local": local_metrics, "central": central_metrics})

Rows are the sites and their average; columns are ``# samples`` and one column per run (local,
central, FedAvg, …), each the test score of the model that site ends with.

``fedbio report RUN... --out DIR`` (:func:`write_report`) tables many runs as mean ± sd over
seeds with bootstrap intervals. Before anything is written it checks what it is given
(``fedbio.reporting.runs``: finished runs of one task type, comparable unless ``--allow-mixed``)
and every test predictions file it reads; ``--n-boot`` is ``MIN_BOOT`` (100: fewer resamples
make the ends of a 95 % percentile interval noise) to ``MAX_BOOT``. Figures: ``fedbio.reporting.curves``.
``DIR`` follows :mod:`fedbio.outputs` (refused if non-empty without ``--overwrite``, or if it is,
holds or lies inside one of the runs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from fedbio.errors import FedbioError
from fedbio.reporting.curves import (  # noqa: F401  (plot_curves and friends: fedbio.reporting.report's API)
    CURVE_KEY,
    CURVE_LABEL,
    confusion,
    epoch_curves,
    per_class_accuracy,
    plot_confusion,
    plot_curves,
    plot_per_class,
    round_curves,
)
from fedbio.reporting.document import Report, markdown, mixed_lines
from fedbio.reporting.fluid import model_section, site_files
from fedbio.reporting.leakage import leakage_cells, privacy_utility
from fedbio.reporting.runs import (  # noqa: F401  (collect and load_metrics: fedbio.reporting.report's API)
    MAX_BOOT,
    MIN_BOOT,
    Groups,
    check_comparable,
    check_n_boot,
    collect,
    epsilon_cell,
    group_runs,
    load_metrics,
    load_runs,
    record_epsilon_cell,
)


def _metric(metrics: dict) -> str:
    return "accuracy" if metrics["task_type"] == "classification" else "rmse"


def results_table(runs: Mapping[str, dict], metric: str | None = None, percent: bool = True,
                  digits: int | None = 2):
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
    frame = pd.DataFrame(table, index=[*sites, "average", "delivered"])
    return frame if digits is None else frame.round(digits)


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
    return values.ndim == 2 if isinstance(values, np.ndarray) else len(values) > 0 and np.ndim(values[0]) == 1


# -- per-record scores from the kept predictions ------------------------------------------------

def _prediction_files(run_dir: Path, metrics: dict) -> dict[str, Path]:
    """Per-site test predictions of the model each site ends with: local, its own model;
    federated, its model after the last round (``sites/<site>/``, on a deployment in the site's
    kit when readable here; else the delivered model's); FLuID: ``site_files``; central: one."""
    if metrics["mode"] in ("local", "fluid"):
        return ({s: run_dir / s / "test_predictions.csv" for s in metrics["n_train"]}
                if metrics["mode"] == "local" else site_files(run_dir, metrics))
    homes = (metrics.get("deployment") or {}).get("site_records") or {}
    kept = {s: Path(homes.get(s, run_dir)) / "sites" / s / "test_predictions.csv" for s in metrics["n_train"]}
    return {s: path if path.is_file() else run_dir / "test_predictions.csv" for s, path in kept.items()}


def _delivered_file(run_dir: Path, metrics: dict) -> Path | None:
    """Test predictions of the model a run hands over (none for a local run)."""
    return None if metrics["mode"] == "local" else run_dir / "test_predictions.csv"


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

    def values(self, run_dir: Path, metrics: dict, site: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, per-record values) of the model ``site`` ends with (None: the delivered
        model)."""
        path = _delivered_file(run_dir, metrics) if site is None else _prediction_files(run_dir, metrics)[site]
        p = self.frame(path, metrics)
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
    """Rows site-1…N, their average, and ``delivered`` (the model the run hands over: central or
    the federation's global model; none for local runs); per group: mean ± sd over seeds
    [bootstrap 95 % interval].

    Accuracy (%) for classification, RMSE (the label's units) for regression. The interval
    resamples the test records (jointly over the seeds' runs when they share a test set), so it
    says how much the mean could move with another test sample of the same size. ``# samples``
    is the training records of the first run holding that site.
    """
    import pandas as pd

    predictions = predictions or _Predictions()
    score = "mean" if _task_type(groups) == "classification" else "rmse"
    sites = _sites(groups)
    first_n = {s: n for runs in reversed(groups.values()) for _, m in reversed(runs)  # the first run wins
               for s, n in m["n_train"].items()}
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
        if all(_delivered_file(d, m) is not None for d, m in runs):
            cells = [predictions.values(d, m, None) for d, m in runs]
            per_seed = np.array([_score(v, score) for _, v in cells])
            rows.setdefault("delivered", {"# samples": ""})[name] = _cell(cells, per_seed, score, n_boot)
    if "delivered" in rows:
        rows["delivered"] = {name: rows["delivered"].get(name, "—") for name in ["# samples", *groups]}
    if any(_has(m, "clip") for runs in groups.values() for _, m in runs):
        rows["ε (site-level DP)"] = {"# samples": "", **{name: epsilon_cell(runs)
                                                         for name, runs in groups.items()}}
    if any(_has(m, "dp_sgd") for runs in groups.values() for _, m in runs):
        rows["ε (DP-SGD, max over sites)"] = {"# samples": "", **{name: record_epsilon_cell(runs)
                                                                  for name, runs in groups.items()}}
    leak = {name: leakage_cells(runs) for name, runs in groups.items()}
    for row in next(iter(leak.values())):
        if any(cells[row] != "—" for cells in leak.values()):
            rows[row] = {"# samples": "", **{name: cells[row] for name, cells in leak.items()}}
    return pd.DataFrame(rows).T


def _has(m: dict, key: str) -> bool:
    """The run's ``privacy`` block holds ``key`` (``clip``: site-level DP, ``dp_sgd``: DP-SGD)."""
    p = m.get("privacy")
    return isinstance(p, dict) and p.get(key) is not None


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
        from fedbio.reporting.tasks import task_report

        report = task_report(groups, notes)
    else:
        report = _seed_report(groups, n_boot, notes)
    with output_dir(out, overwrite=overwrite, inputs=inputs, kind="report") as tmp:
        files = report.write(tmp)
    print(report.summary)
    for note in notes:  # results.md says it too; the terminal should not hide it
        print(f"note (--allow-mixed): {note}", file=sys.stderr)
    return Path(out), files


def _seed_report(groups: Groups, n_boot: int, notes: list[str]) -> Report:
    """Classification or regression: the seed table and its figures."""
    predictions = _Predictions()
    table = seed_table(groups, n_boot, predictions)
    task_type = _task_type(groups)
    seeds = {name: sorted(m["seed"] for _, m in runs) for name, runs in groups.items()}
    what = ("Test accuracy (%)" if task_type == "classification"
            else "Test RMSE (the label's units; lower is better)")
    lines = ["# Results", "", *mixed_lines(notes),
             f"{what} of the model each site ends with (local: its own; federated: its model "
             "after the last round; FLuID: its hybrid, or without hybrids its teacher; central: "
             "the one model), and of the model the run delivers (central, the federation's global "
             "model, or FLuID's student; a local run delivers none): mean ± sd "
             "over seeds [bootstrap 95 % interval over the test records, resampled jointly across "
             "the seeds' runs when they share a test set].", "", markdown(table), "",
             "Seeds: " + "; ".join(f"{k}: {v}" for k, v in seeds.items()), ""]
    if any(_has(m, "clip") for runs in groups.values() for _, m in runs):
        lines += ["ε (site-level DP): DP-FedAvg's epsilon (Opacus RDP accountant; the protected "
                  "unit is a site's whole data set).", ""]
    if any(_has(m, "dp_sgd") for runs in groups.values() for _, m in runs):
        lines += ["ε (DP-SGD): record-level epsilon over every step a site (or model) took, the "
                  "largest of the sites' (Opacus RDP accountant; the protected unit is one record).", ""]
    if any(m.get("privacy") and m["mode"] not in ("local", "central")
           for runs in groups.values() for _, m in runs):
        lines += ["A federated DP run's sites send no scores of their own models, so its site "
                  "rows show the delivered model.", ""]
    firsts = {name: runs[0][1] for name, runs in groups.items()}
    figures = {"curves.png": lambda: plot_curves(firsts, CURVE_KEY[task_type])}
    if "membership AUC" in table.index:
        lines += ["Membership AUC and TPR at 1 % FPR: `fedbio attack membership` on each run's "
                  "delivered model (the stronger of its attacks; members: the sites' training "
                  "records, non-members: their validation records), mean ± sd over seeds. 0.5 "
                  "means the attack did no better than chance.", ""]
        tradeoff = privacy_utility(groups, lambda d, m, s: predictions.values(d, m, s)[1], _delivered_file) if task_type == "classification" else None
        if tradeoff is not None:
            from fedbio.reporting.privacy_plots import plot_privacy_utility

            figures["privacy.png"] = lambda: plot_privacy_utility(tradeoff)
    texts = {"results.csv": table.to_csv()}
    if task_type == "classification":  # models.csv and, with FLuID runs, its section and files
        more, extra, studies = model_section(groups, n_boot, predictions.frame)
        lines, texts = [*lines, *more], {**texts, **extra}
        figures["confusion.png"] = lambda: _confusions(groups, predictions)
        figures["per_class.png"] = lambda: plot_per_class(_per_class(groups, predictions))
        figures.update(studies)
        for runs in groups.values():  # read (and check) the files the figures use, before writing
            predictions.frame(next(iter(_prediction_files(*runs[0]).values())), runs[0][1])
    return Report({**texts, "results.md": "\n".join(lines)}, figures, table.to_string())


def _first_predictions(runs: list[tuple[Path, dict]], predictions: _Predictions):
    d, m = runs[0]
    path = next(iter(_prediction_files(d, m).values()))
    return path, m, predictions.frame(path, m)


def _confusions(groups: Groups, predictions: _Predictions):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 4.8), squeeze=False)
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
