"""The report's models table (accuracy, macro-F1, MCC) and its FLuID section.

    lines, texts, figures = model_section(groups, n_boot, predictions.frame)

``model_table``: one row per model a run delivers (a local run: its sites' own models, mean over
sites; a federation or central: the delivered model; FLuID: the student, and the sites' hybrids,
mean over sites, as a second row), test and setHARD, mean ± sd over seeds [bootstrap 95 %
interval from the kept predictions]. ``fluid_lines``: what a FLuID run distilled from, what each
site sent against a FedAvg run, and its studies (``fluid_studies.csv``, ``fluid_studies.png``).
Where a FLuID run's per-site predictions lie: ``site_files``. Nothing here imports
``fedbio.reporting.report``: it hands over ``frame(path, metrics)``, its checked reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedbio.reporting.document import markdown

KEYS = ("accuracy", "macro_f1", "mcc")
LABEL = {"accuracy": "accuracy (%)", "macro_f1": "macro-F1", "mcc": "MCC"}
PARTS = {"test": "test", "test_hard": "setHARD"}
STUDIES = {"teachers": "teachers (K)", "public_share": "share of the public set", "weighting": "weighting",
           "selection": "selection"}   # the studies' kinds, in the order shown (others after them)
Frame = Callable[[Path, dict], object]


# -- where the predictions lie ---------------------------------------------------------------

def model_files(run_dir: Path, metrics: dict, model: str, part: str = "test") -> dict[str, Path]:
    """Each site's ``model`` (teacher | hybrid) predictions: ``RUN/sites/<site>/<model>/``, in
    the site's kit on a deployment."""
    homes = (metrics.get("deployment") or {}).get("site_records") or {}
    scored = (metrics.get("fluid") or {}).get(f"{model}_scores") or {}
    return {s: Path(homes.get(s, run_dir)) / "sites" / s / model / f"{part}_predictions.csv"
            for s in metrics["n_train"] if s in scored}


def site_files(run_dir: Path, metrics: dict) -> dict[str, Path]:
    """Test predictions of the model each FLuID site ends with: its hybrid, or its teacher when
    the run made none; the student's (the delivered model's) where those are not here."""
    hybrids = model_files(run_dir, metrics, "hybrid")
    kept = hybrids or model_files(run_dir, metrics, "teacher")
    return {s: kept[s] if s in kept and kept[s].is_file() else run_dir / "test_predictions.csv"
            for s in metrics["n_train"]}


def _rows(groups) -> dict[str, list[tuple[dict, dict, dict]]]:
    """{row: [(scores per part, prediction files per part, metrics) per run]}, in group order."""
    rows: dict[str, list] = {}
    for name, runs in groups.items():
        for d, m in runs:
            parts = {p: m.get(p) for p in PARTS}
            if m["mode"] == "local":
                files = {p: [d / s / f"{p}_predictions.csv" for s in m["n_train"]] for p in PARTS}
            else:
                files = {p: [d / f"{p}_predictions.csv"] for p in PARTS}
            rows.setdefault(f"{name} student" if m["mode"] == "fluid" else name, []).append((parts, files, m))
            hybrid = (m.get("fluid") or {}).get("hybrid_mean")
            if m["mode"] == "fluid" and hybrid:
                files = {p: list(model_files(d, m, "hybrid", p).values()) for p in PARTS}
                rows.setdefault(f"{name} hybrid", []).append(({p: hybrid.get(p) for p in PARTS}, files, m))
    return rows


# -- accuracy, macro-F1 and MCC of resampled records -------------------------------------------

def confusions(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """[B, K, K] confusion matrices (true × predicted) of B rows of class indices [B, n]."""
    b = y.shape[0]
    flat = (np.arange(b)[:, None] * k * k + y * k + p).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k).astype(float)


