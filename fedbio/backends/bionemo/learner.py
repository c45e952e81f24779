"""``BioNemoLearner``: fedbio's ``Learner`` methods, with BioNeMo's ESM-2nv doing the encoder work.

    learner = Learner.build(ModelConfig(name="esm2-650m", backend="bionemo", tuning="head"), ...)
    train = learner.inputs(records)          # head: BioNeMo embeddings; full/lora: a CSV
    learner.fit(train, valid, epochs=3)
    learner.score(test)

``fedbio.training.learner.Learner.build`` returns one when ``ModelConfig.backend`` resolves to ``bionemo``
(``fedbio.backends.bionemo.backend.model_backend``). It offers what ``Learner`` offers: ``inputs``,
``fit``, ``score``, ``outputs``, ``save``, ``module``, ``model``, ``model_cfg``, ``data_cfg``,
``train_cfg``, ``codec``, ``tokenizer`` (None), ``cache_dir``, ``placement``, and
``trainable_state`` / ``load_trainable_state`` for what sites exchange.

``head`` (the reference recipe: frozen encoder, MLP head)
    BioNeMo's ``infer_esm2 --include-embeddings`` encodes each record set once (fedbio's crop
    applied first; cached as float32 safetensors under ``cache_dir``, like the ``hf`` backend's
    embeddings), and fedbio's own MLP head (``model.head``, the same ``head.net.*`` names as the
    ``hf`` backend) trains on them with fedbio's trainer, on ``TrainConfig.device``. Everything
    a site exchanges is that head: plain PyTorch, so ``trainable_state_dict(learner.model)``
    works as for ``hf``.

``full`` / ``lora``
    BioNeMo trains: each ``fit`` runs ``finetune_esm2`` (``fedbio.backends.bionemo.args.finetune_args``;
    CSVs written with the global class list, ``fedbio.backends.bionemo.csvio``), restoring from the
    latest checkpoint, and reads its scalars back (``fedbio.backends.bionemo.metrics``); ``outputs`` runs
    ``infer_esm2`` on the fine-tuned checkpoint. What is exchanged is read from the checkpoint's
    weights and named as ``fedbio.backends.bionemo.exchange`` says (only what trains; no wrapper prefixes,
    no TransformerEngine extra state): ``trainable_state()``, or ``learner.model``, a parameter
    holder filled from the checkpoint, for code that calls ``trainable_state_dict``. Received
    weights are written into the checkpoint the next ``fit`` restores from
    (``fedbio.backends.bionemo.weights``). Limits: the stock ``finetune_esm2`` re-initialises the task head
    when it restores a checkpoint, so across rounds only encoder / LoRA weights carry over; no
    FedProx term; single task (classification or regression) only; BioNeMo numbers the classes
    of each CSV it reads (sorted labels present), so ``outputs`` maps its columns back to the
    global class list (``to_global_columns``), and its own ``val_acc`` is only meaningful when
    the validation CSV holds the training CSV's classes.

Everything BioNeMo-specific happens in the commands this learner runs (``runner``, by default
``fedbio.backends.bionemo.jobs.run_command``, a subprocess; BioNeMo's checkpoint download through
``fedbio.backends.bionemo.args.load_checkpoint``), so this module imports on any machine. The
files and command lines of those runs live in ``fedbio.backends.bionemo.jobs``, reading their
results back in ``fedbio.backends.bionemo.results``, the modules held as ``model`` in
``fedbio.backends.bionemo.holders``; all unit-tested with stand-ins.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedbio.backends.bionemo import jobs
from fedbio.backends.bionemo.args import checkpoint_tag, load_checkpoint
from fedbio.backends.bionemo.exchange import is_head, to_exchange
from fedbio.backends.bionemo.holders import EmbeddingHead, WeightStore
from fedbio.backends.bionemo.jobs import CsvData
from fedbio.backends.bionemo.metrics import read_metrics
from fedbio.backends.bionemo.results import (
    history_from_scalars,
    label_order,
    model_outputs,
    read_predictions,
)
from fedbio.backends.bionemo.weights import (
    model_weights,
    read_checkpoint_weights,
    write_checkpoint_weights,
)
from fedbio.config import TUNING_MODES, DataConfig, ModelConfig, TrainConfig, to_dict
from fedbio.data.batching import TensorData
from fedbio.data.digests import cache_key
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError
from fedbio.models import load_trainable_state_dict, trainable_state_dict
from fedbio.models.presets import get_preset
from fedbio.training import trainer
from fedbio.training.device import Placement, placement

SINGLE_TASK = ("classification", "regression")


class BioNemoLearner:
    """See the module docstring. Build with ``BioNemoLearner.build`` (or ``Learner.build``)."""

    backend = "bionemo"
    tokenizer = None  # BioNeMo tokenizes

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
                 codec: LabelCodec, cache_dir: Path | None = None, progress: bool = True, *,
                 work_dir: Path | None = None, runner: Callable[[Sequence[str]], None] | None = None,
                 load: Callable[[str], str | Path] | None = None, place: Placement | None = None):
        self.model_cfg, self.data_cfg, self.train_cfg, self.codec = model_cfg, data_cfg, train_cfg, codec
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress
        self.runner = runner or jobs.run_command
        self.load = load
        self.place = place or placement(train_cfg)
        if work_dir is None:
            import tempfile

            work_dir = (self.cache_dir / "bionemo") if self.cache_dir else Path(tempfile.mkdtemp(prefix="fedbio-bionemo-"))
        self.work_dir = Path(work_dir)
        self.checkpoint: Path | None = None      # latest fine-tuned checkpoint (full/lora)
        self.label_order: list[str] | None = None
        self._pretrained: Path | None = None
        self._store: WeightStore | None = None
        self._fits = 0
        self.head_mode = model_cfg.tuning == "head"
        if self.head_mode:
            self._head = EmbeddingHead(get_preset(model_cfg.name).hidden_size, codec.n_outputs,
                                       model_cfg.head_hidden, model_cfg.dropout, train_cfg.seed,
                                       codec.targets)
            self._head.to(self.place.device)

    @classmethod
    def build(cls, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
              codec: LabelCodec, cache_dir: str | Path | None = None, progress: bool = True,
              **kwargs) -> BioNemoLearner:
        """Check the configuration (fails here, not half-way through a run) and build."""
        if model_cfg.is_composition:
            raise FedbioError("the composition model has no BioNeMo counterpart; use backend 'hf'")
        checkpoint_tag(model_cfg.name)  # a model BioNeMo has
        if model_cfg.tuning not in TUNING_MODES:
            raise FedbioError(f"unknown tuning mode {model_cfg.tuning!r}; choose one of "
                              f"{', '.join(TUNING_MODES)}")
        if model_cfg.tuning != "head" and codec.task_type not in SINGLE_TASK:
            raise FedbioError(f"backend 'bionemo' with tuning {model_cfg.tuning!r} trains one "
                              f"classification or regression task, not {codec.task_type!r}; use "
                              "tuning 'head' (fedbio's heads on BioNeMo embeddings) or backend 'hf'")
        torch.manual_seed(train_cfg.seed)
        return cls(model_cfg, data_cfg, train_cfg, codec, Path(cache_dir) if cache_dir else None,
                   progress, **kwargs)

    # -- what is trained / exchanged ------------------------------------------------------------
    @property
    def placement(self) -> Placement:
        return self.place

    @property
    def model(self) -> nn.Module:
        """head: the ``EmbeddingHead``; full/lora: a ``WeightStore`` of the latest checkpoint's
        exchanged weights (empty before the first ``fit``)."""
        if self.head_mode:
            return self._head
        if self._store is None:
            self._store = WeightStore(self.trainable_state() if self.checkpoint else {})
        return self._store

    @property
    def module(self) -> nn.Module:
        return self._head.head if self.head_mode else self.model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What this site sends: the head's parameters (head) or the checkpoint's trainable
        weights under bare names (full/lora, ``fedbio.backends.bionemo.exchange.to_exchange``)."""
        if self.head_mode:
            return trainable_state_dict(self._head)
        if self._store is not None:  # may hold received weights not yet trained on
            return trainable_state_dict(self._store)
        if self.checkpoint is None:
            return {}
        state = to_exchange(model_weights(read_checkpoint_weights(self.checkpoint)), self.model_cfg.tuning)
        return {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}

    def load_trainable_state(self, state: dict) -> list[str]:
        """Load received weights; full/lora: they go into the checkpoint the next ``fit``
        restores from. Returns the local names ``state`` did not have."""
        if self.head_mode:
            return load_trainable_state_dict(self._head, state)
        store = self.model
        if not list(store.parameters()):  # nothing trained here yet: take the names as they come
            self._store = WeightStore(state)
            return []
        return load_trainable_state_dict(store, state)

    # -- inputs ---------------------------------------------------------------------------------
    def inputs(self, records: list[Record], fit_scaler: bool = False) -> TensorData | CsvData:
        """head: ``TensorData`` of BioNeMo embeddings; full/lora: ``CsvData``."""
        seqs = [r.sequence for r in records]
        if self.head_mode:
            return TensorData(self._embeddings(seqs), self.codec.encode(records))
        return jobs.csv_inputs(records, self.codec, self.data_cfg, self.work_dir)

    def embedding_key(self, seqs: Sequence[str]) -> str:
        return cache_key({"backend": "bionemo", "model": self.model_cfg.name,
                             "max_length": self.data_cfg.max_length, "crop": self.data_cfg.crop,
                             "precision": self.place.precision}, seqs)

    def _embeddings(self, seqs: list[str]) -> torch.Tensor:
        """BioNeMo's pooled embeddings of ``seqs`` (cached), float32 on the CPU."""
        key = self.embedding_key(seqs)
        cache = self.cache_dir / f"emb-bionemo-{key}.safetensors" if self.cache_dir else None
        return jobs.embed(seqs, self.work_dir / "embed" / key, cache, self.pretrained_checkpoint,
                          data_cfg=self.data_cfg, batch_size=self.train_cfg.batch_size,
                          precision=self.place.precision, runner=self.runner)

    def pretrained_checkpoint(self) -> Path:
        """The ESM-2nv checkpoint of the preset (``bionemo.core.data.load.load``, once)."""
        if self._pretrained is None:
            name = self.model_cfg.name
            self._pretrained = Path(self.load(checkpoint_tag(name)) if self.load else load_checkpoint(name))
        return self._pretrained

    # -- training and scoring -------------------------------------------------------------------
    def fit(self, train, valid, epochs: float, *, writer=None, tag: str = "", prox=None,
            select: bool = True, step_offset: int = 0, **kwargs) -> list[dict]:
        """head: fedbio's trainer on the embeddings; full/lora: one ``finetune_esm2`` run."""
        if self.head_mode:
            return trainer.fit(self.module, train, valid, self.train_cfg, self.codec.task_type,
                               epochs, codec=self.codec, progress=self.progress, writer=writer,
                               tag=tag, prox=prox, select=select, step_offset=step_offset, **kwargs)
        if prox is not None:
            raise FedbioError("FedProx's proximal term is not available with backend 'bionemo' in "
                              f"{self.model_cfg.tuning!r} mode (BioNeMo's trainer runs the loss)")
        return self._finetune(train, valid, epochs, writer, tag, step_offset)

    def finetune_command(self, train: CsvData, valid: CsvData | None, epochs: float,
                         result_dir: Path, checkpoint: Path) -> list[str]:
        """The ``finetune_esm2`` command line of one ``fit`` (pure: nothing runs)."""
        return jobs.finetune_command(self.model_cfg, replace(self.train_cfg, epochs=epochs),
                                     self.data_cfg, self.codec, train, valid, result_dir, checkpoint,
                                     self.place.precision)

    def _restore_from(self) -> Path:
        """The checkpoint the next ``finetune_esm2`` starts from: received weights written into
        the latest checkpoint, else the latest, else the pretrained one."""
        base = self.checkpoint or self.pretrained_checkpoint()
        if self._store is None or not list(self._store.parameters()):
            return base
        received = trainable_state_dict(self._store)
        heads = [n for n in received if is_head(n)]
        if heads:
            warnings.warn(f"finetune_esm2 re-initialises the task head when it restores a "
                          f"checkpoint: {len(heads)} received head tensor(s) are not used",
                          stacklevel=3)
        body = {n: v for n, v in received.items() if not is_head(n)}
        if not body:
            return base
        return write_checkpoint_weights(base, body, self.work_dir / f"restore-{self._fits:03d}")

    def _finetune(self, train: CsvData, valid: CsvData | None, epochs: float, writer, tag: str,
                  step_offset: int) -> list[dict]:
        result_dir = self.work_dir / f"finetune-{self._fits:03d}"
        argv = self.finetune_command(train, valid, epochs, result_dir, self._restore_from())
        self.runner(argv)
        found = read_metrics(result_dir, jobs.EXPERIMENT)
        if not found["checkpoint"]:
            raise FedbioError(f"finetune_esm2 left no checkpoint under {found['experiment_dir']}")
        self.checkpoint = Path(found["checkpoint"])
        self.label_order = label_order(train.labels) if self.codec.task_type == "classification" else None
        self._store = None  # refilled from the new checkpoint when asked for
        self._fits += 1
        spe = max(1, math.ceil(len(train) / self.train_cfg.batch_size))
        history = history_from_scalars(found["scalars"], spe, step_offset)
        if writer is not None:
            for row in history:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, float):
                        writer.add_scalar(f"{tag}/{key}" if tag else key, value, row["epoch"])
            writer.flush()   # BioNeMo's own event files hold its per-step curves (result_dir)
        return history

    def outputs(self, data) -> np.ndarray:
        """Probabilities over the global classes (classification) or standardised values."""
        if self.head_mode:
            return trainer.predict(self.module, data, task_type=self.codec.task_type,
                                   device=self.place.device, precision=self.place.precision)
        return self._infer(data)

    def infer_command(self, data: CsvData, results_dir: Path) -> list[str]:
        """The ``infer_esm2`` command line scoring ``data`` with the fine-tuned model (pure)."""
        if self.checkpoint is None:
            raise FedbioError("no fine-tuned BioNeMo model yet: call fit first")
        lora = self.model_cfg.tuning == "lora"
        return jobs.infer_command(self.pretrained_checkpoint() if lora else self.checkpoint, data,
                                  results_dir, lora_checkpoint=self.checkpoint if lora else None,
                                  batch_size=self.train_cfg.batch_size, precision=self.place.precision)

    def _infer(self, data: CsvData) -> np.ndarray:
        results = self.work_dir / f"infer-{self._fits:03d}-{data.path.stem}"
        shutil.rmtree(results, ignore_errors=True)  # never read a stale result
        self.runner(self.infer_command(data, results))
        return model_outputs(read_predictions(results), len(data), self.codec.task_type,
                             self.label_order, self.codec.classes, str(results))

    def score(self, data, ci: bool = False) -> dict:
        return trainer.scores_of(data.y.numpy(), self.outputs(data), self.codec.task_type,
                                 self.codec, ci)

    def save(self, folder: str | Path) -> Path:
        """head: the head's weights (``model.safetensors``); full/lora: a copy of the fine-tuned
        checkpoint (``bionemo_checkpoint/``). Both with ``fedbio_model.json`` and
        ``fedbio_task.json``; predicting with them needs BioNeMo (``fedbio predict`` says so)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        labels = self.codec.classes if self.codec.task_type != "regression" else ["value"]
        meta: dict[str, Any] = {"format": 1, "kind": f"bionemo-{self.model_cfg.tuning}",
                                "model_config": to_dict(self.model_cfg), "task": self.codec.task_type,
                                "labels": [str(c) for c in labels], "n_outputs": self.codec.n_outputs,
                                "checkpoint_tag": self._tag()}
        if self.head_mode:
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self._head.state_dict().items()}
            save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        elif self.checkpoint is not None:
            target = folder / "bionemo_checkpoint"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(self.checkpoint, target)
            meta["label_order"] = self.label_order
        (folder / "fedbio_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        task = {"codec": self.codec.to_dict(), "data": to_dict(self.data_cfg)}
        (folder / "fedbio_task.json").write_text(json.dumps(task, indent=1) + "\n")
        return folder

    def _tag(self) -> str:
        return checkpoint_tag(self.model_cfg.name)
