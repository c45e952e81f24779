"""Splitting the antibody table: held-out antibodies, then sites by ``multitask`` or ``alltasks``.

    from fedbio.data.antibody.splits import build_antibody_split
    split = build_antibody_split("alltasks", "jain", seed=0, sites=3, alpha=1.0)   # in memory

:func:`build_antibody_split` reads the table (:mod:`fedbio.data.antibody.parsers`) and returns an
:class:`AntibodySplit`; :mod:`fedbio.data.antibody.folder` writes it. Nothing here writes files.

**Held out by antibody across all tasks.** One seeded assignment sends every distinct antibody to
train, valid or test (stratified by which tasks it has values for, so every task gets about the
requested fractions). No antibody in any task's training or validation data appears in any
task's test data; the split is checked for it before it is returned.

``multitask``: one site per task, ``site-<task>``, holding that task's train and valid rows.
``alltasks``: ``site-1`` .. ``site-N``; each task's train and valid rows are spread over every
site with label skew: the task's labels are cut into ``n_bins`` quantile bins (tied values share a
bin, so zero-heavy PSR gets three bins) and each bin draws its own Dirichlet(alpha) proportions
over the sites from the one seeded generator, as :mod:`fedbio.data.split` does per class. Every site
gets at least ``min_site_rows`` training rows and one validation row of every task (redrawn up to
``max_tries`` times). An antibody's different assays may sit at different sites; none is in test.
Same seed, same split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedbio.data.antibody.catalogue import BINDING_NOTE, LINKER, TASKS, check_source, tasks_for
from fedbio.data.antibody.parsers import load_antibody_table
from fedbio.data.split import cuts, mean_js_divergence
from fedbio.errors import FedbioError

SETUPS = ("multitask", "alltasks")
PARTS = ("train", "valid", "test")


def quantile_bins(values, n_bins: int = 4) -> np.ndarray:
    """Bin index (0..) of each value: equal-count bins by rank, tied values in one bin.

    A value's bin comes from the first rank its value holds, so a run of ties (72 zero PSR
    scores) stays in one bin and fewer than ``n_bins`` bins can come out. Indices are dense.
    """
    v = np.asarray(values, float)
    n = len(v)
    if n == 0:
        return np.zeros(0, int)
    order = np.argsort(v, kind="stable")
    ranked = v[order]
    first = np.searchsorted(ranked, ranked, side="left")
    _, dense = np.unique((first * n_bins) // n, return_inverse=True)
    bins = np.empty(n, int)
    bins[order] = dense
    return bins


@dataclass
class AntibodySplit:
    """A finished split in memory: what ``write_antibody_split`` puts on disk.

    Rows are ``(id, sequence, label, task)`` tuples, sorted by task (``TASKS`` order) and id.
    """

    meta: dict                                   # the content of tasks.json
    sites: dict[str, dict[str, list[tuple]]]     # site -> {"train": rows, "valid": rows}
    test: list[tuple]


def _assign(table: pd.DataFrame, tasks: list[str], rng: np.random.Generator,
            test_frac: float, valid_frac: float) -> dict[str, str]:
    """Antibody id -> train / valid / test, stratified by the set of tasks each antibody has."""
    present = table[tasks].notna().to_numpy()
    groups: dict[tuple, list[str]] = defaultdict(list)
    for aid, sig in zip(table["id"], map(tuple, present), strict=True):
        groups[sig].append(aid)
    parts = {}
    for sig in sorted(groups, reverse=True):
        ids = sorted(groups[sig])
        n = len(ids)
        n_test = int(round(test_frac * n))
        n_valid = min(int(round(valid_frac * n)), n - n_test)
        order = rng.permutation(n)
        for rank, i in enumerate(order):
            parts[ids[i]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return parts


def _skew(train: list[tuple], valid: list[tuple], k: int, alpha: float, n_bins: int,
          min_train: int, max_tries: int, rng: np.random.Generator, task: str):
    """Spread one task's train and valid rows over k sites, per-bin Dirichlet(alpha) proportions."""
    min_valid = min(1, len(valid) // k)
    if len(train) < k * min_train:
        raise FedbioError(f"task {task}: {len(train)} training rows cannot give {k} sites at least "
                          f"{min_train} each; lower min_site_rows or use fewer sites")
    bins = quantile_bins([r[2] for r in train + valid], n_bins)
    t_bins, v_bins = bins[: len(train)], bins[len(train):]
    n_found = int(bins.max()) + 1
    for _ in range(max_tries):
        t_parts: list[list[int]] = [[] for _ in range(k)]
        v_parts: list[list[int]] = [[] for _ in range(k)]
        for b in range(n_found):          # each bin draws its own proportions: real label skew
            props = rng.dirichlet([alpha] * k)
            for labels, parts in ((t_bins, t_parts), (v_bins, v_parts)):
                idx = rng.permutation(np.flatnonzero(labels == b))
                for site, chunk in enumerate(np.split(idx, cuts(len(idx), props))):
                    parts[site].extend(chunk.tolist())
        if min(map(len, t_parts)) >= min_train and min(map(len, v_parts)) >= min_valid:
            counts = [np.bincount(t_bins[p], minlength=n_found).tolist() for p in t_parts]
            return ([sorted(train[i] for i in p) for p in t_parts],
                    [sorted(valid[i] for i in p) for p in v_parts], bins, counts)
    raise FedbioError(
        f"task {task}: no label-skew draw with alpha={alpha} gave every one of {k} sites at least "
        f"{min_train} training and {min_valid} validation rows in {max_tries} draws; raise alpha, "
        "lower min_site_rows or use fewer sites")


def _check_settings(setup: str, source: str, test_frac: float, valid_frac: float, sites: int,
                    alpha: float, n_bins: int) -> None:
    if setup not in SETUPS:
        raise FedbioError(f"setup must be one of {', '.join(SETUPS)}, not {setup!r}")
    check_source(source)
    if not 0 < test_frac < 1 or not 0 <= valid_frac < 1 or test_frac + valid_frac >= 1:
        raise FedbioError(f"need 0 < test_frac, 0 <= valid_frac and test_frac + valid_frac < 1 "
                          f"(got {test_frac}, {valid_frac})")
    if setup == "alltasks" and (sites < 1 or not alpha > 0 or n_bins < 1):
        raise FedbioError(f"alltasks needs sites >= 1, alpha > 0, n_bins >= 1 "
                          f"(got {sites}, {alpha}, {n_bins})")


def _task_rows(table: pd.DataFrame, tasks: list[str], part_of: dict[str, str],
               test_frac: float, valid_frac: float) -> dict[str, dict[str, list[tuple]]]:
    """Task -> part -> rows ``(id, sequence, label, task)``; every task needs rows in each part."""
    rows: dict[str, dict[str, list[tuple]]] = {}
    for task in tasks:
        sub = table[table[task].notna()]
        rows[task] = {p: [] for p in PARTS}
        for aid, seq, value in zip(sub["id"], sub["sequence"], sub[task], strict=True):
            rows[task][part_of[aid]].append((aid, seq, float(value), task))
        if not rows[task]["train"] or not rows[task]["test"] or (valid_frac > 0
                                                                 and not rows[task]["valid"]):
            raise FedbioError(f"task {task}: too few antibodies for test_frac={test_frac}, "
                              f"valid_frac={valid_frac}")
    return rows


def _spread(rows: dict, tasks: list[str], sites: int, alpha: float, n_bins: int,
            min_site_rows: int, max_tries: int, rng: np.random.Generator):
    """``alltasks``: every task's train and valid rows over ``site-1`` .. ``site-N`` with label
    skew -> (site -> part -> rows, task -> what the skew came out as)."""
    names = [f"site-{i}" for i in range(1, sites + 1)]
    site_rows = {s: {"train": [], "valid": []} for s in names}
    skew = {}
    for task in tasks:
        train, valid, bins, counts = _skew(rows[task]["train"], rows[task]["valid"], sites,
                                           alpha, n_bins, min_site_rows, max_tries, rng, task)
        for s, t_rows, v_rows in zip(names, train, valid, strict=True):
            site_rows[s]["train"].extend(t_rows)
            site_rows[s]["valid"].extend(v_rows)
        pool = np.array([r[2] for r in rows[task]["train"] + rows[task]["valid"]])
        lower = [float(pool[bins == b].min()) for b in range(int(bins.max()) + 1)]
        skew[task] = {"bin_lower_bounds": lower,
                      "train_bin_counts": dict(zip(names, counts, strict=True)),
                      "js_divergence": round(mean_js_divergence(counts), 6)}
    return site_rows, skew


def _check_held_out(site_rows: dict[str, dict[str, list[tuple]]], test: list[tuple]) -> None:
    """Held out by antibody across all tasks: no test antibody anywhere in train or valid."""
    seen = {r[0] for parts in site_rows.values() for part in parts.values() for r in part}
    leaked = seen & {r[0] for r in test}
    if leaked:
        raise AssertionError(f"test antibodies in training data: {sorted(leaked)[:5]}")
    train_ids = {r[0] for parts in site_rows.values() for r in parts["train"]}
    valid_ids = {r[0] for parts in site_rows.values() for r in parts["valid"]}
    if train_ids & valid_ids:
        raise AssertionError("an antibody is in both train and valid")


def _split_meta(settings: dict, table: pd.DataFrame, rows: dict, site_rows: dict,
                part_of: dict[str, str], skew: dict) -> dict:
    """The content of tasks.json; ``settings``: the arguments of ``build_antibody_split``."""
    setup, source, tasks = settings["setup"], settings["source"], list(rows)
    alltasks = setup == "alltasks"
    order = {t: i for i, t in enumerate(tasks)}
    return {
        "setup": setup,
        "source": source,
        "seed": settings["seed"],
        "linker": LINKER,
        "tasks": {t: {"column": TASKS[t].column, "unit": TASKS[t].unit,
                      "source_file": TASKS[t].source_file,
                      "n_train": len(rows[t]["train"]), "n_valid": len(rows[t]["valid"]),
                      "n_test": len(rows[t]["test"])} for t in tasks},
        "sites": {s: sorted({r[3] for p in parts.values() for r in p}, key=order.get)
                  for s, parts in site_rows.items()},
        "site_counts": {s: {t: {"n_train": sum(r[3] == t for r in parts["train"]),
                                "n_valid": sum(r[3] == t for r in parts["valid"])}
                            for t in tasks if any(r[3] == t for p in parts.values() for r in p)}
                        for s, parts in site_rows.items()},
        "antibodies": {p: sum(v == p for v in part_of.values()) for p in PARTS},
        "test_frac": settings["test_frac"],
        "valid_frac": settings["valid_frac"],
        "alpha": settings["alpha"] if alltasks else None,
        "n_bins": settings["n_bins"] if alltasks else None,
        "min_site_rows": settings["min_site_rows"] if alltasks else None,
        "label_skew": skew or None,
        "source_md5": table.attrs["files"],
        "notes": [*table.attrs["notes"],
                  "held out by antibody across all tasks: no antibody in any task's train or "
                  "valid rows is in any task's test rows",
                  "input = VH + linker + VL; labels in original units"]
                 + ([BINDING_NOTE] if source == "jain" else
                    ["TAP labels are computed from modelled structures, not measured"]),
    }


def build_antibody_split(setup: str = "multitask", source: str = "jain", seed: int = 0,
                         test_frac: float = 0.2, valid_frac: float = 0.15, sites: int = 3,
                         alpha: float = 1.0, *, n_bins: int = 4, min_site_rows: int = 3,
                         max_tries: int = 100, root: str | Path | None = None) -> AntibodySplit:
    """Read, validate and split; nothing is written. Arguments as in ``make_antibody_split``."""
    _check_settings(setup, source, test_frac, valid_frac, sites, alpha, n_bins)
    table = load_antibody_table(source, root)
    tasks = tasks_for(source)
    rng = np.random.default_rng(seed)
    part_of = _assign(table, tasks, rng, test_frac, valid_frac)
    rows = _task_rows(table, tasks, part_of, test_frac, valid_frac)
    if setup == "multitask":
        site_rows = {f"site-{t}": {"train": rows[t]["train"], "valid": rows[t]["valid"]}
                     for t in tasks}
        skew = {}
    else:
        site_rows, skew = _spread(rows, tasks, sites, alpha, n_bins, min_site_rows, max_tries, rng)
    test = [r for task in tasks for r in rows[task]["test"]]
    _check_held_out(site_rows, test)
    order = {t: i for i, t in enumerate(tasks)}
    for parts in site_rows.values():
        for part in parts:
            parts[part] = sorted(parts[part], key=lambda r: (order[r[3]], r[0]))
    settings = {"setup": setup, "source": source, "seed": seed, "test_frac": test_frac,
                "valid_frac": valid_frac, "alpha": alpha, "n_bins": n_bins,
                "min_site_rows": min_site_rows}
    return AntibodySplit(_split_meta(settings, table, rows, site_rows, part_of, skew),
                         site_rows, test)
