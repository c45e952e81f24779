"""A task on a split folder: which records each site holds, and how labels become targets.

    task = load_task("runs/split", "scl")
    task.sites["site-1"]["train"], task.test, task.classes

The split layout is the one ``fedbio split`` writes: ``site-*/train.csv``, ``site-*/valid.csv``,
``test.csv``, optional ``test_hard.csv`` and ``classes.json``. A user's own per-site CSVs in that
layout work the same way.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedbio.config import TASK_TYPE, TASKS
from fedbio.data.digests import file_md5
from fedbio.data.records import (
    NoRecords,
    Record,
    check_disjoint,
    check_ids_across,
    check_learnable,
    class_list,
    read_records,
)
from fedbio.errors import DataError, FedbioError


@dataclass
class LabelCodec:
    """Labels <-> model targets: class ids, or values standardised with training statistics.

    ``multitask``: one output per task (``classes`` holds the task names); a record's target row
    is NaN except in its own task's column, standardised with that task's training mean and sd
    (``mean``/``std`` are then lists, one entry per task).
    """

    task_type: str
    classes: list[str] | None = None
    mean: float | list = 0.0
    std: float | list = 1.0

    def encode(self, records: list[Record]) -> torch.Tensor:
        if self.task_type == "classification":
            index = {c: i for i, c in enumerate(self.classes)}
            return torch.tensor([index[str(r.label)] for r in records], dtype=torch.long)
        values = np.array([float(r.label) for r in records], dtype=np.float32)
        if self.task_type == "multitask":
            column = {t: i for i, t in enumerate(self.classes)}
            out = np.full((len(records), len(self.classes)), np.nan, np.float32)
            mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
            for row, rec in enumerate(records):
                j = column[rec.task]
                out[row, j] = (values[row] - mean[j]) / std[j]
            return torch.from_numpy(out)
        return torch.from_numpy((values - self.mean) / self.std).unsqueeze(1)

    def decode_values(self, outputs: np.ndarray) -> np.ndarray:
        """Regression outputs back in original units (per task column for ``multitask``)."""
        return np.asarray(outputs, float) * np.asarray(self.std, float) + np.asarray(self.mean, float)

    def set_scale(self, mean: list[float], std: list[float]) -> bool:
        """Take a pooled label scale (one entry per task for ``multitask``, else one entry);
        True when it differs from the current one (encoded targets must then be rebuilt)."""
        multi = self.task_type == "multitask"
        mean, std = (list(mean), list(std)) if multi else (mean[0], std[0])
        changed = (self.mean, self.std) != (mean, std)
        self.mean, self.std = mean, std
        return changed

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task_type in ("classification", "multitask") else 1

    @property
    def targets(self) -> list[str] | None:
        """Task names, one head each (``multitask`` only)."""
        return list(self.classes) if self.task_type == "multitask" else None

    def to_dict(self) -> dict:
        return {"task_type": self.task_type, "classes": self.classes, "mean": self.mean, "std": self.std}


def task_statistics(records: list[Record], tasks: list[str]) -> tuple[list[float], list[float]]:
    """Per-task mean and sd of the labels of ``records`` (training rows only); 0 / 1 for a task
    with no rows, sd 1 where all values are equal."""
    means, sds = [], []
    for t in tasks:
        values = np.array([float(r.label) for r in records if r.task == t], float)
        means.append(float(values.mean()) if len(values) else 0.0)
        sds.append(float(values.std()) if len(values) > 1 and values.std() > 0 else 1.0)
    return means, sds


@dataclass
class TaskData:
    task: str
    task_type: str
    classes: list[str] | None
    sites: dict[str, dict[str, list[Record]]]
    test: list[Record]
    test_hard: list[Record] | None
    split_dir: Path
    checksums: dict[str, str] = field(default_factory=dict)

    def codec(self, train_records: list[Record] | None = None) -> LabelCodec:
        if self.task_type == "classification":
            return LabelCodec("classification", self.classes)
        pool = train_records or [r for s in self.sites.values() for r in s["train"]]
        if self.task_type == "multitask":
            mean, std = task_statistics(pool, self.classes)
            return LabelCodec("multitask", self.classes, mean, std)
        values = np.array([float(r.label) for r in pool])
        return LabelCodec("regression", None, float(values.mean()), float(values.std() or 1.0))

    def pooled(self, part: str) -> list[Record]:
        return [r for s in self.sites.values() for r in s[part]]


def trained_tasks(train: list) -> list[str] | None:
    """The tasks a model trained on ``train`` has learnt heads for (multi-task data), else None."""
    tasks = {r.task for r in train}
    return None if tasks == {None} else sorted(tasks)


def own_tests(test: list, train: list) -> list:
    """Multi-task data: the test records of the tasks ``train`` covers (a site's model has no
    trained head for the others); single-task data: all of ``test``."""
    tasks = {r.task for r in train}
    return test if tasks == {None} else [r for r in test if r.task in tasks]


def task_type_of(task: str) -> str:
    """``classification``, ``regression`` or ``multitask``: what the model for ``task`` outputs."""
    if task not in TASK_TYPE:
        raise FedbioError(f"unknown --task {task!r}; choose {', '.join(TASKS)}")
    return TASK_TYPE[task]


# What a split folder holds, said where one is missing a part; ``fedbio split`` writes one.
SPLIT_LAYOUT = ("a split folder holds site-*/train.csv and site-*/valid.csv (one folder per site), "
                "test.csv, and optionally test_hard.csv and classes.json; fedbio split writes one")
# What to do about an empty file of a split folder, by part. read_records only knows the file
# holds no record; here it is known what the records are for.
EMPTY_PART = {
    "train": "every site needs training records: add some, or move the site folder out of the "
             "split folder",
    "valid": "every site needs validation records (training keeps the epoch that scores best on "
             "them): move some of the site's training records here, or make the split again with "
             "fedbio split (--valid-fraction above 0)",
    "test": "the split needs test records: add some, or make the split again with fedbio split",
    "test_hard": "add records, or delete test_hard.csv (it is optional)",
}
DUPLICATE_FIX = ("a record belongs to one file of a split (one site; training or test, not both): "
                 "drop one of the two rows, or move a copied site folder out of the split folder")


def _read_json(path: Path):
    """A JSON file of a split folder; not UTF-8 or not JSON is one clear error."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))   # -sig: an editor's BOM is fine
    except UnicodeDecodeError:
        raise FedbioError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise FedbioError(f"{path}: not valid JSON ({err}); fix it, or make the split "
                          "again") from None
    except OSError as err:
        raise FedbioError(f"{path}: cannot read the file ({err.strerror or err}); check that it "
                          "is a file you may read") from None


