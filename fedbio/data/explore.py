"""Small tables for looking at a data set and its splits (used by ``notebooks/01_data_and_splits``).

    from fedbio.data.records import read_records, class_list
    from fedbio.data import explore
    groups = explore.by_set(read_records("data/scl/deeploc_valtest.fasta"))
    explore.class_table(groups, class_list(*groups.values()))

Everything here returns a :class:`pandas.DataFrame` (or a plain value) and writes nothing;
the matching figures live in :mod:`fedbio.reporting.plots`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedbio.data.records import Record, label_counts
from fedbio.data.split import Split, SplitConfig, make_split, train_pool

REFERENCE_MAX_LENGTH = 512  # the reference tutorial drops every longer sequence


def by_set(records: Iterable[Record], hard: Iterable[Record] | None = None) -> dict[str, list[Record]]:
    """Group records as ``pool="original"`` sees them: train pool (SET train/val), test, setHARD."""
    records = list(records)
    groups = {"train pool": train_pool(records),
              "test": [r for r in records if r.set == "test"]}
    if hard is not None:
        groups["setHARD"] = list(hard)
    return groups


def class_table(groups: Mapping[str, Iterable[Record]], classes: Sequence[str]) -> pd.DataFrame:
    """Records per class (rows, in class-list order) for each group (columns), plus a total row."""
    table = pd.DataFrame({name: label_counts(recs, classes) for name, recs in groups.items()},
                         index=list(classes))
    table.loc["total"] = table.sum()
    table.index.name = "class"
    return table


def length_stats(groups: Mapping[str, Sequence[Record]],
                 limit: int = REFERENCE_MAX_LENGTH) -> pd.DataFrame:
    """Sequence-length summary per group, with how many records are longer than ``limit``."""
    rows = {}
    for name, recs in groups.items():
        lengths = np.array([len(r.sequence) for r in recs])
        longer = int((lengths > limit).sum())
        rows[name] = {"records": len(lengths), "min": int(lengths.min()),
                      "median": float(np.median(lengths)), "max": int(lengths.max()),
                      f"> {limit}": longer, f"% > {limit}": round(100 * longer / len(lengths), 1)}
    return pd.DataFrame.from_dict(rows, orient="index")


def longer_by_class(records: Iterable[Record], classes: Sequence[str],
                    limit: int = REFERENCE_MAX_LENGTH) -> pd.DataFrame:
    """Per class: records, how many are longer than ``limit``, and that as a percentage."""
    records = list(records)
    table = pd.DataFrame({
        "records": label_counts(records, classes),
        f"> {limit}": label_counts((r for r in records if len(r.sequence) > limit), classes),
    })
    table[f"% > {limit}"] = (100 * table[f"> {limit}"] / table["records"]).round(1)
    table.index.name = "class"
    return table.sort_values(f"% > {limit}", ascending=False)


def n_longer(records: Iterable[Record], limit: int = REFERENCE_MAX_LENGTH) -> int:
    """How many records are longer than ``limit`` residues (what a drop-long policy would lose)."""
    return sum(len(r.sequence) > limit for r in records)


def site_table(summary: dict, share: bool = False) -> pd.DataFrame:
    """A split summary as a table: classes (then ``train`` and ``valid`` sizes) x sites.

    With ``share=True`` the table holds only the class rows, as percentages of each site's
    training records, which makes class mixes comparable between sites of different size.
    """
    sites = summary["sites"]
    table = pd.DataFrame({s: sites[s]["class_counts"] for s in sites}, index=summary["classes"])
    table.index.name = "class"
    if share:
        return (100 * table / table.sum()).round(1)
    table.loc["train"] = [sites[s]["n_train"] for s in sites]
    table.loc["valid"] = [sites[s]["n_valid"] for s in sites]
    table.index.name = "class"
    return table


def majority_classes(summary: dict) -> dict[str, str]:
    """The most common training class at each site."""
    return {site: max(info["class_counts"], key=info["class_counts"].get)
            for site, info in summary["sites"].items()}


def compare_summaries(summaries: Mapping[str, dict]) -> pd.DataFrame:
    """One row per named split summary: pool sizes, training records per site, JS divergence.

    ``alpha`` is left empty for ``iid`` splits, which do not use it.
    """
    rows = {}
    for name, s in summaries.items():
        sites = s["sites"].values()
        rows[name] = {
            "pool": s["pool"], "partition": s["partition"],
            "alpha": pd.NA if s["partition"] == "iid" else s["alpha"],
            "train pool": sum(v["n_train"] + v["n_valid"] for v in sites),
            "test": s["n_test"],
            "setHARD": pd.NA if s["n_test_hard"] is None else s["n_test_hard"],
            "train per site": " / ".join(str(v["n_train"]) for v in sites),
            "JS divergence": s["js_divergence"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.astype({"alpha": "Float64", "setHARD": "Int64"})


def alpha_sweep(fasta: str | Path, alphas: Sequence[float] = (0.1, 1.0, 100.0),
                seeds: Sequence[int] = (0, 1, 2), **split_kwargs) -> pd.DataFrame:
    """Mean pairwise JS divergence between the sites' class mixes, per alpha and seed.

    ``split_kwargs`` go to :class:`~fedbio.data.split.SplitConfig` (``sites``, ``pool``, ...).
    Columns: ``alpha``, ``seed``, ``js_divergence``, ``smallest site``, ``largest site``.
    """
    rows = []
    for alpha in alphas:
        for seed in seeds:
            summary = make_split(fasta, SplitConfig(alpha=alpha, seed=seed, **split_kwargs)).summary()
            sizes = [v["n_train"] for v in summary["sites"].values()]
            rows.append({"alpha": alpha, "seed": seed, "js_divergence": summary["js_divergence"],
                         "smallest site": min(sizes), "largest site": max(sizes)})
    return pd.DataFrame(rows)


def accounting(split: Split) -> dict[str, int]:
    """Record counts that must add up: every train-pool record in exactly one site part.

    ``assigned`` counts records over all sites' train and valid parts, ``unique`` their distinct
    ids; both equal the train-pool size when nothing is lost or duplicated. ``overlap`` counts
    ids found both in a site and in the test set (0 when train and test are disjoint).
    """
    site_ids = [r.id for parts in split.sites.values() for part in parts.values() for r in part]
    test_ids = {r.id for r in split.test}
    return {"assigned": len(site_ids), "unique": len(set(site_ids)), "test": len(test_ids),
            "setHARD": len(split.test_hard or []), "overlap": len(set(site_ids) & test_ids)}


def folder_table(folder: str | Path) -> pd.DataFrame:
    """Files under ``folder`` (relative paths) with their size in bytes and number of lines."""
    folder = Path(folder)
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines = data.count(b"\n") if path.suffix in (".csv", ".json") else None
        rows.append({"file": path.relative_to(folder).as_posix(), "bytes": len(data),
                     "lines": lines})
    return pd.DataFrame(rows).astype({"lines": "Int64"}).set_index("file")
