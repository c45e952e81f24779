"""Reading protein data sets: biotrainer FASTA and BioNeMo-style CSV, validated record by record.

    from fedbio.data import read_records
    records = read_records("data/scl/deeploc_valtest.fasta")

Every problem is reported as a :class:`~fedbio.errors.DataError` naming the file and line, so
the CLI can print one clear line and exit non-zero. Nothing here writes files.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedbio.errors import DataError

# The 20 standard residues plus X (any), B (D/N), U (selenocysteine), Z (E/Q), O (pyrrolysine).
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PROTEIN_ALPHABET = frozenset(AMINO_ACIDS + "XBUZO")
SET_VALUES = ("train", "val", "test")
LABEL_KINDS = ("class", "value")
_TRUE = {"true": True, "false": False}


@dataclass(frozen=True)
class Record:
    """One protein: its id, sequence, label and where the source file put it."""

    id: str
    sequence: str
    label: str | float | None
    set: str | None = None           # train / val / test, from the file's SET field
    validation: bool | None = None   # biotrainer's VALIDATION flag (None when absent)
    line: int = 0                    # line of the header (FASTA) or row (CSV) in the source
    task: str | None = None          # multi-task data: which task (assay) the label belongs to


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _check_sequence(path: Path, line: int, rid: str, seq: str) -> str:
    seq = seq.upper()
    if not seq:
        raise DataError(path, f"record {rid!r} has an empty sequence", line)
    bad = sorted(set(seq) - PROTEIN_ALPHABET)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataError(
            path,
            f"record {rid!r} has letters outside the protein alphabet ({shown}); "
            "allowed: the 20 standard residues and X B U Z O",
            line,
        )
    return seq


def _parse_label(path: Path, line: int, rid: str, text: str, kind: str,
                 classes: Sequence[str] | None) -> str | float:
    if kind == "value":
        try:
            return float(text)
        except ValueError:
            raise DataError(path, f"record {rid!r}: label {text!r} is not a number", line) from None
    if classes is not None and text not in classes:
        raise DataError(
            path, f"record {rid!r}: label {text!r} is not in the class list {list(classes)}", line
        )
    return text


def _parse_header(path: Path, line: int, header: str) -> tuple[str, dict[str, str]]:
    parts = header[1:].split()
    if not parts:
        raise DataError(path, "FASTA header without a record id", line)
    fields: dict[str, str] = {}
    for token in parts[1:]:
        key, eq, value = token.partition("=")
        if eq:
            fields[key.upper()] = value  # the value is kept whole: 'Lysosome/Vacuole'
    return parts[0], fields


def _fasta_records(path: Path, handle: Iterable[str]) -> Iterator[tuple[int, str, str]]:
    """Yield (header line number, header, sequence) with sequences joined over wrapped lines."""
    header, start, chunks = None, 0, []
    for number, raw in enumerate(handle, start=1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith(">"):
            if header is not None:
                yield start, header, "".join(chunks)
            header, start, chunks = text, number, []
        elif header is None:
            raise DataError(path, "not a FASTA file: the first line does not start with '>'", number)
        else:
            chunks.append(text.replace(" ", ""))
    if header is not None:
        yield start, header, "".join(chunks)


def read_fasta(path: str | Path, *, kind: str = "class",
               classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read a biotrainer FASTA file (``>ID TARGET=… SET=… [VALIDATION=…]``), plain or ``.gz``."""
    path = Path(path)
    records = []
    with _open_text(path) as handle:
        for line, header, seq in _fasta_records(path, handle):
            rid, fields = _parse_header(path, line, header)
            if "TARGET" not in fields and labelled:
                raise DataError(path, f"header of record {rid!r} has no TARGET=… field", line)
            split = fields.get("SET")
            if split is not None:
                split = split.lower()
                if split not in SET_VALUES:
                    raise DataError(
                        path, f"record {rid!r} has unknown SET={fields['SET']!r}; "
                        f"expected one of {', '.join(SET_VALUES)}", line)
            validation = fields.get("VALIDATION")
            if validation is not None:
                if validation.lower() not in _TRUE:
                    raise DataError(path, f"record {rid!r}: VALIDATION must be True or False, "
                                    f"not {validation!r}", line)
                validation = _TRUE[validation.lower()]
            label = (_parse_label(path, line, rid, fields["TARGET"], kind, classes)
                     if labelled else fields.get("TARGET"))
            seq = _check_sequence(path, line, rid, seq)
            records.append(Record(rid, seq, label, split, validation, line))
    return records


