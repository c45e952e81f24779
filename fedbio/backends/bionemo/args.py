"""fedbio's configuration as arguments of BioNeMo's ESM-2 fine-tuning (``finetune_esm2``).

    args = finetune_args(model_cfg, train_cfg, data_cfg, task_type="classification",
                         classes=task.classes, n_train=1510, train_csv=..., valid_csv=...,
                         result_dir="runs/bionemo")
    subprocess.run(["finetune_esm2", *to_argv(args)], check=True)   # inside the container

``finetune_args`` returns a dict keyed by ``finetune_esm2``'s option names in snake_case
(``--task-type`` is ``task_type``); ``to_argv`` writes the command line. What maps to what:

=====================  =====================================================================
fedbio                 BioNeMo ``finetune_esm2``
=====================  =====================================================================
preset esm2-8m/650m/3b ``--restore-from-checkpoint-path`` = ``load("esm2/8m:2.0")`` (...650m, 3b)
task classification    ``--task-type classification --mlp-target-size <len(classes)>``
task regression        ``--task-type regression --mlp-target-size 1``
tuning head            ``--encoder-frozen`` (frozen encoder, MLP head trains)
tuning lora            ``--lora-finetune`` (LoRA adapters + head)
tuning full            neither (every weight trains)
head_hidden, dropout   ``--mlp-hidden-size``, ``--mlp-ft-dropout``
lr, batch_size         ``--lr``, ``--micro-batch-size`` (batch_size / num_gpus per GPU)
epochs                 ``--num-steps`` = ceil(epochs * n_train / batch_size)
max_length (residues)  ``--max-seq-length`` = max_length + 2 (``<cls>`` and ``<eos>``)
GPU with bf16          ``--precision bf16-mixed`` (else ``fp32``)
=====================  =====================================================================

Differences to keep in mind: BioNeMo cuts long sequences at the end, so write the CSVs with
``write_bionemo_csv(..., max_length=...)``, which applies fedbio's crop (both ends) first; its
optimiser is Adam with weight decay 0.01 and no warm-up; it validates every
``--val-check-interval`` steps (here: once per epoch). The stock ``finetune_esm2`` builds the class
vocabulary from the labels of each CSV in order of first appearance; ``classes`` (the global list)
is kept in the dict for a training script that fixes it (``to_argv(..., classes=True)`` writes it
as ``--classes a,b,c``, as NVFlare's BioNeMo example script takes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedbio.config import TUNING_MODES, DataConfig, ModelConfig, TrainConfig
from fedbio.errors import FedbioError

# fedbio preset -> BioNeMo resource tag (ESM-2nv conversions of Meta's ESM-2 checkpoints, on NGC).
CHECKPOINT_TAGS = {
    "esm2-8m": "esm2/8m:2.0",
    "esm2-650m": "esm2/650m:2.0",
    "esm2-3b": "esm2/3b:2.0",
}
TASK_TYPES = ("classification", "regression")   # the task types BioNeMo fine-tunes
# BioNeMo's PrecisionTypes (bionemo.core.utils.dtypes).
PRECISIONS = ("fp16", "bf16", "fp32", "bf16-mixed", "fp32-mixed", "16-mixed", "fp16-mixed", "16", "32")
SPECIAL_TOKENS = 2  # <cls> and <eos> around every sequence
# Options of ``finetune_esm2`` (bionemo.esm2.scripts.finetune_esm2.get_parser, BioNeMo 2.5-2.7)
# that ``finetune_args`` may set. ``classes`` is not one: see ``to_argv``.
FINETUNE_ESM2_OPTIONS = frozenset({
    "train_data_path", "valid_data_path", "result_dir", "experiment_name",
    "restore_from_checkpoint_path", "config_class", "dataset_class", "task_type",
    "encoder_frozen", "lora_finetune", "mlp_target_size", "mlp_hidden_size", "mlp_ft_dropout",
    "lr", "micro_batch_size", "num_gpus", "num_steps", "val_check_interval", "log_every_n_steps",
    "limit_val_batches", "max_seq_length", "precision", "create_tensorboard_logger", "save_top_k",
})


def checkpoint_tag(name: str) -> str:
    """The ``bionemo.core.data.load.load`` tag of a fedbio preset (esm2-8m, esm2-650m, esm2-3b)."""
    try:
        return CHECKPOINT_TAGS[name]
    except KeyError:
        raise FedbioError(
            f"model {name!r} has no BioNeMo ESM-2nv checkpoint; the bionemo backend takes "
            f"{', '.join(CHECKPOINT_TAGS)} (esm2-tiny, esm2-35m, esm2-150m, local folders and "
            "the composition model run on backend 'hf')"
        ) from None


def _bionemo_load(tag: str) -> Path:
    """``bionemo.core.data.load.load(tag)``: imports BioNeMo, so only works inside the container."""
    try:
        from bionemo.core.data.load import load
    except ImportError as err:
        raise FedbioError(f"cannot load {tag}: BioNeMo Framework is not installed here ({err}); "
                          "run inside the container (docker/README.md)") from None
    return Path(load(tag))


def load_checkpoint(name: str) -> Path:
    """Download (or find in ``$BIONEMO_CACHE_DIR``) the BioNeMo checkpoint of preset ``name``."""
    return _bionemo_load(checkpoint_tag(name))


def num_steps(epochs: float, n_train: int, batch_size: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``n_train`` records: ceil(epochs * n / batch)."""
    if n_train < 1:
        raise FedbioError(f"no training records (n_train={n_train})")
    if batch_size < 1:
        raise FedbioError(f"batch size must be positive, not {batch_size}")
    if not epochs > 0:
        raise FedbioError(f"epochs must be positive, not {epochs}")
    return max(1, math.ceil(epochs * n_train / batch_size - 1e-9))