def class_scores(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (over the classes present on either side) and MCC of each confusion
    matrix: the numbers of ``fedbio.training.metrics``, for every resample at once."""
    n = conf.sum((1, 2))
    tp = np.diagonal(conf, axis1=1, axis2=2)
    true, pred = conf.sum(2), conf.sum(1)
    f1_den = true + pred
    present = f1_den > 0
    f1 = np.divide(2 * tp, f1_den, out=np.zeros_like(tp), where=present)
    mcc_den = np.sqrt((n ** 2 - (pred * pred).sum(1)) * (n ** 2 - (true * true).sum(1)))
    mcc = np.divide(tp.sum(1) * n - (pred * true).sum(1), mcc_den, out=np.zeros_like(n), where=mcc_den > 0)
    return {"accuracy": tp.sum(1) / n, "macro_f1": f1.sum(1) / np.maximum(present.sum(1), 1), "mcc": mcc}


def score_intervals(entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int, n_boot: int,
                    seed: int = 0, level: float = 0.95, chunk: int = 250) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the mean accuracy, macro-F1 and MCC over ``entries``
    (ids, true, predicted class indices; one per run and site), resampled jointly when they
    hold the same records (as ``fedbio.reporting.report.bootstrap_ci``), ``chunk`` at a time."""
    joint = all(np.array_equal(entries[0][0], ids) for ids, _, _ in entries)
    rng = np.random.default_rng(seed)
    stats: dict[str, list] = {key: [] for key in KEYS}
    for start in range(0, n_boot, chunk):
        b, n0 = min(chunk, n_boot - start), len(entries[0][1])
        shared = rng.integers(0, n0, size=(b, n0)) if joint else None
        total = dict.fromkeys(KEYS, 0.0)
        for _, y, p in entries:
            idx = shared if joint else rng.integers(0, len(y), size=(b, len(y)))
            for key, value in class_scores(confusions(y[idx], p[idx], k)).items():
                total[key] = total[key] + value / len(entries)
        for key in KEYS:
            stats[key].append(total[key])
    bounds = [(1 - level) / 2, (1 + level) / 2]
    return {key: tuple(float(v) for v in np.quantile(np.concatenate(s), bounds)) for key, s in stats.items()}


def _entries(files: list[tuple[Path, dict]], frame: Frame):
    import pandas as pd

    out = []
    for path, m in files:
        p = frame(path, m)
        codes = [pd.Categorical(p[c], categories=m["classes"]).codes.astype(np.int64)
                 for c in ("label", "predicted")]
        out.append((p["id"].to_numpy(), *codes))
    return out


# -- the models table ------------------------------------------------------------------------

def _format(values: list[float], key: str, interval: tuple[float, float] | None) -> str:
    scale, fmt = (100.0, ".1f") if key == "accuracy" else (1.0, ".3f")
    v = np.array(values) * scale
    cell = f"{v.mean():{fmt}}" + (f" ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else "")
    return cell + (f" [{interval[0] * scale:{fmt}}, {interval[1] * scale:{fmt}}]" if interval else "")


def model_table(groups, n_boot: int, frame: Frame, missing: list[Path] | None = None):
    """Rows: the models the runs deliver (see the module docstring); columns: accuracy (%),
    macro-F1 and MCC on test and setHARD. Scores come from each run's ``metrics.json`` (``—``
    where a run lacks one, such as MCC before it was recorded), intervals from the kept
    predictions; prediction files not here (a deployment's site kits) go into ``missing`` and
    their cells have no interval."""
    import pandas as pd

    table = {}
    for row, runs in _rows(groups).items():
        cells = {}
        for part, label in PARTS.items():
            scores = [r[0][part] or {} for r in runs]
            files = [(path, r[2]) for r in runs for path in r[1][part]]
            absent = [path for path, _ in files if not path.is_file()]
            have = [k for k in KEYS if all(s.get(k) is not None for s in scores)]
            k = max(len(r[2]["classes"]) for r in runs)  # --allow-mixed: class lists may differ
            ci = (score_intervals(_entries(files, frame), k, n_boot)
                  if have and files and not absent else None)
            if have and absent and missing is not None:
                missing.extend(absent)
            for key in KEYS:
                cells[f"{label} {LABEL[key]}"] = (_format([s[key] for s in scores], key, ci and ci[key])
                                                  if key in have else "—")
        table[row] = cells
    frame_ = pd.DataFrame(table).T
    hard = [c for c in frame_.columns if c.startswith("setHARD")]
    return frame_.drop(columns=hard) if (frame_[hard] == "—").all().all() else frame_


# -- the FLuID section -------------------------------------------------------------------------

def _fluid_groups(groups) -> dict:
    return {name: runs for name, runs in groups.items() if runs[0][1]["mode"] == "fluid"}


def _distinct(values) -> str:
    return " / ".join(dict.fromkeys(str(v) for v in values))


def _settings_line(name: str, runs) -> str:
    fl = [m["fluid"] for _, m in runs]
    return (f"**{name}** (seeds {', '.join(str(m['seed']) for _, m in runs)}): public set "
            f"{_distinct(f['public']['n'] for f in fl)} records ({_distinct(f['public']['source'] for f in fl)}); "
            f"teachers {_distinct(', '.join(f['teachers']) for f in fl)} "
            f"({_distinct(f['n_teachers'] for f in fl)}); weighting {_distinct(f['weighting'] for f in fl)}; "
            f"selection {_distinct(f['selection'] for f in fl)}; the student trained on "
            f"{_distinct(f['student'].get('rows') for f in fl)} selected rows.")


def teachers_vs_local(groups) -> str:
    """Whether each FLuID run's teachers scored what the local run of its seed scored."""
    local = {m["seed"]: m for runs in groups.values() for _, m in runs if m["mode"] == "local"}
    same, differ = [], []
    for runs in _fluid_groups(groups).values():
        for _, m in runs:
            ref = local.get(m["seed"])
            if ref is None:
                continue
            for site, t in sorted(m["fluid"].get("teacher_scores", {}).items()):
                a, b = t.get("test") or {}, ref["per_site"].get(site, {}).get("test") or {}
                if not b or any(abs(a[k] - b[k]) > 1e-6 for k in KEYS if k in a and k in b):
                    differ.append(f"seed {m['seed']} {site}: accuracy {100 * a.get('accuracy', np.nan):.1f} "
                                  f"vs {100 * b.get('accuracy', np.nan):.1f} %")
            same.append(m["seed"])
    head = ("FLuID's teachers are the sites' local models (each site trains its teacher as `--mode "
            "local` trains its model), so the table has no teacher row: ")
    if not same:
        return head + "no local run of a FLuID run's seed is here to compare them with."
    if differ:
        return head + "but here they differ from the local run of their seed (" + "; ".join(differ[:3]) + ")."
    seeds = sorted(set(same))
    return head + (f"here their test scores equal the local runs' (seed{'s' * (len(seeds) > 1)} "
                   f"{', '.join(map(str, seeds))}).")


def bytes_table(groups):
    """Bytes of the arrays each site sent: per FLuID step (first seed of each FLuID group), and
    per round and over all rounds for each run with ``bytes_per_round`` (first seed)."""
    import pandas as pd

    table: dict[str, dict] = {}
    fluid = _fluid_groups(groups)
    for name, runs in fluid.items():
        sent = runs[0][1]["fluid"].get("bytes_sent") or {}
        head = "FLuID" if len(fluid) == 1 else name
        for site, steps in sent.items():
            for step, size in steps.items():
                table.setdefault(f"{head}: {step}", {})[site] = str(int(size))
            table.setdefault(f"{head}: total", {})[site] = str(int(sum(steps.values())))
    for name, runs in groups.items():
        rounds = runs[0][1].get("bytes_per_round")
        if runs[0][1]["mode"] == "fluid" or not rounds:
            continue
        for site in dict.fromkeys(s for r in rounds for s in r.get("up", {})):
            per = [int(r["up"].get(site, 0)) for r in rounds]
            table.setdefault(f"{name}: per round", {})[site] = (
                str(per[0]) if len(set(per)) == 1 else f"{min(per)}–{max(per)}")
            table.setdefault(f"{name}: {len(rounds)} rounds", {})[site] = str(sum(per))
    return pd.DataFrame(table).fillna("—")


def _own(f: dict, kind: str):
    """The run's own student's value of a study's ``kind`` (K teachers, share 1.0, its weighting…)."""
    if kind == "teachers":
        return f["n_teachers"]
    own = f["student"].get(kind, f.get(kind))
    return float(own if own is not None else 1.0) if kind == "public_share" else own


def _kinds(rows) -> list[str]:
    found = list(dict.fromkeys(r["study"] for r in rows if r["study"] != "reference"))
    return sorted(found, key=lambda k: list(STUDIES).index(k) if k in STUDIES else len(STUDIES))


def study_rows(groups) -> list[dict]:
    """The studies behind ``fluid_studies.png``: per FLuID group, study and value, the mean and sd
    over subsets and seeds of each score; the run's own student is the point of its own value
    (K teachers, the whole public set, its weighting, its selection); ``reference``: the
    teachers (the local models), mean over sites."""
    out = []
    for name, runs in _fluid_groups(groups).items():
        runs = [m for _, m in runs if m["fluid"].get("studies")]
        points: dict[tuple, list[dict]] = {}
        for m in runs:
            own = {"test": m["test"], "test_hard": m.get("test_hard"), "student": True}
            for kind in dict.fromkeys(s["kind"] for s in m["fluid"]["studies"]):
                points.setdefault((kind, _own(m["fluid"], kind)), []).append(own)
            for s in m["fluid"]["studies"]:
                points.setdefault((s["kind"], s["value"]), []).append(s)
        rows = [_study_row(name, kind, value, rows, [m["seed"] for m in runs])
                for (kind, value), rows in points.items()]
        kinds = _kinds(rows)
        out += sorted(rows, key=lambda r: (kinds.index(r["study"]), *(
            (0, r["value"], "") if isinstance(r["value"], (int, float)) else (1, 0, str(r["value"])))))
        if runs:
            ref = [m["fluid"]["teacher_mean"] for m in runs]
            out.append(_study_row(name, "reference", "local models (teachers), mean over sites", ref,
                                  [m["seed"] for m in runs]))
    return out


def _study_row(group: str, kind: str, value, rows: list[dict], seeds: list[int]) -> dict:
    row = {"group": group, "study": kind, "value": value, "n": len(rows),
           "student": any(r.get("student") for r in rows), "seeds": " ".join(map(str, seeds))}
    for part in PARTS:
        for key in KEYS:
            v = [r[part][key] for r in rows if (r.get(part) or {}).get(key) is not None]
            row[f"{part}_{key}_mean"] = float(np.mean(v)) if v else np.nan
            row[f"{part}_{key}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else np.nan
    return row


def _mean_sd(mean: float, sd: float, key: str) -> str:
    scale, fmt = (100.0, ".1f") if key == "accuracy" else (1.0, ".3f")
    if np.isnan(mean):
        return "—"
    return f"{mean * scale:{fmt}}" + ("" if np.isnan(sd) else f" ± {sd * scale:{fmt}}")


def studies_markdown(rows: list[dict]) -> str:
    """The studies as results.md shows them: accuracy and MCC, test and setHARD, mean ± sd."""
    import pandas as pd

    one = len({r["group"] for r in rows}) == 1
    table = []
    for r in rows:
        cells = {} if one else {"group": r["group"]}
        cells.update({"study": r["study"],
                      "value": f"{r['value']} (the student)" if r["student"] else str(r["value"]), "n": r["n"]})
        for part, label in PARTS.items():
            for key in ("accuracy", "mcc"):
                cells[f"{label} {LABEL[key]}"] = _mean_sd(r[f"{part}_{key}_mean"], r[f"{part}_{key}_sd"], key)
        table.append(cells)
    frame = pd.DataFrame(table)
    frame = frame.loc[:, (frame != "—").any()]  # no setHARD columns for runs without setHARD
    return markdown(frame.set_index(frame.columns[0]).rename_axis(None))


def plot_studies(rows: list[dict]):
    """Student MCC and accuracy (test) against each study's value (the number of teachers, the
    public share, the weighting, …); mean ± sd over subsets and seeds; the local models' mean as
    a dashed line."""
    import matplotlib.pyplot as plt

    kinds = _kinds(rows)
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.7 * len(kinds), 6), squeeze=False)
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for g, group in enumerate(groups):
        colour, who = plt.get_cmap("tab10")(g % 10), f"{group}: " if len(groups) > 1 else ""
        mine = [r for r in rows if r["group"] == group]
        ref = next(r for r in mine if r["study"] == "reference")
        for i, (key, scale) in enumerate((("mcc", 1), ("accuracy", 100))):
            for j, kind in enumerate(kinds):
                ax, pts = axes[i, j], [r for r in mine if r["study"] == kind]
                numeric = all(isinstance(r["value"], (int, float)) for r in pts)
                x = [r["value"] if numeric else str(r["value"]) for r in pts]
                y = [scale * r[f"test_{key}_mean"] for r in pts]
                err = [0 if np.isnan(r[f"test_{key}_sd"]) else scale * r[f"test_{key}_sd"] for r in pts]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=f"{who}student",
                            ls="-" if numeric else "none")
                ax.axhline(scale * ref[f"test_{key}_mean"], color=colour, ls="--", lw=1,
                           label=f"{who}local models (the teachers), mean over sites")
                ax.set_xlabel(STUDIES.get(kind, kind))
                if kind == "teachers":
                    ax.xaxis.get_major_locator().set_params(integer=True)
                elif not numeric:
                    ax.margins(x=0.5)
                ax.set_ylabel(f"student test {LABEL[key]}")
                ax.spines[["top", "right"]].set_visible(False)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("FLuID studies: mean ± sd over teacher subsets and seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def fluid_lines(groups) -> tuple[list[str], dict[str, str], dict[str, Callable]]:
    """results.md's FLuID section, and ``fluid_studies.csv`` / ``.png`` when runs made studies."""
    import pandas as pd

    fluid = _fluid_groups(groups)
    if not fluid:
        return [], {}, {}
    lines = ["## FLuID", "", *(_settings_line(n, r) for n, r in fluid.items()), "", teachers_vs_local(groups), "",
             "What each site sent (bytes of the arrays it sent, metrics.json's `fluid.bytes_sent`; "
             "scores and other scalars are not counted, for FLuID or FedAvg). FLuID's sites send "
             "their annotations of the public set (`annotate`) and their applicability-domain "
             "weights (`combine`), never a weight of their models" + (
                 "; a FedAvg-style run sends its model update every round, from its "
                 "`bytes_per_round`:" if any(r[0][1].get("bytes_per_round") for r in groups.values())
                 else "; no FedAvg run is in this report to compare with:"), "",
             markdown(bytes_table(groups)), ""]
    rows = study_rows(groups)
    if not rows:
        return lines, {}, {}
    lines += ["Studies (`--fluid-studies`): students trained by the server from subsets of the "
              "teachers (every subset of each size, up to 8), from a share of the public set, and "
              "with the other weighting or selection; test and setHARD scores, mean ± sd over subsets and seeds "
              "(n); the run's own student is the full point. Figure: `fluid_studies.png`; data: "
              "`fluid_studies.csv`.", "", studies_markdown(rows), ""]
    return (lines, {"fluid_studies.csv": pd.DataFrame(rows).to_csv(index=False)},
            {"fluid_studies.png": lambda: plot_studies(rows)})


def model_section(groups, n_boot: int, frame: Frame) -> tuple[list[str], dict[str, str], dict[str, Callable]]:
    """results.md's models table and FLuID section, ``models.csv`` and the FLuID files."""
    missing: list[Path] = []
    table = model_table(groups, n_boot, frame, missing)
    lines = ["## Models", "",
             "Accuracy (%), macro-F1 and MCC (Matthews' correlation: 0 no better than chance, 1 "
             "perfect) on test and setHARD of the model each run delivers: a local run's sites' "
             "own models (mean over sites), a federation's global model, the central model, "
             "FLuID's student (trained by the server) and, from the same run, its sites' hybrids "
             "(mean over sites); mean ± sd over seeds (from metrics.json; — where a run did not "
             "record it) [bootstrap 95 % interval over the test records, from the kept "
             "predictions].", "", markdown(table), ""]
    if missing:
        lines += [f"No interval where prediction files are not readable here ({len(missing)}, such "
                  f"as {missing[0]}).", ""]
    more, texts, figures = fluid_lines(groups)
    return lines + more, {"models.csv": table.to_csv(), **texts}, figures
