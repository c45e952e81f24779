"""CSV records: reading any ``id,sequence,label`` CSV (``task`` too), writing a split's files.

    from fedbio.data.csvfile import read_csv
    records = read_csv("runs/ab-multitask/test.csv", kind="value")

Called by :func:`fedbio.data.records.read_records` when a file does not start with '>'; use that
unless the format is already known. Every split file fedbio writes has the header
``SPLIT_COLUMNS`` (a multi-task folder adds ``task``); BioNeMo's ``sequences,labels`` and
fedbio 0.1's ``id,sequences,labels`` read the same. Rows are read with Python's csv module in strict mode, one
row per line: a stray quote that would swallow the next rows is a
:class:`~fedbio.errors.DataError` naming the line it opens on, never a silently merged record.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from fedbio.data.fields import MAX_SEQUENCE_LENGTH, Record, check_sequence, parse_label
from fedbio.data.lines import EMPTY_FILE, read_lines
from fedbio.errors import DataError

SPLIT_COLUMNS = ("id", "sequence", "label")   # the header of every split file fedbio writes

# csv's field limit is process-wide (default 131,072 characters). It is raised, never lowered, to
# this: above any accepted sequence, with room for long ids and labels in the other fields.
CSV_FIELD_LIMIT = 4 * MAX_SEQUENCE_LENGTH


def _raise_field_limit() -> None:
    """Let csv read any sequence fedbio accepts (the limit is process-wide: only ever raised)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


def _csv_problem(err: csv.Error) -> str:
    """csv's own wording, said as what is wrong and what to do."""
    text = str(err)
    if "expected after" in text:
        return ("a quote (\") ends in the middle of a field; quote whole fields (\"…\") "
                "or remove the stray quote")
    if "unexpected end of data" in text:
        return "a quote (\") opened in this row is never closed; close it or remove it"
    if "field larger than field limit" in text:
        return (f"a field is longer than {csv.field_size_limit()} characters; sequences may hold "
                f"at most {MAX_SEQUENCE_LENGTH} residues")
    return f"not a valid CSV row ({text}); save the file as plain comma-separated text"


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line, cells) for each CSV row; a row may not run over several lines."""
    _raise_field_limit()
    # strict: '"MKV"x' is an error, not silently 'MKVx'
    reader = csv.reader((text for _, text in read_lines(path)), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(path, _csv_problem(err), start) from None
        if reader.line_num != start:   # a stray quote swallowed the line end (and rows after it)
            raise DataError(path, f"a quoted field runs from line {start} to line "
                            f"{reader.line_num}; close the quote (\") on the line it opens "
                            "or remove it", start)
        yield start, row


def _column(path: Path, line: int, names: list[str], options: tuple[str, ...]) -> int | None:
    """Index of the one column named by ``options``; two such columns would be a silent choice."""
    found = [i for i, name in enumerate(names) if name in options]
    if len(found) > 1:
        shown = " and ".join(repr(names[i]) for i in found)
        raise DataError(path, f"CSV header has columns {shown}; keep one", line)
    return found[0] if found else None


def _csv_header_problem(header: list[str], labelled: bool = True) -> str:
    text = ",".join(header)
    hint = ("; this looks tab-separated: save it comma-separated" if "\t" in text
            else "; this looks ';'-separated: save it comma-separated" if ";" in text else "")
    if not labelled:   # predictions, a public set: labels are optional
        return (f"CSV header {header} needs a 'sequence' (or 'sequences') column{hint}; the first "
                "row names the columns, e.g. id,sequence")
    return (f"CSV header {header} needs a 'sequence' (or 'sequences') and a 'label' (or "
            f"'labels') column{hint}; the first row names the columns, e.g. id,sequence,label")


def read_csv(path: str | Path, *, kind: str = "class",
             classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read a CSV of records: a ``sequence`` (or ``sequences``) column, ``label`` (or ``labels``),
    optional ``id`` and ``task``."""
    path = Path(path)
    rows = _csv_rows(path)
    # the header is the first row that is not blank (blank lines above it are skipped, as below)
    first, header = next(((n, r) for n, r in rows if any(c.strip() for c in r)), (0, None))
    if header is None:
        raise DataError(path, EMPTY_FILE)
    names = [h.strip().lower() for h in header]
    seq_col = _column(path, first, names, ("sequences", "sequence"))
    label_col = _column(path, first, names, ("labels", "label"))
    if seq_col is None or (label_col is None and labelled):
        raise DataError(path, _csv_header_problem(header, labelled), first)
    id_col = _column(path, first, names, ("id",))
    task_col = _column(path, first, names, ("task",))
    records = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(path, f"row has {len(row)} fields, the header has {len(header)}; "
                            "quote a field that holds a comma (\"…\")", line)
        rid = row[id_col].strip() if id_col is not None else f"row{line}"   # made up: id_made
        if not rid:
            raise DataError(path, "empty id; give every record an id", line)
        label = (parse_label(path, line, rid, row[label_col].strip(), kind, classes)
                 if labelled else None)
        seq = check_sequence(path, line, rid, row[seq_col].strip())
        task = row[task_col].strip() if task_col is not None else None
        if task_col is not None and not task:
            raise DataError(path, f"record {rid!r} has an empty task; give every row its "
                            "task", line)
        records.append(Record(rid, seq, label, None, None, line, task, id_made=id_col is None))
    return records


def write_csv(path: Path, rows: Iterable, columns: Sequence[str], as_row: Callable = tuple) -> None:
    """Write ``columns`` as the header, then ``as_row(item)`` for each item of ``rows``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(as_row(item) for item in rows)


def write_split_files(folder: Path, sites: dict[str, dict[str, list]], test: list,
                      columns: Sequence[str], as_row: Callable = tuple) -> None:
    """A split's CSVs in ``folder``: ``<site>/train.csv``, ``<site>/valid.csv`` and ``test.csv``."""
    for site, parts in sites.items():
        (folder / site).mkdir()
        for part in ("train", "valid"):
            write_csv(folder / site / f"{part}.csv", parts[part], columns, as_row)
    write_csv(folder / "test.csv", test, columns, as_row)
