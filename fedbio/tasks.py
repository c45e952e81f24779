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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedbio.data import Record, class_list, read_records
from fedbio.errors import FedbioError


@dataclass
class LabelCodec:
    """Labels <-> model targets: class ids, or values standardised with training statistics."""

    task_type: str
    classes: list[str] | None = None
    mean: float = 0.0
    std: float = 1.0

    def encode(self, records: list[Record]) -> torch.Tensor:
        if self.task_type == "classification":
            index = {c: i for i, c in enumerate(self.classes)}
            return torch.tensor([index[str(r.label)] for r in records], dtype=torch.long)
        values = np.array([float(r.label) for r in records], dtype=np.float32)
        return torch.from_numpy((values - self.mean) / self.std).unsqueeze(1)

    def decode_values(self, outputs: np.ndarray) -> np.ndarray:
        """Regression outputs back in original units."""
        return np.asarray(outputs, float) * self.std + self.mean

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task_type == "classification" else 1

    def to_dict(self) -> dict:
        return {"task_type": self.task_type, "classes": self.classes, "mean": self.mean, "std": self.std}


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
        values = np.array([float(r.label) for r in pool])
        return LabelCodec("regression", None, float(values.mean()), float(values.std() or 1.0))

    def pooled(self, part: str) -> list[Record]:
        return [r for s in self.sites.values() for r in s[part]]


def task_type_of(task: str) -> str:
    if task in ("scl", "classification"):
        return "classification"
    if task == "regression":
        return "regression"
    raise FedbioError(f"unknown --task {task!r}; choose scl, classification or regression")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_task(split_dir: str | Path, task: str = "scl") -> TaskData:
    """Read and validate a split folder."""
    split_dir = Path(split_dir)
    task_type = task_type_of(task)
    kind = "class" if task_type == "classification" else "value"
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
    classes_path = split_dir / "classes.json"
    if task_type == "classification" and classes_path.is_file():
        try:
            classes = json.loads(classes_path.read_text())
        except json.JSONDecodeError as err:
            raise FedbioError(f"{classes_path}: not valid JSON ({err})") from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise FedbioError(f"{classes_path}: expected a JSON array of class names")
    sites, checksums = {}, {}
    for site in site_dirs:
        parts = {}
        for part in ("train", "valid"):
            path = site / f"{part}.csv"
            if not path.is_file():
                raise FedbioError(f"{site} has no {part}.csv")
            parts[part] = read_records(path, kind=kind, classes=classes)
            checksums[f"{site.name}/{part}.csv"] = _md5(path)
        sites[site.name] = parts
    test = read_records(test_path, kind=kind, classes=classes)
    checksums["test.csv"] = _md5(test_path)
    hard_path = split_dir / "test_hard.csv"
    test_hard = read_records(hard_path, kind=kind, classes=classes) if hard_path.is_file() else None
    if test_hard is not None:
        checksums["test_hard.csv"] = _md5(hard_path)
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
