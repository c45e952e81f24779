"""Read back what a BioNeMo ``finetune_esm2`` run left in its result folder.

Assumed layout (BioNeMo 2.5-2.7: ``setup_nemo_lightning_logger`` with ``version="dev"`` and
NeMo's ``ModelCheckpoint(filename="checkpoint-{step}-{consumed_samples}")``)::

    RESULT_DIR/                                  --result-dir
      EXPERIMENT/                                --experiment-name
        dev/
          checkpoints/
            checkpoint-step=99-consumed_samples=6400.0/         NeMo2 checkpoint folders
            checkpoint-step=199-consumed_samples=12800.0-last/  (weights/, context/)
        **/events.out.tfevents.*                 TensorBoard scalars (--create-tensorboard-logger),
                                                 wherever under EXPERIMENT/ the logger put them
        (round<r>/ folders in front of EXPERIMENT/ when NVFlare's example runs one per round:
         pass RESULT_DIR/round<r> as ``result_dir``)

``read_metrics`` returns the checkpoints (newest step first, the ``-last`` one marked) and every
scalar series (``val_acc``, ``val_loss``, ``reduced_train_loss``, ``lr``...) with its final value.
It needs only the ``tensorboard`` package, not BioNeMo.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedbio.errors import FedbioError
from fedbio.training.tensorboard import read_scalars

_STEP = re.compile(r"(?:^|[-_])step=(\d+)|^checkpoint-(\d+)(?:-|$)")


def _step(name: str) -> int | None:
    found = _STEP.search(name)
    if not found:
        return None
    return int(found.group(1) or found.group(2))


def find_checkpoints(experiment_dir: str | Path) -> list[dict[str, Any]]:
    """Checkpoint folders under ``EXPERIMENT/*/checkpoints/``, newest step first."""
    experiment_dir = Path(experiment_dir)
    found = []
    for folder in sorted(experiment_dir.glob("*/checkpoints/*")):
        if not folder.is_dir():
            continue
        found.append({"path": str(folder), "name": folder.name, "step": _step(folder.name),
                      "last": folder.name.endswith("-last")})
    found.sort(key=lambda c: (c["step"] if c["step"] is not None else -1, c["last"]), reverse=True)
    return found


def read_metrics(result_dir: str | Path, experiment: str = "fedbio") -> dict[str, Any]:
    """Checkpoints and scalars of one ``finetune_esm2`` run (layout in the module docstring).

    Returns ``experiment_dir``, ``checkpoints`` (newest first), ``checkpoint`` (the ``-last``
    one, else the newest, else None), ``event_files``, ``scalars`` (tag -> [(step, value)]) and
    ``final`` (tag -> last value). A missing experiment folder is a FedbioError.
    """
    experiment_dir = Path(result_dir) / experiment
    if not experiment_dir.is_dir():
        raise FedbioError(f"{experiment_dir} not found: expected BioNeMo's results under "
                          "--result-dir/--experiment-name (is this the right run folder?)")
    checkpoints = find_checkpoints(experiment_dir)
    last = next((c for c in checkpoints if c["last"]), checkpoints[0] if checkpoints else None)
    scalars = read_scalars(experiment_dir)
    return {
        "experiment_dir": str(experiment_dir),
        "checkpoints": checkpoints,
        "checkpoint": last["path"] if last else None,
        "event_files": [str(p) for p in sorted(experiment_dir.rglob("events.out.tfevents.*"))],
        "scalars": scalars,
        "final": {tag: points[-1][1] for tag, points in scalars.items() if points},
    }
