"""A task on a split folder: which records each site holds, and how labels become targets.

    task = load_task("runs/split", "scl")
    task.sites["site-1"]["train"], task.test, task.classes

The split layout is the one ``fedbio split`` writes: ``site-*/train.csv``, ``site-*/valid.csv``,
``test.csv``, optional ``test_hard.csv`` and ``classes.json``. A user's own per-site CSVs in that
layout work the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedbio.data import Record, check_learnable, class_list, read_records
from fedbio.errors import FedbioError


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


def own_tests(test: list, train: list) -> list:
    """Multi-task data: the test records of the tasks ``train`` covers (a site's model has no
    trained head for the others); single-task data: all of ``test``."""
    tasks = {r.task for r in train}
    return test if tasks == {None} else [r for r in test if r.task in tasks]


def task_type_of(task: str) -> str:
    if task in ("scl", "classification"):
        return "classification"
    if task == "regression":
        return "regression"
    if task == "antibody":
        return "multitask"
    raise FedbioError(f"unknown --task {task!r}; choose scl, classification, regression or antibody")


def _read_json(path: Path):
    """A JSON file of a split folder; not UTF-8 or not JSON is one clear error."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))   # -sig: an editor's BOM is fine
    except UnicodeDecodeError:
        raise FedbioError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise FedbioError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise FedbioError(f"{path}: cannot read the file ({err.strerror or err})") from None


def read_tasks_json(split_dir: Path) -> dict:
    """``tasks.json`` of a multi-task split: its task names and which site holds which."""
    path = split_dir / "tasks.json"
    if not path.is_file():
        raise FedbioError(f"--split {split_dir} has no tasks.json (a multi-task split needs one)")
    meta = _read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("tasks"), dict) or not meta["tasks"]:
        raise FedbioError(f"{path}: needs a non-empty object 'tasks'")
    return meta


def _read(path: Path, task_type: str, classes: list[str] | None) -> list[Record]:
    from fedbio.errors import DataError

    kind = "class" if task_type == "classification" else "value"
    records = read_records(path, kind=kind, classes=classes if kind == "class" else None)
    if task_type == "multitask":
        for rec in records:
            if rec.task not in classes:
                raise DataError(path, f"record {rec.id!r} has task {rec.task!r}, not one of the tasks "
                                f"in tasks.json ({', '.join(classes)})", rec.line)
    return records


def _check_class_names(path: Path, classes: object) -> None:
    """classes.json: a non-empty list of distinct strings (a class listed twice would shift
    every class id after it)."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise FedbioError(f"{path}: expected a non-empty JSON array of class names")
    twice = [c for c, n in Counter(classes).items() if n > 1]
    if twice:
        raise FedbioError(f"{path}: class {twice[0]!r} is listed twice; list each class once")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_task(split_dir: str | Path, task: str = "scl") -> TaskData:
    """Read and validate a split folder."""
    split_dir = Path(split_dir)
    task_type = task_type_of(task)
    if not split_dir.is_dir():
        raise FedbioError(f"--split {split_dir} is not a folder")
    site_dirs = sorted((p for p in split_dir.glob("site-*") if p.is_dir()),
                       key=lambda p: (len(p.name), p.name))
    if not site_dirs:
        raise FedbioError(f"--split {split_dir} holds no site-*/ folders")
    test_path = split_dir / "test.csv"
    if not test_path.is_file():
        raise FedbioError(f"--split {split_dir} has no test.csv")
    classes = None
    if task_type == "multitask":
        classes = list(read_tasks_json(split_dir)["tasks"])
    classes_path = split_dir / "classes.json"
    if task_type == "classification" and classes_path.is_file():
        classes = _read_json(classes_path)
        _check_class_names(classes_path, classes)
    sites, checksums = {}, {}
    for site in site_dirs:
        parts = {}
        for part in ("train", "valid"):
            path = site / f"{part}.csv"
            if not path.is_file():
                raise FedbioError(f"{site} has no {part}.csv")
            parts[part] = _read(path, task_type, classes)
            checksums[f"{site.name}/{part}.csv"] = _md5(path)
        sites[site.name] = parts
    test = _read(test_path, task_type, classes)
    checksums["test.csv"] = _md5(test_path)
    hard_path = split_dir / "test_hard.csv"
    test_hard = _read(hard_path, task_type, classes) if hard_path.is_file() else None
    if test_hard is not None:
        checksums["test_hard.csv"] = _md5(hard_path)
    if task_type == "classification":   # multi-task data has tasks, not classes
        tests = [(test_path, test)] + ([(hard_path, test_hard)] if test_hard is not None else [])
        check_learnable((r for s in sites.values() for r in s["train"]), tests,
                        "add some of its records to a site's train.csv, or drop them from the test")
    if task_type == "classification" and classes is None:
        classes = class_list(test, *(p for s in sites.values() for p in s.values()))
    return TaskData(task, task_type, classes, sites, test, test_hard, split_dir, checksums)


def majority_rate(task: TaskData) -> float | None:
    """Accuracy of always predicting the pooled training majority class, on the test set."""
    if task.task_type != "classification":
        return None
    counts = np.bincount([task.classes.index(str(r.label)) for r in task.pooled("train")],
                         minlength=len(task.classes))
    top = task.classes[int(np.argmax(counts))]
    return float(np.mean([str(r.label) == top for r in task.test]))
