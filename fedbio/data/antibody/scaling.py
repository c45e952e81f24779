"""Standardising regression targets per task, from training rows only, and mapping back.

    from fedbio.data.antibody.scaling import standardise, destandardise
    stats = standardise(train_table)              # {task: (mean, std)}
    pred = destandardise(z, *stats["expression"]) # back in mg/L

Standardisation for training is the training code's job: the split folder keeps labels in their
original units (``TASKS``), and every metric is reported in them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedbio.errors import FedbioError


def standardise(train_values):
    """Mean and standard deviation from TRAINING rows only, to standardise regression targets.

    ``train_values``: one task's training labels (array-like) -> ``(mean, std)``; or a mapping
    ``{task: values}`` or a DataFrame with ``task`` and ``label`` columns -> ``{task: (mean,
    std)}``. The standard deviation is the population one (ddof 0, as ``fedbio.data.tasks.LabelCodec``)
    and 1.0 when it is 0. Train on ``(y - mean) / std``; map predictions back with
    ``pred * std + mean`` and report every metric (RMSE, MAE, Spearman) in the original units
    listed in ``TASKS``, so the sites' and the setups' numbers compare directly. Never include
    validation or test rows: their statistics would leak into training.
    """
    if isinstance(train_values, pd.DataFrame):
        if not {"task", "label"} <= set(train_values.columns):
            raise FedbioError("standardise needs a DataFrame with 'task' and 'label' columns")
        return {t: standardise(g["label"]) for t, g in train_values.groupby("task", sort=False)}
    if isinstance(train_values, Mapping):
        return {t: standardise(v) for t, v in train_values.items()}
    values = np.asarray(train_values, float)
    if values.size == 0:
        raise FedbioError("standardise needs at least one training value")
    std = float(values.std())
    return float(values.mean()), (std if std > 0 and math.isfinite(std) else 1.0)


def destandardise(z, mean: float, std: float) -> np.ndarray:
    """Standardised outputs back in original units: ``z * std + mean``."""
    return np.asarray(z, float) * std + mean
