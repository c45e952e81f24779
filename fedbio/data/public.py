"""The public transfer set of federated distillation (FLuID): unlabelled sequences every site sees.

    fedbio split --fasta data/scl/deeploc_valtest.fasta --public-fraction 0.1 --out runs/split
    public = read_public(split_public("runs/split"))

In federated distillation the sites (teachers) label a shared, unlabelled set of sequences with
their own models and a student learns from those labels. ``fedbio split --public-fraction P``
draws that set from the training pool (:func:`draw_public`: stratified by class, seeded, never a
site's record) and writes it as ``public.csv`` beside the sites' folders, with the columns
``id,sequence`` only: the set is unlabelled, so no label is ever written. :func:`read_public`
reads it (or any FASTA or CSV: labels there are ignored); :func:`check_public` refuses a public
sequence that is also a test record's. A split folder's other readers (``load_task``) skip
``public.csv``: local, central and FedAvg runs never train on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedbio.data.csvfile import write_csv
from fedbio.data.records import NoRecords, Record, read_records
from fedbio.errors import DataError, FedbioError

PUBLIC_FILE = "public.csv"              # in a split folder, beside test.csv
PUBLIC_COLUMNS = ("id", "sequence")     # no label column: the set is unlabelled
PUBLIC_STREAM = 7                       # the draw's generator: default_rng([seed, PUBLIC_STREAM])
DEFAULT_PUBLIC_FRACTION = 0.2           # the public share of the split `fedbio run --mode fluid` makes itself


def draw_public(pool: list[Record], classes: list[str], fraction: float, seed: int
                ) -> tuple[list[Record] | None, list[Record]]:
    """(public set, rest of the pool), both in file order; ``(None, pool)`` when ``fraction`` is 0.

    Each class gives ``round(fraction * its count)`` records, but always leaves one in the pool
    (a class with no training record could not be learnt). The draw has its own generator, seeded
    with ``[seed, PUBLIC_STREAM]``: the split's own draws are those of a split without a public set.
    """
    if not fraction:
        return None, pool
    rng = np.random.default_rng([seed, PUBLIC_STREAM])
    labels = np.array([classes.index(str(r.label)) for r in pool])
    taken = np.zeros(len(pool), bool)
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        taken[idx[: max(min(int(round(fraction * len(idx))), len(idx) - 1), 0)]] = True
    if not taken.any():
        raise FedbioError(f"--public-fraction {fraction:g} draws no record from the {len(pool)} "
                          "training records (every class rounds to 0); raise --public-fraction, "
                          "or leave it at 0 for no public set")
    return [pool[i] for i in np.flatnonzero(taken)], [pool[i] for i in np.flatnonzero(~taken)]


def or_public(fraction: float) -> str:
    """Said where sites get too few records: a public set takes its records from the sites'."""
    return " (or --public-fraction: its records are no site's)" if fraction else ""


def write_public(path: Path, public: Sequence[Record]) -> None:
    """``public.csv``: the header ``id,sequence`` and one row per record; labels are not written."""
    write_csv(path, public, PUBLIC_COLUMNS, lambda r: (r.id, r.sequence))


def split_public(split_dir: str | Path) -> Path | None:
    """The split folder's ``public.csv``, or None when it has none (a split made without
    ``--public-fraction``). A path that is there but no file (a folder, a broken link) is returned:
    :func:`read_public` says what is wrong with it."""
    path = Path(split_dir) / PUBLIC_FILE
    return path if path.exists() or path.is_symlink() else None


def read_public(path: str | Path) -> list[Record]:
    """Read an unlabelled public set: any FASTA or CSV ``fedbio.data.records.read_records`` reads
    (a CSV needs a ``sequence`` column; ``id`` is optional). Labels, if the file has them (a
    TARGET= field, a ``label`` column), are ignored: every record returned has ``label`` None.

    Refused, as a :class:`DataError` naming the file (and line): everything ``read_records``
    refuses with ``labelled=False``, a file with no record, a record id twice, and a sequence twice
    (a teacher's label would count double).
    """
    path = Path(path)
    try:
        records = read_records(path, labelled=False)
    except NoRecords:
        raise DataError(path, "holds no records, only a header; a public set needs sequences: add "
                        "some, or make the split again with fedbio split --public-fraction "
                        "above 0") from None
    first: dict[str, Record] = {}
    for rec in records:
        twin = first.setdefault(rec.sequence, rec)
        if twin is not rec:
            raise DataError(path, f"records {twin.id!r} (line {twin.line}) and {rec.id!r} have the "
                            "same sequence; a public set holds each sequence once: drop one",
                            rec.line)
    return [dataclasses.replace(r, label=None) for r in records]


def check_public(public: Sequence[Record], public_path: str | Path,
                 tests: Sequence[tuple[Path, Sequence[Record]]],
                 sites: Sequence[tuple[Path, Sequence[Record]]] = ()) -> None:
    """Refuse public records whose sequence is a test record's (``tests``: (file, records) pairs,
    test.csv and test_hard.csv, say): the teachers' labels on them would teach the student the
    test set, and its test score would read too high. Refuse, too, those that repeat a site's own
    training or validation records (``sites``: its train.csv and valid.csv): that site's teacher
    would annotate its own labelled records, and its annotations would carry their labels away."""
    for files, what, why in ((tests, "test sequences", "the student would learn test records from "
                              "the teachers' labels"),
                             (sites, "a site's own records", "that site's teacher would send the "
                              "labels of its own records with its annotations")):
        seen = {r.sequence: (path, r) for path, records in files for r in records}
        repeats = [r for r in public if r.sequence in seen]
        if repeats:
            path, twin = seen[repeats[0].sequence]
            raise DataError(public_path, f"{len(repeats)} public record(s) repeat {what} "
                            f"(first: {repeats[0].id!r}, as {twin.id!r} in {path}:{twin.line}); {why}; "
                            f"drop them from {public_path}", repeats[0].line)
