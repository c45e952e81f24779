"""The antibody split folder on disk: writing it, reading it back, and summing up its labels.

    from fedbio.data.antibody.folder import make_antibody_split, read_antibody_split, task_summary
    make_antibody_split("runs/ab-multitask", setup="multitask", seed=0)
    task_summary("runs/ab-multitask")             # n, mean, sd, min, max per task and part

**Split folder** (``make_antibody_split``)::

    tasks.json                 setup, source, seed, linker, tasks{name: column, unit,
                               source_file, n_train, n_valid, n_test}, sites{site: [tasks]}, ...
    site-<name>/train.csv      id,sequence,label,task   (label in original units)
    site-<name>/valid.csv
    test.csv                   every task's test rows

The split itself is made by :mod:`fedbio.data.antibody.splits`; same arguments, same bytes.
Writing follows the output rule of :mod:`fedbio.outputs`. ``fedbio run --task antibody`` and
:func:`fedbio.data.records.read_records` read these files too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedbio.data.antibody.parsers import check_chain, parse_value, table_rows
from fedbio.data.antibody.splits import PARTS, AntibodySplit, build_antibody_split
from fedbio.data.csvfile import SPLIT_COLUMNS, write_split_files
from fedbio.errors import DataError, FedbioError
from fedbio.outputs import output_dir

CSV_COLUMNS = (*SPLIT_COLUMNS, "task")   # a split file's header, plus each row's task


def _row(row: tuple) -> tuple:
    name, sequence, value, task = row
    return name, sequence, repr(float(value)), task


def save_antibody_split(split: AntibodySplit, folder: str | Path) -> Path:
    """Write the split's files into ``folder`` (created if needed; a run's own ``split/``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_split_files(folder, split.sites, split.test, CSV_COLUMNS, _row)
    (folder / "tasks.json").write_text(json.dumps(split.meta, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return folder


def write_antibody_split(split: AntibodySplit, out: str | Path, overwrite: bool = False) -> Path:
    """Write the split folder by the output rule of ``fedbio.outputs``; an existing folder is
    replaced only with ``overwrite=True``."""
    with output_dir(out, overwrite=overwrite, kind="split") as tmp:
        save_antibody_split(split, tmp)
    return Path(out)


def make_antibody_split(out: str | Path, setup: str = "multitask", source: str = "jain",
                        seed: int = 0, test_frac: float = 0.2, valid_frac: float = 0.15,
                        sites: int = 3, alpha: float = 1.0, *, n_bins: int = 4,
                        min_site_rows: int = 3, max_tries: int = 100, overwrite: bool = False,
                        root: str | Path | None = None) -> Path:
    """Split the antibody tasks and write the split folder ``out``; returns its path.

    ``setup``: ``multitask`` (one site per task, ``site-<task>``; ``sites``, ``alpha`` and
    ``n_bins`` are not used) or ``alltasks`` (``sites`` sites, each holding every task, with
    Dirichlet(``alpha``) label skew over ``n_bins`` quantile bins per task; every site gets at
    least ``min_site_rows`` training rows and one validation row of each task). ``source``:
    ``jain`` or ``tap``. ``test_frac`` / ``valid_frac``: shares of the distinct antibodies held out
    for test / validation, one assignment for all tasks. The same arguments give byte-identical
    files. Refuses a non-empty ``out`` unless ``overwrite=True``.
    """
    split = build_antibody_split(setup, source, seed, test_frac, valid_frac, sites, alpha,
                                 n_bins=n_bins, min_site_rows=min_site_rows, max_tries=max_tries,
                                 root=root)
    return write_antibody_split(split, out, overwrite)


# ---------------------------------------------------------------------------------------------
# reading a split folder back


def read_split_meta(split_dir: str | Path) -> dict:
    """The split folder's ``tasks.json``."""
    path = Path(split_dir) / "tasks.json"
    if not path.is_file():
        raise FedbioError(f"{split_dir} has no tasks.json (not an antibody split folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err})") from None


def _read_rows(path: Path, tasks: Mapping) -> list[tuple]:
    out = []
    for line, row in table_rows(path, list(CSV_COLUMNS)):
        task = row["task"].strip()
        if task not in tasks:
            raise DataError(path, f"unknown task {task!r}; tasks.json lists {list(tasks)}", line)
        seq = check_chain(path, line, "sequence", row["sequence"])
        out.append((row["id"].strip(), seq, parse_value(path, line, "label", row["label"]), task))
    return out


def read_antibody_split(split_dir: str | Path) -> pd.DataFrame:
    """Every row of a split folder: ``site, part, id, sequence, label, task`` (test: site ``""``).

    Validated row by row (file and line on error). ``fedbio.data.records.read_records(path,
    kind="value")`` reads every file of the folder too: it keeps the ``task`` column on each
    record and checks ids per (task, id), since one antibody has one row per task.
    """
    split_dir = Path(split_dir)
    meta = read_split_meta(split_dir)
    frames = []
    for site in meta["sites"]:
        for part in ("train", "valid"):
            rows = _read_rows(split_dir / site / f"{part}.csv", meta["tasks"])
            frames.append(pd.DataFrame(rows, columns=CSV_COLUMNS).assign(site=site, part=part))
    rows = _read_rows(split_dir / "test.csv", meta["tasks"])
    frames.append(pd.DataFrame(rows, columns=CSV_COLUMNS).assign(site="", part="test"))
    table = pd.concat(frames, ignore_index=True)
    return table[["site", "part", *CSV_COLUMNS]]


def task_summary(split_dir: str | Path, by_site: bool = False) -> pd.DataFrame:
    """Per task and part (train / valid / test): n, mean, sd, min, max in original units.

    ``by_site=True`` adds a ``site`` column and one row per site and part (test has site "").
    """
    meta = read_split_meta(split_dir)
    table = read_antibody_split(split_dir)
    keys = ["task", "site", "part"] if by_site else ["task", "part"]
    out = (table.groupby(keys, sort=False)["label"]
           .agg(n="count", mean="mean", sd="std", min="min", max="max").reset_index())
    task_order = {t: i for i, t in enumerate(meta["tasks"])}
    site_order = {s: i for i, s in enumerate([*meta["sites"], ""])}
    part_order = {p: i for i, p in enumerate(PARTS)}
    sort = [out["task"].map(task_order)]
    if by_site:
        sort.append(out["site"].map(site_order))
    sort.append(out["part"].map(part_order))
    out = out.iloc[np.lexsort(sort[::-1])].reset_index(drop=True)
    out.insert(1, "unit", out["task"].map(lambda t: meta["tasks"][t]["unit"]))
    return out
