"""The BioNeMo runs of a ``BioNemoLearner``: the files written for them, their command lines, running them.

    data = csv_inputs(records, codec, data_cfg, work_dir)        # full/lora: the CSV BioNeMo reads
    x = embed(seqs, job, cache, checkpoint, data_cfg=..., batch_size=32, precision="32",
              runner=run_command)                                # head: infer_esm2 embeddings
    argv = finetune_command(model_cfg, train_cfg, data_cfg, codec, train, valid, result_dir,
                            checkpoint, precision)               # ["finetune_esm2", ...]
    argv = infer_command(checkpoint, data, results_dir, batch_size=32, precision="32")
    run_command(argv)                                            # a subprocess; FedbioError if it fails

``fedbio.backends.bionemo.learner`` decides which run happens when; the options come from
``fedbio.backends.bionemo.args``, the CSVs from ``fedbio.backends.bionemo.csvio`` and what a run
leaves is read by ``fedbio.backends.bionemo.results``. Nothing here imports BioNeMo: the
commands are only run by ``runner`` (tests pass a stand-in).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fedbio.backends.bionemo.args import (
    bionemo_precision,
    finetune_args,
    infer_args,
    to_argv,
    to_infer_argv,
)
from fedbio.backends.bionemo.csvio import write_bionemo_csv, write_sequences_csv
from fedbio.backends.bionemo.results import embeddings_from, read_predictions
from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.digests import cache_key
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError

EXPERIMENT = "fedbio"  # finetune_esm2's --experiment-name


def run_command(argv: Sequence[str]) -> None:
    """Run a BioNeMo command line; a missing command or a failure is one FedbioError."""
    if shutil.which(argv[0]) is None:
        raise FedbioError(f"{argv[0]} not found: BioNeMo Framework is not installed here; run "
                          "inside the BioNeMo container on a GPU machine (docker/README.md), "
                          "or use backend 'hf'")
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-15:])
        raise FedbioError(f"{argv[0]} failed (exit {done.returncode}):\n{tail}")


@dataclass
class CsvData:
    """A record set as BioNeMo reads it: the CSV (global class list, fedbio's crop) and targets."""

    path: Path
    y: torch.Tensor
    labels: list[str]

    def __len__(self) -> int:
        return len(self.y)


def csv_inputs(records: list[Record], codec: LabelCodec, data_cfg: DataConfig, work_dir: Path) -> CsvData:
    """``records`` written as ``finetune_esm2`` / ``infer_esm2`` read them, under
    ``work_dir/data/<digest>.csv``: class names of the global list, or standardised targets."""
    seqs = [r.sequence for r in records]
    key = cache_key({"kind": "csv", "max_length": data_cfg.max_length,
                     "crop": data_cfg.crop, "codec": codec.to_dict(),
                     "labels": [str(r.label) for r in records]}, seqs)
    path = work_dir / "data" / f"{key}.csv"
    if codec.task_type == "classification":  # the CSV checks labels: DataErrors first
        labels = [str(r.label) for r in records]
        write_bionemo_csv(records, path, codec.classes, max_length=data_cfg.max_length,
                          crop=data_cfg.crop)
        y = codec.encode(records)
    else:  # standardised targets, so BioNeMo's outputs decode with the codec
        y = codec.encode(records)
        labels = [repr(float(v)) for v in y.reshape(-1).tolist()]
        write_bionemo_csv(list(zip(seqs, labels, strict=True)), path, task_type="regression",
                          max_length=data_cfg.max_length, crop=data_cfg.crop)
    return CsvData(path, y, labels)


def embed(seqs: list[str], job: Path, cache: Path | None, checkpoint: Callable[[], Path], *,
          data_cfg: DataConfig, batch_size: int, precision: str,
          runner: Callable[[Sequence[str]], None]) -> torch.Tensor:
    """BioNeMo's pooled embeddings of ``seqs``, float32 on the CPU: read from ``cache`` (a
    safetensors file) when it exists, else one ``infer_esm2 --include-embeddings`` run in
    ``job`` on ``checkpoint()`` (asked for only then), saved to ``cache``."""
    if cache is not None and cache.exists():
        from safetensors.torch import load_file

        return load_file(cache)["embeddings"]
    shutil.rmtree(job / "results", ignore_errors=True)  # never read a stale result
    csv_path = write_sequences_csv(seqs, job / "sequences.csv",
                                   max_length=data_cfg.max_length, crop=data_cfg.crop)
    args = infer_args(checkpoint(), csv_path, job / "results", embeddings=True,
                      micro_batch_size=batch_size, precision=bionemo_precision(precision))
    runner(["infer_esm2", *to_infer_argv(args)])
    out = embeddings_from(read_predictions(job / "results"), len(seqs), str(job / "results"))
    if cache is not None:
        from safetensors.torch import save_file

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        save_file({"embeddings": out}, str(tmp))
        tmp.replace(cache)
    return out


def finetune_command(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig,
                     codec: LabelCodec, train: CsvData, valid: CsvData | None, result_dir: Path,
                     checkpoint: Path, precision: str) -> list[str]:
    """The ``finetune_esm2`` command line training on ``train`` for ``train_cfg.epochs`` from
    ``checkpoint`` (validating on ``valid``, else on ``train``); fedbio's ``precision``."""
    args = finetune_args(
        model_cfg, train_cfg, data_cfg,
        task_type=codec.task_type, n_train=len(train), train_csv=train.path,
        valid_csv=(valid if valid is not None and len(valid) else train).path,
        result_dir=result_dir, checkpoint=checkpoint,
        classes=codec.classes if codec.task_type == "classification" else None,
        precision=bionemo_precision(precision), experiment=EXPERIMENT)
    return ["finetune_esm2", *to_argv(args)]


def infer_command(checkpoint: Path, data: CsvData, results_dir: Path, *,
                  lora_checkpoint: Path | None = None, batch_size: int, precision: str) -> list[str]:
    """The ``infer_esm2`` command line scoring ``data`` with a fine-tuned ``checkpoint`` (with
    the LoRA adapters of ``lora_checkpoint`` on top when given); fedbio's ``precision``."""
    args = infer_args(checkpoint, data.path, results_dir, fine_tuned=True,
                      lora_checkpoint=lora_checkpoint, micro_batch_size=batch_size,
                      precision=bionemo_precision(precision))
    return ["infer_esm2", *to_infer_argv(args)]
