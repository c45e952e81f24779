"""Reading biotrainer FASTA: ``>ID TARGET=… SET=… [VALIDATION=…]`` headers, wrapped sequences.

    from fedbio.data.fasta import read_fasta
    records = read_fasta("data/scl/deeploc_valtest.fasta")

Called by :func:`fedbio.data.records.read_records` once the file looks like FASTA; use that
unless the format is already known. Headers of labelled data are read strictly: every token after
the id must be a well-formed KEY=VALUE, since a value cut at a space would otherwise silently
become another class. Each problem is a :class:`~fedbio.errors.DataError` naming file and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fedbio.data.fields import MAX_SEQUENCE_LENGTH, Record, check_sequence, parse_label
from fedbio.data.lines import read_lines
from fedbio.errors import DataError

SET_VALUES = ("train", "val", "test")
HEADER_KEYS = ("TARGET", "SET", "VALIDATION")   # biotrainer's header fields
_TRUE = {"true": True, "false": False}
_FASTA_SUFFIXES = {".fasta", ".fa", ".faa", ".fas"}

# FASTA records start with a '>' header; a CSV (or other table) named .fasta lands here too.
NOT_FASTA = ("not a FASTA file: the first line does not start with '>'; give a FASTA file "
             "(>ID TARGET=… SET=… then the sequence), or name a CSV file .csv")


def named_fasta(path: Path) -> bool:
    """True for 'x.fasta', 'x.fa', 'x.fasta.gz' …: a name that promises FASTA."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _FASTA_SUFFIXES


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
            raise DataError(path, NOT_FASTA, number)
        else:
            chunks.append(text.replace(" ", ""))
            length += len(chunks[-1])
            if length > MAX_SEQUENCE_LENGTH:   # refused by the reader: stop reading it here
                yield start, header, "".join(chunks)
                return
    if header is not None:
        yield start, header, "".join(chunks)


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
        label = (parse_label(path, line, rid, fields["TARGET"], kind, classes)
                 if labelled else fields.get("TARGET"))
        seq = check_sequence(path, line, rid, seq)
        records.append(Record(rid, seq, label, split, validation, line))
    return records
