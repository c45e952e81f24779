"""Reading the shipped antibody files into one table: one row per distinct (VH, VL) pair.

    from fedbio.data.antibody.parsers import load_antibody_table
    table = load_antibody_table("jain")           # id, name, vh, vl, sequence, one column per task

Three parsers, one per file layout: Jain et al. (``wittrup2017.csv``, four assays), Marks et al.
(``marks2021humanization_immunogenicity.csv``, %ADA) and TAP (``tap.tab``, tab-separated, both
chains in one Python-list cell). Every problem is a :class:`~fedbio.errors.DataError` with file and
line. Repeated pairs inside one task (Marks et al. has 6 pairs twice, with different %ADA values)
are merged by the mean; the table's ``attrs["notes"]`` and the split's ``tasks.json`` say so.
:func:`table_rows`, :func:`check_chain` and :func:`parse_value` also read a split folder back
(:mod:`fedbio.data.antibody.folder`).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedbio.data.antibody.catalogue import (
    JAIN_FILE,
    MARKS_FILE,
    TAP_FILE,
    TASKS,
    antibody_dir,
    antibody_id,
    check_source,
    join_chains,
    normalise_chain,
    tasks_for,
)
from fedbio.data.digests import file_md5
from fedbio.data.fields import PROTEIN_ALPHABET
from fedbio.errors import DataError, FedbioError


@dataclass(frozen=True)
class _Measure:
    line: int
    name: str
    vh: str
    vl: str
    values: dict[str, float]


def table_rows(path: Path, required: list[str], delimiter: str = ",") -> Iterator[tuple[int, dict]]:
    """Yield ``(line, {column: cell})`` for each non-blank row of a table with a header row;
    a missing ``required`` column or a row of the wrong width is a :class:`DataError`."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(path, "file is empty") from None
            names = [h.strip().lstrip("\ufeff") for h in header]
            missing = [c for c in required if c not in names]
            if missing:
                raise DataError(path, f"header lacks column(s) {missing}", 1)
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    raise DataError(path, f"row has {len(row)} fields, the header has "
                                    f"{len(names)}", reader.line_num)
                yield reader.line_num, dict(zip(names, row, strict=True))
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    except csv.Error as err:
        raise DataError(path, f"not a valid table ({err})") from None


def check_chain(path: Path, line: int, what: str, text: str) -> str:
    """A chain (or joined sequence) normalised; refused when empty or not amino acids."""
    seq = normalise_chain(text)
    if not seq:
        raise DataError(path, f"missing {what}", line)
    bad = sorted(set(seq) - PROTEIN_ALPHABET)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataError(path, f"{what} has letters that are not amino acids ({shown})", line)
    return seq


def parse_value(path: Path, line: int, column: str, text: str) -> float:
    """A measured value: a finite number (the cell of ``column`` on ``line``)."""
    text = text.strip()
    if not text:
        raise DataError(path, f"missing value in column {column!r}", line)
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"value {text!r} in column {column!r} is not a number", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"value {text!r} in column {column!r} is not a finite number", line)
    return value


def _read_jain(path: Path) -> Iterator[_Measure]:
    tasks = [t for t in tasks_for("jain") if TASKS[t].source_file == JAIN_FILE]
    columns = [TASKS[t].column for t in tasks]
    for line, row in table_rows(path, ["Name", "VH", "VL", *columns]):
        vh = check_chain(path, line, "heavy chain (column 'VH')", row["VH"])
        vl = check_chain(path, line, "light chain (column 'VL')", row["VL"])
        values = {t: parse_value(path, line, TASKS[t].column, row[TASKS[t].column]) for t in tasks}
        yield _Measure(line, row["Name"].strip(), vh, vl, values)


def _read_marks(path: Path) -> Iterator[_Measure]:
    column = TASKS["immunogenicity"].column
    for line, row in table_rows(path, ["heavy", "light", column]):
        vh = check_chain(path, line, "heavy chain (column 'heavy')", row["heavy"])
        vl = check_chain(path, line, "light chain (column 'light')", row["light"])
        value = parse_value(path, line, column, row[column])
        yield _Measure(line, "", vh, vl, {"immunogenicity": value})