def _default_precision(bf16: bool | None) -> str:
    if bf16 is None:
        try:
            import torch

            bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        except Exception:  # pragma: no cover - a broken CUDA install counts as none
            bf16 = False
    return "bf16-mixed" if bf16 else "fp32"


def _class_list(task_type: str, classes: Sequence[str] | None) -> list[str] | None:
    """The global class list as BioNeMo gets it (``None`` for regression), checked."""
    if task_type not in TASK_TYPES:
        raise FedbioError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_TYPES)}")
    if task_type != "classification":
        if classes:
            raise FedbioError("a regression task takes no class list")
        return None
    if not classes or len(classes) < 2:
        raise FedbioError("a classification task needs the global class list (2 classes or more)")
    if len(set(classes)) != len(classes):
        raise FedbioError(f"the class list repeats a name: {list(classes)}")
    return [str(c) for c in classes]


def finetune_args(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: DataConfig,
    *,
    task_type: str,
    n_train: int,
    train_csv: str | Path,
    valid_csv: str | Path,
    result_dir: str | Path,
    classes: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    precision: str | None = None,
    bf16: bool | None = None,
    num_gpus: int = 1,
    experiment: str = "fedbio",
    load: Callable[[str], str | Path] | None = None,
) -> dict[str, Any]:
    """``finetune_esm2``'s arguments for this fedbio run, keyed by option name in snake_case.

    ``checkpoint`` is the ESM-2nv checkpoint folder; without it, ``load(tag)`` finds it, with
    ``tag`` from ``checkpoint_tag`` (default: ``bionemo.core.data.load.load``, e.g.
    ``load("esm2/650m:2.0")``, which downloads into ``$BIONEMO_CACHE_DIR`` once). ``precision`` defaults to ``bf16-mixed`` on a GPU that supports bf16
    (``bf16=None`` asks torch), else ``fp32``. The global batch is ``train_cfg.batch_size``,
    split over ``num_gpus``.
    """
    if model_cfg.is_composition:
        raise FedbioError("the composition model has no BioNeMo counterpart; use backend 'hf'")
    if model_cfg.tuning not in TUNING_MODES:
        raise FedbioError(f"unknown tuning mode {model_cfg.tuning!r}; choose one of "
                          f"{', '.join(TUNING_MODES)}")
    classes = _class_list(task_type, classes)
    target_size = len(classes) if classes is not None else 1
    tag = checkpoint_tag(model_cfg.name)
    if num_gpus < 1 or train_cfg.batch_size % num_gpus:
        raise FedbioError(f"batch size {train_cfg.batch_size} does not split over {num_gpus} GPU(s)")
    if precision is None:
        precision = _default_precision(bf16)
    if str(precision) not in PRECISIONS:
        raise FedbioError(f"unknown precision {precision!r}; BioNeMo takes {', '.join(PRECISIONS)}")
    if data.max_length < 1:
        raise FedbioError(f"max_length must be positive, not {data.max_length}")
    if checkpoint is None:
        checkpoint = (load or _bionemo_load)(tag)
    steps = num_steps(train_cfg.epochs, n_train, train_cfg.batch_size)
    per_epoch = min(steps, max(1, math.ceil(n_train / train_cfg.batch_size)))
    return {
        "train_data_path": str(train_csv),
        "valid_data_path": str(valid_csv),
        "result_dir": str(result_dir),
        "experiment_name": experiment,
        "restore_from_checkpoint_path": str(checkpoint),
        "config_class": "ESM2FineTuneSeqConfig",
        "dataset_class": "InMemorySingleValueDataset",
        "task_type": task_type,
        "encoder_frozen": model_cfg.tuning == "head",
        "lora_finetune": model_cfg.tuning == "lora",
        "mlp_target_size": target_size,
        "mlp_hidden_size": int(model_cfg.head_hidden),
        "mlp_ft_dropout": float(model_cfg.dropout),
        "lr": float(train_cfg.lr),
        "micro_batch_size": train_cfg.batch_size // num_gpus,
        "num_gpus": int(num_gpus),
        "num_steps": steps,
        "val_check_interval": per_epoch,
        "log_every_n_steps": max(1, min(50, per_epoch)),
        "limit_val_batches": 1.0,
        "max_seq_length": int(data.max_length) + SPECIAL_TOKENS,
        "precision": str(precision),
        "create_tensorboard_logger": True,
        "save_top_k": 1,
        "classes": classes,
        "checkpoint_tag": tag,
    }