def read_csv(path: str | Path, *, kind: str = "class",
             classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read a BioNeMo-style CSV: a ``sequences`` (or ``sequence``) column, ``labels``, optional ``id``."""
    path = Path(path)
    records = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(path, "file is empty") from None
        except csv.Error as err:
            raise DataError(path, f"not a CSV file ({err})", 1) from None
        names = [h.strip().lower() for h in header]
        seq_col = next((names.index(n) for n in ("sequences", "sequence") if n in names), None)
        label_col = next((names.index(n) for n in ("labels", "label") if n in names), None)
        if seq_col is None or (label_col is None and labelled):
            raise DataError(path, f"CSV header {header} needs a 'sequences' (or 'sequence') "
                            "and a 'labels' column", 1)
        id_col = names.index("id") if "id" in names else None
        task_col = names.index("task") if "task" in names else None
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(path, f"row has {len(row)} fields, the header has {len(header)}",
                                    line)
                rid = row[id_col].strip() if id_col is not None else f"row{line}"
                if not rid:
                    raise DataError(path, "empty id", line)
                label = (_parse_label(path, line, rid, row[label_col].strip(), kind, classes)
                         if labelled else None)
                seq = _check_sequence(path, line, rid, row[seq_col].strip())
                task = row[task_col].strip() if task_col is not None else None
                if task_col is not None and not task:
                    raise DataError(path, f"record {rid!r} has an empty task", line)
                records.append(Record(rid, seq, label, None, None, line, task))
        except csv.Error as err:
            raise DataError(path, f"not a valid CSV file ({err})", reader.line_num) from None
    return records


def _sniff(path: Path) -> str:
    """'fasta' or 'csv', from the first non-blank character of the file."""
    try:
        with _open_text(path) as handle:
            for raw in handle:
                text = raw.strip()
                if text:
                    return "fasta" if text.startswith(">") else "csv"
    except UnicodeDecodeError:
        raise DataError(path, "not a FASTA or CSV file (not UTF-8 text)") from None
    except (OSError, EOFError) as err:
        raise DataError(path, f"cannot read file ({err})") from None
    raise DataError(path, "file is empty")


def read_records(path: str | Path, *, kind: str = "class",
                 classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read and validate a FASTA or CSV file; ``kind`` is ``class`` or ``value`` (regression).

    Raises :class:`DataError` (file and line named) on: a missing file, an empty file, a file that
    is neither FASTA nor CSV, a header without TARGET, an unknown SET, an empty sequence, letters
    outside the protein alphabet, a duplicated id, a label outside ``classes``, and identical
    sequences carrying conflicting labels. ``labelled=False`` (prediction) makes labels optional.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind must be one of {LABEL_KINDS}")
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    fmt = _sniff(path)
    if fmt == "csv" and path.suffix.lower() in {".fasta", ".fa", ".faa"}:
        raise DataError(path, "not a FASTA file: the first line does not start with '>'", 1)
    reader = read_fasta if fmt == "fasta" else read_csv
    records = reader(path, kind=kind, classes=classes, labelled=labelled)
    if not records:
        raise DataError(path, "file holds no records")
    check_unique(records, path, check_labels=labelled)
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
            raise DataError(path, f"record id {rec.id!r} appears twice{where} (first at line {seen[key]})",
                            rec.line)
        seen[key] = rec.line
    if not check_labels:
        return
    by_seq: dict[tuple, list[Record]] = defaultdict(list)
    for rec in records:
        by_seq[(rec.task, rec.sequence)].append(rec)
    for group in by_seq.values():
        if len({r.label for r in group}) > 1:
            listed = ", ".join(f"{r.id} (line {r.line}: {r.label})" for r in group[:4])
            raise DataError(path, f"identical sequences carry conflicting labels: {listed}",
                            group[1].line)


def class_list(*groups: Iterable[Record]) -> list[str]:
    """The global class list: every label seen, sorted. Fixed once, shared by every site."""
    return sorted({str(r.label) for group in groups for r in group})


def label_counts(records: Iterable[Record], classes: Sequence[str]) -> dict[str, int]:
    """Counts per class, in class-list order (zeros included)."""
    counts = Counter(str(r.label) for r in records)
    return {c: counts.get(c, 0) for c in classes}