def read_tasks_json(split_dir: Path) -> dict:
    """``tasks.json`` of a multi-task split: its task names and which site holds which."""
    path = split_dir / "tasks.json"
    if not path.is_file():
        raise FedbioError(f"{path}: not found; a multi-task split needs it (it names the tasks): "
                          "use a split that fedbio run --task antibody or "
                          "fedbio.data.antibody.make_antibody_split wrote")
    meta = _read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("tasks"), dict) or not meta["tasks"]:
        raise FedbioError(f"{path}: needs a non-empty object 'tasks' (task name: its details); "
                          "make the split again with fedbio.data.antibody.make_antibody_split")
    return meta


def _read(path: Path, task_type: str, classes: list[str] | None, part: str) -> list[Record]:
    """One CSV of a split folder; ``part`` (train, valid, test, test_hard) says what an empty
    file should hold."""
    kind = "class" if task_type == "classification" else "value"
    try:
        records = read_records(path, kind=kind, classes=classes if kind == "class" else None)
    except NoRecords:
        raise DataError(path, f"file holds no records; {EMPTY_PART[part]}") from None
    if task_type == "multitask":
        for rec in records:
            if rec.task not in classes:
                raise DataError(path, f"record {rec.id!r} has task {rec.task!r}, not one of the tasks "
                                f"in tasks.json ({', '.join(classes)}); fix its task or drop the "
                                "record", rec.line)
    return records