# Keys of ``finetune_args`` that are information, not ``finetune_esm2`` options.
_INFO_KEYS = ("classes", "checkpoint_tag")


def to_argv(args: dict[str, Any], *, classes: bool = False) -> list[str]:
    """The command line (after ``finetune_esm2``) for ``finetune_args``'s dict.

    ``True`` writes a bare flag, ``False`` and ``None`` write nothing. ``classes=True`` adds
    ``--classes a,b,c`` for training scripts that fix the label vocabulary with it (NVFlare's
    BioNeMo example); the stock ``finetune_esm2`` has no such option. Note: some BioNeMo
    releases declare ``--lora-finetune`` with ``default=True``, so their ``finetune_esm2`` trains
    LoRA adapters whether or not the flag is written; check ``finetune_esm2 --help`` in the image.
    """
    unknown = sorted(set(args) - FINETUNE_ESM2_OPTIONS - set(_INFO_KEYS))
    if unknown:
        raise FedbioError(f"not finetune_esm2 options: {', '.join(unknown)}")
    argv: list[str] = []
    for key, value in args.items():
        if key in _INFO_KEYS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    if classes:
        names = args.get("classes")
        if not names:
            raise FedbioError("no class list to write (a regression task?)")
        bad = [c for c in names if "," in c or not c.strip()]
        if bad:
            raise FedbioError(f"class names cannot be written comma-separated: {bad}")
        argv += ["--classes", ",".join(names)]
    return argv


# Options of ``infer_esm2`` (bionemo.esm2.scripts.infer_esm2.get_parser, BioNeMo 2.5-2.7).
INFER_ESM2_OPTIONS = frozenset({
    "checkpoint_path", "data_path", "results_path", "precision", "num_gpus", "num_nodes",
    "micro_batch_size", "pipeline_model_parallel_size", "tensor_model_parallel_size",
    "prediction_interval", "include_hiddens", "include_input_ids", "include_embeddings",
    "include_logits", "config_class", "lora_checkpoint_path",
})
# What ``infer_esm2 --prediction-interval epoch`` writes into --results-path (rank 0, one GPU).
PREDICTIONS_FILE = "predictions__rank_0.pt"


def infer_args(
    checkpoint: str | Path,
    data_csv: str | Path,
    results_dir: str | Path,
    *,
    embeddings: bool = False,
    fine_tuned: bool = False,
    lora_checkpoint: str | Path | None = None,
    micro_batch_size: int = 64,
    precision: str = "bf16-mixed",
    num_gpus: int = 1,
) -> dict[str, Any]:
    """``infer_esm2``'s arguments, keyed by option name in snake_case (``to_argv`` writes them).

    ``embeddings=True``: the pretrained encoder's pooled embeddings (``--include-embeddings``;
    BioNeMo's ``embeddings`` output, one row per CSV row, in order). ``fine_tuned=True``: the
    task head's outputs of a ``finetune_esm2`` checkpoint (``--config-class
    ESM2FineTuneSeqConfig``; ``classification_output`` / ``regression_output``), with the LoRA
    adapters of ``lora_checkpoint`` on top of ``checkpoint`` when given. Results land in
    ``results_dir/predictions__rank_0.pt`` (``PREDICTIONS_FILE``).
    """
    if not (embeddings or fine_tuned):
        raise FedbioError("infer_args: ask for embeddings, the fine-tuned head's outputs, or both")
    if str(precision) not in PRECISIONS:
        raise FedbioError(f"unknown precision {precision!r}; BioNeMo takes {', '.join(PRECISIONS)}")
    if micro_batch_size < 1 or num_gpus < 1:
        raise FedbioError("micro batch size and GPU count must be positive")
    return {
        "checkpoint_path": str(checkpoint),
        "data_path": str(data_csv),
        "results_path": str(results_dir),
        "precision": str(precision),
        "num_gpus": int(num_gpus),
        "micro_batch_size": int(micro_batch_size),
        "prediction_interval": "epoch",
        "include_embeddings": bool(embeddings),
        "config_class": "ESM2FineTuneSeqConfig" if fine_tuned else "ESM2Config",
        "lora_checkpoint_path": str(lora_checkpoint) if lora_checkpoint else None,
    }


def to_infer_argv(args: dict[str, Any]) -> list[str]:
    """The command line (after ``infer_esm2``) for ``infer_args``'s dict."""
    unknown = sorted(set(args) - INFER_ESM2_OPTIONS)
    if unknown:
        raise FedbioError(f"not infer_esm2 options: {', '.join(unknown)}")
    argv: list[str] = []
    for key, value in args.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def bionemo_precision(precision: str) -> str:
    """fedbio's resolved precision (``fedbio.training.device``: ``32`` or ``bf16-mixed``) as BioNeMo's."""
    if precision in ("32", "fp32"):
        return "fp32"
    if precision == "bf16-mixed":
        return "bf16-mixed"
    raise FedbioError(f"unknown precision {precision!r}; fedbio resolves to '32' or 'bf16-mixed'")
