"""BioNeMo's fine-tuning CSV: a ``sequences`` column and a ``labels`` column.

    write_bionemo_csv(task.sites["site-1"]["train"], "site-1/train.csv", task.classes,
                      max_length=512)
    records = read_bionemo_csv("site-1/train.csv", task.classes)

Classification labels are written as class names, and every one must be in the GLOBAL class
list (the one ``fedbio split`` writes to ``classes.json``, the same at every site), so no site
can invent or renumber a class. The list's order is the class-id order: it is what
``finetune_args`` passes as ``--mlp-target-size`` / ``classes``. Regression labels are written
as floats. ``max_length`` applies fedbio's crop (first and last residues, see
``fedbio.data.batching.crop``) before BioNeMo sees the sequence, because BioNeMo itself keeps only
the start of a long sequence.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedbio.data.csvfile import read_csv
from fedbio.data.fields import PROTEIN_ALPHABET
from fedbio.data.records import Record
from fedbio.errors import DataError, FedbioError

HEADER = ("sequences", "labels")


def _fields(item: Any, index: int) -> tuple[str, str, Any]:
    """(id, sequence, label) of a ``Record``, a (sequence, label) pair or a mapping."""
    if isinstance(item, Record):
        return item.id, item.sequence, item.label
    if isinstance(item, dict):
        return (str(item.get("id", f"record {index + 1}")), item["sequence"], item.get("label"))
    seq, label = item
    return f"record {index + 1}", seq, label


def write_bionemo_csv(records: Iterable[Any], path: str | Path, classes: Sequence[str] | None = None,
                      *, task_type: str | None = None, max_length: int | None = None,
                      crop: str = "ends") -> Path:
    """Write ``records`` as BioNeMo's ``sequences,labels`` CSV; returns the path.

    ``classes`` (the global class list) makes it a classification file, none a regression one
    (``task_type`` may say so explicitly; classification without ``classes`` is refused). Every
    label is checked: a class outside the list, or a value that is not a finite number, is a
    DataError naming the record. The file is written whole or not at all.
    """
    task_type = task_type or ("classification" if classes is not None else "regression")
    if task_type not in ("classification", "regression"):
        raise FedbioError(f"unknown task type {task_type!r}; choose classification or regression")
    if task_type == "classification":
        if not classes:
            raise FedbioError("a classification CSV needs the global class list (classes.json)")
        known = {str(c) for c in classes}
    elif classes:
        raise FedbioError("a regression CSV takes no class list")
    if max_length is not None:
        from fedbio.data.batching import crop as crop_sequence
    path = Path(path)
    rows = []
    for index, item in enumerate(records):
        rid, seq, label = _fields(item, index)
        seq = str(seq).strip().upper()
        if not seq or not set(seq) <= PROTEIN_ALPHABET:
            raise DataError(path, f"{rid}: not a protein sequence ({seq[:20]!r})")
        if max_length is not None:
            seq = crop_sequence(seq, max_length, crop)
        if task_type == "classification":
            label = str(label)
            if label not in known:
                raise DataError(path, f"{rid}: label {label!r} is not in the global class list "
                                      f"{list(classes)}")
        else:
            try:
                label = float(label)
            except (TypeError, ValueError):
                raise DataError(path, f"{rid}: label {label!r} is not a number") from None
            if not math.isfinite(label):
                raise DataError(path, f"{rid}: label {label!r} is not a finite number")
            label = repr(label)
        rows.append((seq, label))
    if not rows:
        raise FedbioError(f"no records to write to {path}")
    return _write_whole(path, HEADER, rows)


def read_bionemo_csv(path: str | Path, classes: Sequence[str] | None = None,
                     *, task_type: str | None = None) -> list[Record]:
    """Read a ``sequences,labels`` CSV back as fedbio ``Record`` objects (ids ``row<line>``).

    With ``classes`` (classification) every label must be in the list; without, labels are
    read as numbers (regression). Problems are DataErrors naming file and line.
    """
    task_type = task_type or ("classification" if classes is not None else "regression")
    kind = "class" if task_type == "classification" else "value"
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    records = read_csv(path, kind=kind, classes=classes)
    if not records:
        raise DataError(path, "file holds no records")
    return records


def write_sequences_csv(sequences: Iterable[str], path: str | Path, *,
                        max_length: int | None = None, crop: str = "ends") -> Path:
    """Write a ``sequences`` CSV (no labels) for ``infer_esm2``, cropped as fedbio crops.

    Every sequence is checked as in ``write_bionemo_csv``; the file is written whole or not at all.
    """
    if max_length is not None:
        from fedbio.data.batching import crop as crop_sequence
    path = Path(path)
    rows = []
    for index, seq in enumerate(sequences):
        seq = str(seq).strip().upper()
        if not seq or not set(seq) <= PROTEIN_ALPHABET:
            raise DataError(path, f"record {index + 1}: not a protein sequence ({seq[:20]!r})")
        rows.append((crop_sequence(seq, max_length, crop) if max_length is not None else seq,))
    if not rows:
        raise FedbioError(f"no sequences to write to {path}")
    return _write_whole(path, HEADER[:1], rows)


def _write_whole(path: Path, header, rows: list[tuple]) -> Path:
    """Write ``header`` and ``rows`` to ``path`` through a temporary file: whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
