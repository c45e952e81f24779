"""What BioNeMo's commands leave behind, read back as fedbio's tensors, arrays and history rows.

    pred = read_predictions(results_dir)                  # infer_esm2's predictions__rank_0*.pt
    x = embeddings_from(pred, len(seqs), str(results_dir))  # [n, hidden] float32, CPU
    probs = model_outputs(pred, n, "classification", label_order(train_labels), classes)
    rows = history_from_scalars(read_metrics(...)["scalars"], steps_per_epoch)  # finetune_esm2

``BioNemoLearner`` (``fedbio.backends.bionemo.learner``) calls these after each ``infer_esm2`` /
``finetune_esm2`` run. BioNeMo numbers the classes of a training CSV by its sorted labels
(``label_order``); ``to_global_columns`` maps those columns back to the global class list.
Pure functions on files and tensors: unit-tested without BioNeMo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbio.backends.bionemo.args import PREDICTIONS_FILE
from fedbio.errors import FedbioError

# BioNeMo's scalar names -> fedbio's history keys (everything else ``val_x`` -> ``valid_x``).
SCALAR_NAMES = {"val_acc": "valid_accuracy", "val_accuracy": "valid_accuracy",
                "val_loss": "valid_loss", "val_mse": "valid_mse"}
TRAIN_LOSS = "reduced_train_loss"


def read_predictions(results_dir: str | Path) -> dict[str, torch.Tensor]:
    """What ``infer_esm2`` wrote into ``results_dir``: ``predictions__rank_0.pt`` (one dict of
    tensors), or per-batch files ``predictions__rank_0__batch_<i>.pt`` concatenated in order."""
    results_dir = Path(results_dir)
    single = results_dir / PREDICTIONS_FILE
    if single.is_file():
        parts = [single]
    else:
        def batch_index(p: Path) -> int:
            tail = p.stem.rsplit("batch_", 1)[-1]
            return int(tail) if tail.isdigit() else -1

        parts = sorted(results_dir.glob(PREDICTIONS_FILE[:-3] + "__batch_*.pt"), key=batch_index)
    if not parts:
        raise FedbioError(f"{results_dir}: no {PREDICTIONS_FILE} (did infer_esm2 run and finish?)")
    loaded = [torch.load(p, map_location="cpu", weights_only=True) for p in parts]
    keys = [k for k, v in loaded[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.cat([d[k] for d in loaded]) if len(loaded) > 1 else loaded[0][k] for k in keys}


def embeddings_from(predictions: dict[str, torch.Tensor], n: int, source: str = "") -> torch.Tensor:
    """The ``embeddings`` [n, hidden] of ``read_predictions``, float32 on the CPU."""
    emb = predictions.get("embeddings")
    if emb is None:
        raise FedbioError(f"{source}: no 'embeddings' in the predictions (infer_esm2 run without "
                          "--include-embeddings?)")
    if emb.ndim != 2 or emb.shape[0] != n:
        raise FedbioError(f"{source}: embeddings of shape {tuple(emb.shape)}, expected [{n}, hidden]")
    return emb.detach().to("cpu", torch.float32).contiguous()


def label_order(labels: Sequence[str]) -> list[str]:
    """The class ids ``finetune_esm2`` gives the labels of a training CSV: its distinct labels,
    sorted (``InMemorySingleValueDataset`` builds its ``Label2IDTokenizer`` from sorted values)."""
    return sorted({str(x) for x in labels})


def to_global_columns(probs: np.ndarray, order: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Probabilities over BioNeMo's class ids (``order``) as columns of the global class list;
    classes the training CSV did not hold get 0. Extra columns (the head is sized for the global
    list, ``--mlp-target-size``) beyond ``order`` are dropped and rows renormalised."""
    probs = np.asarray(probs, np.float32)
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in order if c not in index]
    if unknown:
        raise FedbioError(f"labels {unknown} are not in the global class list {list(classes)}")
    if probs.shape[1] < len(order):
        raise FedbioError(f"the model gives {probs.shape[1]} outputs for {len(order)} classes")
    out = np.zeros((len(probs), len(classes)), np.float32)
    for j, name in enumerate(order):
        out[:, index[name]] = probs[:, j]
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def model_outputs(predictions: dict[str, torch.Tensor], n: int, task_type: str,
                  order: Sequence[str] | None, classes: Sequence[str] | None,
                  source: str = "") -> np.ndarray:
    """A fine-tuned model's ``infer_esm2`` predictions as fedbio's outputs: probabilities over
    the global ``classes`` (classification; BioNeMo's ids in ``order``, by default the global
    list) or the standardised values [n, targets] (regression)."""
    if task_type == "classification":
        logits = predictions.get("classification_output")
        if logits is None:
            raise FedbioError(f"{source}: no classification_output in the predictions")
        probs = torch.softmax(logits.float().reshape(n, -1), dim=-1).numpy()
        return to_global_columns(probs, order or list(classes), classes)
    values = predictions.get("regression_output")
    if values is None:
        raise FedbioError(f"{source}: no regression_output in the predictions")
    return values.float().reshape(n, -1).numpy()


def history_from_scalars(scalars: dict[str, list[tuple[int, float]]], steps_per_epoch: int,
                         epoch_offset: int = 0) -> list[dict]:
    """One history row per validation point of a ``finetune_esm2`` run (``read_metrics``'s
    ``scalars``): ``epoch`` (from the step), ``train_loss`` (mean of ``reduced_train_loss`` since
    the previous point) and the ``val_*`` scalars as ``valid_*``. No validation: one row."""
    train = scalars.get(TRAIN_LOSS, [])
    valid = {t: SCALAR_NAMES.get(t, "valid_" + t[4:]) for t in scalars if t.startswith("val_")}
    steps = sorted({s for t in valid for s, _ in scalars[t]})
    if not steps:
        steps = [max(s for s, _ in train)] if train else []
    rows, previous = [], -1
    spe = max(1, int(steps_per_epoch))
    for step in steps:
        losses = [v for s, v in train if previous < s <= step]
        row: dict[str, Any] = {"epoch": epoch_offset + max(1, math.ceil(step / spe)),
                               "train_loss": float(np.mean(losses)) if losses else None}
        for tag, name in valid.items():
            hit = [v for s, v in scalars[tag] if s == step]
            if hit:
                row[name] = float(hit[-1])
        rows.append(row)
        previous = step
    return rows