# X holds a Python-list string: ['VH'\n 'VL'] (a literal backslash-n, then a space)
_TAP_CHAINS = re.compile(r"\[\s*'([^']*)'\s*(?:\\n)?\s*'([^']*)'\s*\]")


def _read_tap(path: Path) -> Iterator[_Measure]:
    tasks = tasks_for("tap")
    required = ["X", "ID", *(TASKS[t].column for t in tasks)]
    for line, row in table_rows(path, required, delimiter="\t"):
        match = _TAP_CHAINS.fullmatch(row["X"].strip())
        if match is None:
            raise DataError(path, "column 'X' does not hold two chains as ['VH'\\n 'VL']", line)
        vh = check_chain(path, line, "heavy chain (first in column 'X')", match.group(1))
        vl = check_chain(path, line, "light chain (second in column 'X')", match.group(2))
        values = {t: parse_value(path, line, TASKS[t].column, row[TASKS[t].column]) for t in tasks}
        yield _Measure(line, row["ID"].strip(), vh, vl, values)


_READERS = {"jain": ((JAIN_FILE, _read_jain), (MARKS_FILE, _read_marks)),
            "tap": ((TAP_FILE, _read_tap),)}


def _merge_notes(tasks: list[str],
                 values: dict[tuple[str, str], dict[str, list[float]]]) -> list[str]:
    """One note per task whose (VH, VL) pairs repeat: their values are merged by the mean."""
    notes = []
    for task in tasks:
        repeated = [v[task] for v in values.values() if len(v.get(task, ())) > 1]
        if repeated:
            notes.append(
                f"{task}: {len(repeated)} (VH, VL) pairs appear more than once in "
                f"{TASKS[task].source_file} ({sum(len(r) for r in repeated)} rows); "
                "each pair's values are merged by the mean")
    return notes


def load_antibody_table(source: str = "jain", root: str | Path | None = None) -> pd.DataFrame:
    """One row per distinct antibody: ``id, name, vh, vl, sequence`` and one column per task.

    ``root`` is the folder holding the source files (default ``data/antibody/``). A task's
    column is NaN where the antibody was not measured; repeated (VH, VL) pairs inside a task
    are merged by the mean. ``attrs``: ``notes`` (what was merged), ``files`` (md5 of each
    file read), ``rows`` (rows read per task). Raises :class:`DataError` naming the file and
    line on a missing chain, letters that are not amino acids, or a value that is not a number.
    """
    check_source(source)
    root = Path(root) if root is not None else antibody_dir()
    tasks = tasks_for(source)
    names: dict[tuple[str, str], str] = {}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    rows: dict[str, int] = defaultdict(int)
    files = {}
    for filename, reader in _READERS[source]:
        path = root / filename
        for m in reader(path):
            pair = (m.vh, m.vl)
            if m.name and not names.get(pair):
                names[pair] = m.name
            entry = values.setdefault(pair, defaultdict(list))
            for task, value in m.values.items():
                entry[task].append(value)
                rows[task] += 1
        files[filename] = file_md5(path)
    notes = _merge_notes(tasks, values)
    records = []
    for (vh, vl), entry in values.items():
        row = {"id": antibody_id(vh, vl), "name": names.get((vh, vl), ""), "vh": vh, "vl": vl,
               "sequence": join_chains(vh, vl)}
        for task in tasks:
            row[task] = float(np.mean(entry[task])) if task in entry else np.nan
        records.append(row)
    table = pd.DataFrame.from_records(records, columns=["id", "name", "vh", "vl", "sequence",
                                                        *tasks])
    if table["id"].duplicated().any():   # a SHA-1 prefix collision: never seen, but never silent
        raise FedbioError("two different (VH, VL) pairs share an antibody id")
    table = table.sort_values("id", kind="stable").reset_index(drop=True)
    table.attrs.update(source=source, notes=notes, files=files, rows=dict(rows))
    return table
