"""Reading protein data sets: biotrainer FASTA and BioNeMo-style CSV, validated record by record.

    from fedbio.data.records import read_records
    records = read_records("data/scl/deeploc_valtest.fasta")

Every problem is reported as a :class:`~fedbio.errors.DataError` naming the file and line, so
the CLI can print one clear line and exit non-zero. Nothing is ever changed silently: a value
that could be read two ways (a missing label, a header value cut at a space, a quote that swallows
the next rows) is refused, not guessed. Files are UTF-8 text (a leading byte-order mark is
accepted), plain or gzip-compressed. Nothing here writes files.
"""

from __future__ import annotations

import csv
import difflib
import errno
import gzip
import math
import os
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fedbio.errors import DataError

# The 20 standard residues plus X (any), B (D/N), U (selenocysteine), Z (E/Q), O (pyrrolysine).
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PROTEIN_ALPHABET = frozenset(AMINO_ACIDS + "XBUZO")
SET_VALUES = ("train", "val", "test")
LABEL_KINDS = ("class", "value")
HEADER_KEYS = ("TARGET", "SET", "VALIDATION")   # biotrainer's header fields
_TRUE = {"true": True, "false": False}

# The longest known protein (titin) has about 35,000 residues; anything far longer is a broken
# file. Both readers refuse longer sequences, so whatever ``fedbio split`` writes, ``run`` reads.
MAX_SEQUENCE_LENGTH = 100_000
# csv's field limit is process-wide (default 131,072 characters). It is raised, never lowered, to
# this: above any accepted sequence, with room for long ids and labels in the other fields.
CSV_FIELD_LIMIT = 4 * MAX_SEQUENCE_LENGTH

# pandas' default missing-value strings (read_csv na_values) and the empty string: such a label is
# a missing value, not a class called 'nan'.
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
# A class label '-' or '?' is how many tools (R, Excel exports, UniProt tables) write "unknown": a
# class called '-' would silently collect every unlabelled record. Class labels only: a value
# label '-' is refused as not a number anyway.
CLASS_NA_STRINGS = NA_STRINGS | {"-", "?"}
# A label wrapped in quotes (TARGET="Nucleus", or a CSV cell '"Nucleus"' after csv parsing) would
# silently become a class of its own next to Nucleus; typographic quotes come from word processors.
QUOTE_CHARACTERS = "\"'\u201c\u201d\u2018\u2019"
# A plain decimal number. float() alone also takes '1_000' and non-ASCII digits, which no other
# tool reads as the same number.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_FASTA_SUFFIXES = {".fasta", ".fa", ".faa", ".fas"}


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
    id_made: bool = False            # the CSV had no id column: ``id`` is 'row<line>', made here


# ---------------------------------------------------------------------------------------------
# lines: bytes in, decoded here one line at a time so a bad byte is reported with its line


class _NotText(DataError):
    """A line that is not UTF-8 text (a binary file, or another encoding)."""


class NoRecords(DataError):
    """A file that reads cleanly but holds no record (a CSV with only its header): callers that
    know what the file is for (a site's valid.csv, say) say what to do in their own words."""