def _check_class_names(path: Path, classes: object) -> None:
    """classes.json: a non-empty list of distinct strings (a class listed twice would shift
    every class id after it)."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise FedbioError(f"{path}: expected a non-empty JSON array of class names; write e.g. "
                          '["Cytoplasm", "Nucleus"], or delete the file (the classes are then '
                          "the labels the records carry)")
    twice = [c for c, n in Counter(classes).items() if n > 1]
    if twice:
        raise FedbioError(f"{path}: class {twice[0]!r} is listed twice; list each class once")


def _check_classes_held(path: Path, classes: list[str], records: list[Record]) -> None:
    """Refuse a class in classes.json that no record of the split carries: it would silently
    become a model output, scored in every metric, that nothing can teach or test."""
    held = {str(r.label) for r in records}
    unheld = [c for c in classes if c not in held]
    if unheld:
        raise FedbioError(f"{path}: class {unheld[0]!r} is listed, but no record of the split "
                          "(train, valid, test or test_hard) carries it; remove it from "
                          "classes.json, or add records of it")


def _check_tasks_held(path: Path, tasks: list[str], train: list[Record],
                      everything: list[Record], tests: list[tuple[Path, list[Record]]]) -> None:
    """Multi-task data: refuse a tasks.json task no record carries (it would silently become a
    model head that nothing teaches or scores), and a test row of a task no site trains (no head
    can learn it; its scores would silently be those of an untrained head)."""
    held = {r.task for r in everything}
    unheld = [t for t in tasks if t not in held]
    if unheld:
        raise FedbioError(f"{path}: task {unheld[0]!r} is listed, but no record of the split "
                          "carries it; remove it from tasks.json, or add its records")
    trained = {r.task for r in train}
    for test_path, records in tests:
        for rec in records:
            if rec.task not in trained:
                raise DataError(test_path, f"record {rec.id!r} has task {rec.task!r}, which no "
                                "site's train.csv holds, so no model head can learn it; add "
                                "training rows of the task to a site, or drop its test rows",
                                rec.line)



def _present(path: Path) -> bool:
    """True when something is at ``path``, a symbolic link that leads nowhere included: an
    optional file that is there but unreadable is refused by its reader, never skipped."""
    return path.exists() or path.is_symlink()


def _free_site_name(split_dir: Path) -> str:
    """The first ``site-N`` not taken: the name to suggest for a folder to rename."""
    number = 1
    while _present(split_dir / f"site-{number}"):
        number += 1
    return f"site-{number}"


def _site_dirs(split_dir: Path) -> list[Path]:
    """The split folder's ``site-*`` folders, in site order (site-2 before site-10).

    Any other folder is refused: a renamed site (``hospital-A/``) would otherwise silently drop
    that site's data. Hidden entries (``.ipynb_checkpoints``, ``.DS_Store``) are an editor's,
    not data; other files (split.png, summary.json, a README) are fine.
    """
    try:
        entries = sorted(split_dir.iterdir())
    except OSError as err:
        raise FedbioError(f"{split_dir}: cannot read the folder ({err.strerror or err}); check "
                          "its permissions") from None
    sites = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name.startswith("site-"):
            sites.append(entry)
        elif entry.is_dir():
            raise FedbioError(f"{entry}: folder {entry.name!r} in the split folder is not a site "
                              f"folder (site-*), so its data would be left out; rename it to "
                              f"{_free_site_name(split_dir)} or move it out of the split folder")
        elif entry.name.startswith("site-"):
            raise FedbioError(f"{entry}: not a folder, so no site's data is read from it; a site "
                              "is a folder site-*/ holding train.csv and valid.csv: make it one or "
                              "move it out of the split folder")
    if not sites:
        raise FedbioError(f"{split_dir}: holds no site-*/ folders; {SPLIT_LAYOUT}")
    return sorted(sites, key=lambda p: (len(p.name), p.name))


def _split_file(path: Path, what: str) -> Path:
    """A file the split folder must hold; a missing one is named with what the layout is."""
    if not _present(path):
        raise FedbioError(f"{path}: not found; {what}{SPLIT_LAYOUT}")
    return path


def _check_across_files(parts: list[tuple[Path, list[Record]]],
                        tests: list[tuple[Path, list[Record]]]) -> None:
    """No record in two files of the split, and no test record that is a training record's
    twin (multi-task: per task). ``parts``: every site's train and valid file, in order."""
    check_ids_across(parts + tests, DUPLICATE_FIX)
    for path, records in parts:   # valid records too: training selects on them
        check_disjoint(records, path, tests)


