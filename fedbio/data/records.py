"""Reading protein data sets: biotrainer FASTA and BioNeMo-style CSV, validated record by record.

    from fedbio.data.records import read_records
    records = read_records("data/scl/deeploc_valtest.fasta")

Every problem is reported as a :class:`~fedbio.errors.DataError` naming the file and line, so
the CLI can print one clear line and exit non-zero. Nothing is ever changed silently: a value
that could be read two ways (a missing label, a header value cut at a space, a quote that swallows
the next rows) is refused, not guessed. Files are UTF-8 text (a leading byte-order mark is
accepted), plain or gzip-compressed. Nothing here writes files.

This is the entry point: :func:`read_records` picks the format and runs the checks over a whole
file, and the ``check_*`` functions run them across files. The pieces live beside it:
:mod:`fedbio.data.lines` (bytes to text lines), :mod:`fedbio.data.fields` (:class:`Record` and
the per-field checks), :mod:`fedbio.data.fasta` and :mod:`fedbio.data.csvfile` (the two readers;
``Record``, ``read_fasta`` and ``read_csv`` are importable from here too).
"""

from __future__ import annotations

import errno
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from fedbio.data.csvfile import read_csv
from fedbio.data.fasta import NOT_FASTA, named_fasta, read_fasta
from fedbio.data.fields import LABEL_KINDS, Record
from fedbio.data.lines import EMPTY_FILE, NotText, read_lines
from fedbio.errors import DataError

__all__ = [
    "NoRecords", "Record", "check_disjoint", "check_ids_across", "check_label_spelling",
    "check_learnable", "check_unique", "class_list", "label_counts", "read_csv", "read_fasta",
    "read_records",
]


class NoRecords(DataError):
    """A file that reads cleanly but holds no record (a CSV with only its header): callers that
    know what the file is for (a site's valid.csv, say) say what to do in their own words."""


def _sniff(path: Path) -> str:
    """'fasta' or 'csv', from the first non-blank character of the file."""
    try:
        for _, raw in read_lines(path):
            text = raw.strip()
            if text:
                return "fasta" if text.startswith(">") else "csv"
    except NotText as err:
        raise DataError(path, f"not a FASTA or CSV file: {err.reason}", err.line) from None
    raise DataError(path, EMPTY_FILE)


def _missing(path: Path) -> str:
    """Why a path that does not exist is missing: a symbolic link that leads nowhere or loops
    reads as "not found" in ``Path.exists``, and sends the user looking for the wrong thing."""
    if not path.is_symlink():
        return "file not found; check the path"
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return ("is a symbolic link that loops (it leads back to itself); point it at the "
                    "file, or give the file's own path")
    return (f"is a symbolic link that leads nowhere ({os.readlink(path)} does not exist); point "
            "it at the file, or give the file's own path")


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise DataError(path, "is a folder, not a file; give the FASTA or CSV file in it")
    if not path.exists():
        raise DataError(path, _missing(path))
    if not path.is_file():
        raise DataError(path, "not a regular file; give a FASTA or CSV file")


def check_label_spelling(records: Sequence[Record], path: str | Path | None = None) -> None:
    """Fail on class labels that differ only in case ('Nucleus' and 'nucleus'): one class
    spelt two ways would silently become two classes."""
    first: dict[str, Record] = {}
    for rec in records:
        seen = first.setdefault(str(rec.label).casefold(), rec)
        if seen.label != rec.label:
            raise DataError(path, f"labels {seen.label!r} (line {seen.line}) and {rec.label!r} "
                            "differ only in case; spell each class one way", rec.line)