def _is_gzip(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return True
    with open(path, "rb") as handle:   # a compressed file without .gz in its name
        return handle.read(2) == _GZIP_MAGIC


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _decode(path: Path, number: int, raw: bytes) -> str:
    """One line as text; the byte-order mark some editors put first is dropped."""
    if number == 1 and raw.startswith(_UTF16_BOMS):
        raise _NotText(path, "file is UTF-16 text; save it as UTF-8", number)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _NotText(path, f"not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                       "save the file as UTF-8", number) from None
    if "\x00" in text:
        raise _NotText(path, "line holds a NUL byte (a binary file, or UTF-16 text); "
                       "give a UTF-8 text file", number)
    return text[1:] if number == 1 and text.startswith(_BOM) else text


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` with line ends kept (``\\n``, ``\\r\\n`` or ``\\r``).

    Plain or gzip files; any read failure is a :class:`DataError` naming the file (and the line
    where reading stopped), never a bare ``UnicodeDecodeError``, ``EOFError`` or ``zlib.error``.
    """
    path = Path(path)
    number = 0
    try:
        with _open_binary(path) as handle:
            for chunk in handle:                      # split at b"\n"; "\r\n" stays together
                for raw in chunk.splitlines(keepends=True):   # then at a lone "\r" too
                    number += 1
                    yield number, _decode(path, number, raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(path, f"compressed file is truncated or damaged ({err}); "
                        "download or compress it again", number + 1) from None
    except PermissionError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err}); check its "
                        "permissions") from None
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err}); check the file "
                        "and the disk it is on") from None


# ---------------------------------------------------------------------------------------------
# fields shared by both formats


def _check_sequence(path: Path, line: int, rid: str, seq: str) -> str:
    seq = seq.upper()
    if not seq:
        raise DataError(path, f"record {rid!r} has an empty sequence; give its sequence on the "
                        "lines below the header (CSV: in its row) or drop the record", line)
    if len(seq) > MAX_SEQUENCE_LENGTH:
        raise DataError(path, f"record {rid!r} has {len(seq)} residues, more than the "
                        f"{MAX_SEQUENCE_LENGTH} fedbio reads (the longest known protein has "
                        "~35,000); check the file or drop the record", line)
    bad = sorted(set(seq) - PROTEIN_ALPHABET)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataError(
            path,
            f"record {rid!r} has letters outside the protein alphabet ({shown}); "
            "allowed: the 20 standard residues and X B U Z O; fix the sequence or drop the record",
            line,
        )
    return seq


def _parse_value(path: Path, line: int, rid: str, text: str) -> float:
    """A regression label: a finite, plain decimal number."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"record {rid!r}: label {text!r} is not a number; write a plain "
                        "decimal number (e.g. 1000.5)", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"record {rid!r}: label {text!r} is not a finite number; "
                        "give every record a measured value or drop it", line)
    if not _NUMBER.fullmatch(text):
        raise DataError(path, f"record {rid!r}: label {text!r} is not a plain decimal number; "
                        "write it with digits 0-9 and a '.' (e.g. 1000.5)", line)
    return value


def _parse_label(path: Path, line: int, rid: str, text: str, kind: str,
                 classes: Sequence[str] | None) -> str | float:
    if text in (NA_STRINGS if kind == "value" else CLASS_NA_STRINGS):
        what = "a measured value" if kind == "value" else "a class"
        raise DataError(path, f"record {rid!r}: label {text!r} is a missing value; "
                        f"give every record {what} or drop it", line)
    if kind == "value":
        return _parse_value(path, line, rid, text)
    quote = next((c for c in text if c in QUOTE_CHARACTERS), None)
    if quote is not None:
        raise DataError(path, f"record {rid!r}: label {text!r} holds a quote character ({quote}), "
                        "so it would be a class of its own; write the label without quotes "
                        "(e.g. TARGET=Cell_membrane)", line)
    if classes is not None and text not in classes:
        near = [c for c in classes if c.casefold() == text.casefold()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DataError(
            path, f"record {rid!r}: label {text!r} is not in the class list {list(classes)}{hint}; "
            "fix the label or drop the record", line)
    return text


# ---------------------------------------------------------------------------------------------
# FASTA


def _not_key_value(rid: str, tokens: list[str], index: int) -> str:
    """Why a header token that is not KEY=VALUE is refused, with the fix spelled out."""
    token = tokens[index]
    before = tokens[index - 1] if index > 1 else ""
    example = f"{before}_{token}" if "=" in before else "TARGET=Cell_membrane"
    return (f"header of record {rid!r}: {token!r} is not KEY=VALUE; values cannot contain "
            f"spaces (write e.g. {example})")


def _header_field(rid: str, key: str, value: str, fields: dict[str, str]) -> str | None:
    """Why a KEY=VALUE header field is refused, or None when it is fine."""
    if not key:
        return f"header of record {rid!r}: '={value}' has no key; write KEY=VALUE"
    if not value:
        return (f"header of record {rid!r}: {key}= has no value; give it one "
                "(values cannot contain spaces) or drop the record")
    if key in fields:
        return f"header of record {rid!r} has {key}= twice; keep one"
    near = difflib.get_close_matches(key, HEADER_KEYS, n=1, cutoff=0.7)
    if key not in HEADER_KEYS and near:   # a misspelt SET= would silently drop the set
        return f"header of record {rid!r}: unknown field {key}=; did you mean {near[0]}=?"
    return None


def _parse_header(path: Path, line: int, header: str,
                  strict: bool = True) -> tuple[str, dict[str, str]]:
    """``>ID KEY=VALUE …`` -> (id, fields with upper-case keys).

    ``strict`` (labelled data): every token after the id must be a well-formed KEY=VALUE, as
    biotrainer writes; a value cut at a space would otherwise silently become another class.
    Prediction input (``strict=False``) may carry any header (UniProt's, say): tokens that are
    not KEY=VALUE are skipped there, since labels are not read.
    """
    tokens = header[1:].split()
    if not tokens:
        raise DataError(path, "FASTA header without a record id; write >ID TARGET=… SET=…", line)
    rid, fields = tokens[0], {}
    if strict and tokens[0].partition("=")[0].upper() in HEADER_KEYS:
        raise DataError(path, f"FASTA header starts with {tokens[0]!r}, not a record id; "
                        "write >ID TARGET=… SET=…", line)
    for index, token in enumerate(tokens[1:], start=1):
        key, eq, value = token.partition("=")
        key = key.upper()
        if strict:
            problem = (_not_key_value(rid, tokens, index) if not eq
                       else _header_field(rid, key, value, fields))
            if problem:
                raise DataError(path, problem, line)
        if eq:
            fields[key] = value  # the value is kept whole: 'Lysosome/Vacuole'
    return rid, fields


def _fasta_records(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str, str]]:
    """Yield (header line number, header, sequence) with sequences joined over wrapped lines."""
    header, start, chunks, length = None, 0, [], 0
    for number, raw in lines:
        text = raw.strip()
        if not text:
            continue
        if text.startswith(">"):
            if header is not None:
                yield start, header, "".join(chunks)
            header, start, chunks, length = text, number, [], 0
        elif header is None:
            raise DataError(path, _NOT_FASTA, number)
        else:
            chunks.append(text.replace(" ", ""))
            length += len(chunks[-1])
            if length > MAX_SEQUENCE_LENGTH:   # refused by the reader: stop reading it here
                yield start, header, "".join(chunks)
                return
    if header is not None:
        yield start, header, "".join(chunks)


# FASTA records start with a '>' header; a CSV (or other table) named .fasta lands here too.
_NOT_FASTA = ("not a FASTA file: the first line does not start with '>'; give a FASTA file "
              "(>ID TARGET=… SET=… then the sequence), or name a CSV file .csv")


def _fasta_set(path: Path, line: int, rid: str, fields: dict[str, str]) -> str | None:
    split = fields.get("SET")
    if split is None:
        return None
    if split.lower() not in SET_VALUES:
        raise DataError(path, f"record {rid!r} has unknown SET={split!r}; "
                        f"write one of {', '.join(SET_VALUES)}", line)
    return split.lower()


def _fasta_validation(path: Path, line: int, rid: str, fields: dict[str, str]) -> bool | None:
    validation = fields.get("VALIDATION")
    if validation is None:
        return None
    if validation.lower() not in _TRUE:
        raise DataError(path, f"record {rid!r}: VALIDATION must be True or False, "
                        f"not {validation!r}; write one of them or drop the field", line)
    return _TRUE[validation.lower()]


def read_fasta(path: str | Path, *, kind: str = "class",
               classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read a biotrainer FASTA file (``>ID TARGET=… SET=… [VALIDATION=…]``), plain or ``.gz``."""
    path = Path(path)
    records = []
    for line, header, seq in _fasta_records(path, read_lines(path)):
        rid, fields = _parse_header(path, line, header, strict=labelled)
        if "TARGET" not in fields and labelled:
            raise DataError(path, f"header of record {rid!r} has no TARGET=… field; add its "
                            "label (e.g. TARGET=Nucleus) or drop the record", line)
        split = _fasta_set(path, line, rid, fields)
        validation = _fasta_validation(path, line, rid, fields)
        label = (_parse_label(path, line, rid, fields["TARGET"], kind, classes)
                 if labelled else fields.get("TARGET"))
        seq = _check_sequence(path, line, rid, seq)
        records.append(Record(rid, seq, label, split, validation, line))
    return records


# ---------------------------------------------------------------------------------------------
# CSV


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


def _csv_header_problem(header: list[str]) -> str:
    text = ",".join(header)
    hint = ("; this looks tab-separated: save it comma-separated" if "\t" in text
            else "; this looks ';'-separated: save it comma-separated" if ";" in text else "")
    return (f"CSV header {header} needs a 'sequences' (or 'sequence') and a 'labels' "
            f"column{hint}; the first row names the columns, e.g. id,sequences,labels")


def read_csv(path: str | Path, *, kind: str = "class",
             classes: Sequence[str] | None = None, labelled: bool = True) -> list[Record]:
    """Read a BioNeMo-style CSV: a ``sequences`` (or ``sequence``) column, ``labels``, optional ``id``."""
    path = Path(path)
    rows = _csv_rows(path)
    # the header is the first row that is not blank (blank lines above it are skipped, as below)
    first, header = next(((n, r) for n, r in rows if any(c.strip() for c in r)), (0, None))
    if header is None:
        raise DataError(path, _EMPTY)
    names = [h.strip().lower() for h in header]
    seq_col = _column(path, first, names, ("sequences", "sequence"))
    label_col = _column(path, first, names, ("labels", "label"))
    if seq_col is None or (label_col is None and labelled):
        raise DataError(path, _csv_header_problem(header), first)
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
        label = (_parse_label(path, line, rid, row[label_col].strip(), kind, classes)
                 if labelled else None)
        seq = _check_sequence(path, line, rid, row[seq_col].strip())
        task = row[task_col].strip() if task_col is not None else None
        if task_col is not None and not task:
            raise DataError(path, f"record {rid!r} has an empty task; give every row its "
                            "task", line)
        records.append(Record(rid, seq, label, None, None, line, task, id_made=id_col is None))
    return records


# ---------------------------------------------------------------------------------------------
# either format


_EMPTY = "file is empty; give a FASTA or CSV file that holds records"


def _sniff(path: Path) -> str:
    """'fasta' or 'csv', from the first non-blank character of the file."""
    try:
        for _, raw in read_lines(path):
            text = raw.strip()
            if text:
                return "fasta" if text.startswith(">") else "csv"
    except _NotText as err:
        raise DataError(path, f"not a FASTA or CSV file: {err.reason}", err.line) from None
    raise DataError(path, _EMPTY)


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


def _named_fasta(path: Path) -> bool:
    """True for 'x.fasta', 'x.fa', 'x.fasta.gz' …: a name that promises FASTA."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _FASTA_SUFFIXES


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
    if fmt == "csv" and _named_fasta(path):
        raise DataError(path, _NOT_FASTA, 1)
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
