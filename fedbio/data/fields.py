"""What a record is, and the checks on its fields that both file formats share.

    from fedbio.data.fields import Record, check_sequence, parse_label

:class:`Record` is what every reader returns; :func:`check_sequence` and :func:`parse_label` are
called by :mod:`fedbio.data.fasta` and :mod:`fedbio.data.csvfile` on each record, so a sequence or
a label is refused in the same words whichever format it came in. The constants (the protein
alphabet, the missing-value strings, the longest sequence read) are the rules themselves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedbio.errors import DataError

# The 20 standard residues plus X (any), B (D/N), U (selenocysteine), Z (E/Q), O (pyrrolysine).
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PROTEIN_ALPHABET = frozenset(AMINO_ACIDS + "XBUZO")
LABEL_KINDS = ("class", "value")

# The longest known protein (titin) has about 35,000 residues; anything far longer is a broken
# file. Both readers refuse longer sequences, so whatever ``fedbio split`` writes, ``run`` reads.
MAX_SEQUENCE_LENGTH = 100_000

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


def check_sequence(path: Path, line: int, rid: str, seq: str) -> str:
    """The sequence in upper case; refused when empty, too long, or outside the alphabet."""
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


def parse_label(path: Path, line: int, rid: str, text: str, kind: str,
                classes: Sequence[str] | None) -> str | float:
    """A label as read: a class name (``kind="class"``, checked against ``classes`` when given)
    or a number (``kind="value"``); a missing value or a quoted class is refused."""
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