def _read_sites(site_dirs: list[Path], task_type: str, classes: list[str] | None
                ) -> tuple[dict, dict[str, str], list[tuple[Path, list[Record]]]]:
    """Every site's train.csv and valid.csv: (site -> part -> records, file -> md5, and the
    (file, records) pairs in site order)."""
    sites: dict[str, dict[str, list[Record]]] = {}
    checksums, parts = {}, []
    for site in site_dirs:
        sites[site.name] = {}
        for part in ("train", "valid"):
            path = _split_file(site / f"{part}.csv", "every site folder holds train.csv and "
                               "valid.csv; ")
            sites[site.name][part] = _read(path, task_type, classes, part)
            checksums[f"{site.name}/{part}.csv"] = file_md5(path)
            parts.append((path, sites[site.name][part]))
    return sites, checksums, parts


def load_task(split_dir: str | Path, task: str = "scl") -> TaskData:
    """Read and validate a split folder (the layout: ``SPLIT_LAYOUT``).

    Refused, each with one clear error naming the file: a folder that is not ``site-*``, a
    missing or empty train.csv / valid.csv / test.csv, bad records (``read_records``), a record
    id in two files, a test record with a training record's sequence, a test-only class (task),
    and a classes.json class (tasks.json task) no record carries.
    """
    split_dir = Path(split_dir)
    task_type = task_type_of(task)
    if not split_dir.is_dir():
        raise FedbioError(f"--split {split_dir} is not a folder; {SPLIT_LAYOUT}")
    test_path = split_dir / "test.csv"
    if not _present(test_path) and (split_dir / "split" / "test.csv").is_file():
        raise FedbioError(f"--split {split_dir} is a run's folder, not a split folder; give the "
                          f"split folder it holds: --split {split_dir / 'split'}")
    _split_file(test_path, "")   # first: a folder without test.csv is no split folder at all
    site_dirs = _site_dirs(split_dir)
    classes = None
    if task_type == "multitask":
        classes = list(read_tasks_json(split_dir)["tasks"])
    classes_path = split_dir / "classes.json"
    if task_type == "classification" and _present(classes_path):
        classes = _read_json(classes_path)
        _check_class_names(classes_path, classes)
    sites, checksums, parts = _read_sites(site_dirs, task_type, classes)
    test = _read(test_path, task_type, classes, "test")
    checksums["test.csv"] = file_md5(test_path)
    hard_path = split_dir / "test_hard.csv"
    test_hard = _read(hard_path, task_type, classes, "test_hard") if _present(hard_path) else None
    if test_hard is not None:
        checksums["test_hard.csv"] = file_md5(hard_path)
    tests = [(test_path, test)] + ([(hard_path, test_hard)] if test_hard is not None else [])
    _check_across_files(parts, tests)
    train = [r for s in sites.values() for r in s["train"]]
    everything = [r for _, records in parts + tests for r in records]
    if task_type == "multitask":
        _check_tasks_held(split_dir / "tasks.json", classes, train, everything, tests)
    if task_type == "classification":   # multi-task data has tasks, not classes
        check_learnable(train, tests,
                        "add some of its records to a site's train.csv, or drop them from the test")
        if classes is None:
            classes = class_list(everything)
        else:
            _check_classes_held(classes_path, classes, everything)
    return TaskData(task, task_type, classes, sites, test, test_hard, split_dir, checksums)


def majority_rate(task: TaskData) -> float | None:
    """Accuracy of always predicting the pooled training majority class, on the test set."""
    if task.task_type != "classification":
        return None
    counts = np.bincount([task.classes.index(str(r.label)) for r in task.pooled("train")],
                         minlength=len(task.classes))
    top = task.classes[int(np.argmax(counts))]
    return float(np.mean([str(r.label) == top for r in task.test]))