def read_records(path: str | Path, *, kind: str = "class",
                 classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read and validate a FASTA or CSV file; ``kind`` is ``class`` or ``value`` (regression).

    Raises :class:`DataError` (file and line named) on: a missing file or a folder, an empty
    file, a file that is neither FASTA nor CSV (binary, not UTF-8, damaged gzip), a header
    without TARGET or with a token that is not KEY=VALUE, an unknown SET, a missing-value label
    ('', 'NA', 'nan', …), a non-finite value, an empty sequence, letters outside the protein
    alphabet, a sequence over ``MAX_SEQUENCE_LENGTH``, a stray CSV quote, a duplicated id, a
    class label that is '-' or '?' or holds a quote character, a label outside ``classes``,
    class labels that differ only in case, and identical sequences carrying conflicting labels;
    a file with no record is :class:`NoRecords`. ``labelled=False`` (prediction) makes labels
    optional and ignores them.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind must be one of {LABEL_KINDS}")
    path = Path(path)
    _check_path(path)
    fmt = _sniff(path)
    if fmt == "csv" and named_fasta(path):
        raise DataError(path, NOT_FASTA, 1)
    reader = read_fasta if fmt == "fasta" else read_csv
    records = reader(path, kind=kind, classes=classes, labelled=labelled)
    if not records:
        raise NoRecords(path, "file holds no records, only a header; add records or give "
                        "another file")
    check_unique(records, path, check_labels=labelled)
    if labelled and kind == "class":
        check_label_spelling(records, path)
    return records


def check_unique(records: Sequence[Record], path: str | Path | None = None,
                 check_labels: bool = True) -> None:
    """Fail on a duplicated id, or on identical sequences that carry different labels.

    Multi-task records (``task`` set) are unique per (task, id): one antibody has one row per task.
    """
    seen: dict[tuple, int] = {}
    for rec in records:
        key = (rec.task, rec.id)
        if key in seen:
            where = f" in task {rec.task!r}" if rec.task else ""
            raise DataError(path, f"record id {rec.id!r} appears twice{where} (first at line "
                            f"{seen[key]}); give each record its own id or drop one", rec.line)
        seen[key] = rec.line
    if not check_labels:
        return
    by_seq: dict[tuple, list[Record]] = defaultdict(list)
    for rec in records:
        by_seq[(rec.task, rec.sequence)].append(rec)
    for group in by_seq.values():
        if len({r.label for r in group}) > 1:
            listed = ", ".join(f"{r.id} (line {r.line}: {r.label})" for r in group[:4])
            raise DataError(path, f"identical sequences carry conflicting labels: {listed}; "
                            "keep one label per sequence (drop or relabel one record)",
                            group[1].line)


def check_ids_across(files: Iterable[tuple[Path, Sequence[Record]]], fix: str) -> None:
    """Refuse a record id (multi-task data: a (task, id) pair) that two files hold: the same
    protein at two sites, or in training and in the test set, is counted twice, or scored on
    what it was trained on. Ids a CSV without an id column made up ('row<line>') are skipped.

    ``files``: (file, records) pairs, each file already free of repeats (``check_unique``).
    ``fix``: what to do, in the words of the input's own layout.
    """
    first: dict[tuple, tuple[Path, int]] = {}
    for path, records in files:
        for rec in records:
            if rec.id_made:
                continue
            where, line = first.setdefault((rec.task, rec.id), (path, rec.line))
            if where != path:
                task = f" (task {rec.task!r})" if rec.task else ""
                raise DataError(path, f"record id {rec.id!r}{task} is also in {where}:{line}; "
                                f"{fix}", rec.line)


def check_learnable(train: Iterable[Record], tests: Iterable[tuple[Path, Sequence[Record]]],
                    fix: str) -> None:
    """Refuse a class that test records carry but no training record does: no model can learn
    it, and adding it to the class list silently would score every such record as wrong.

    ``tests``: (file, records) pairs; the error names the file and the first such record's line.
    ``fix``: what to do, in the words of the input's own layout.
    """
    trained = {str(r.label) for r in train}
    for path, records in tests:
        for rec in records:
            if str(rec.label) not in trained:
                raise DataError(path, f"class {rec.label!r} appears only in the test set; no model "
                                f"can learn it: {fix}", rec.line)


def check_disjoint(train: Iterable[Record], train_path: str | Path,
                   tests: Iterable[tuple[Path, Sequence[Record]]]) -> None:
    """Refuse a test record whose sequence is a training record's too (``--hard`` given the
    training file, say): a protein seen in training would silently inflate the test score."""
    seen = {(r.task, r.sequence): r for r in train}
    for path, records in tests:
        for rec in records:
            twin = seen.get((rec.task, rec.sequence))
            if twin is not None:
                raise DataError(path, f"test record {rec.id!r} has the same sequence as training "
                                f"record {twin.id!r} ({train_path}:{twin.line}); drop one of them",
                                rec.line)


def class_list(*groups: Iterable[Record]) -> list[str]:
    """The global class list: every label seen, sorted. Fixed once, shared by every site."""
    return sorted({str(r.label) for group in groups for r in group})


def label_counts(records: Iterable[Record], classes: Sequence[str]) -> dict[str, int]:
    """Counts per class, in class-list order (zeros included)."""
    counts = Counter(str(r.label) for r in records)
    return {c: counts.get(c, 0) for c in classes}
