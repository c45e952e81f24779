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
a subprocess; BioNeMo's checkpoint download through ``fedbio.backends.bionemo.args.load_checkpoint``),
so this module imports on any machine; its file formats are unit-tested with stand-ins.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedbio.config import DataConfig, ModelConfig, TrainConfig, to_dict
from fedbio.data.batching import TensorData
from fedbio.data.digests import cache_key
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError
from fedbio.training.device import Placement, placement

EXPERIMENT = "fedbio"
SINGLE_TASK = ("classification", "regression")
# BioNeMo's scalar names -> fedbio's history keys (everything else ``val_x`` -> ``valid_x``).
SCALAR_NAMES = {"val_acc": "valid_accuracy", "val_accuracy": "valid_accuracy",
                "val_loss": "valid_loss", "val_mse": "valid_mse"}
TRAIN_LOSS = "reduced_train_loss"


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


# -- pure helpers (unit-tested) ------------------------------------------------------------------
def read_predictions(results_dir: str | Path) -> dict[str, torch.Tensor]:
    """What ``infer_esm2`` wrote into ``results_dir``: ``predictions__rank_0.pt`` (one dict of
    tensors), or per-batch files ``predictions__rank_0__batch_<i>.pt`` concatenated in order."""
    from fedbio.backends.bionemo.args import PREDICTIONS_FILE

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


# -- the models it holds ------------------------------------------------------------------------
class EmbeddingHead(nn.Module):
    """fedbio's head on precomputed embeddings, as ``model.head`` (names ``head.net.*``, as the
    ``hf`` backend's head mode). Drawn from ``seed + 1``, as ``SequenceModel``'s head."""

    def __init__(self, hidden_size: int, n_outputs: int, head_hidden: int = 256,
                 dropout: float = 0.1, seed: int = 0, targets: list[str] | None = None):
        super().__init__()
        from fedbio.models.heads import MLPHead, MultiTaskHead

        self.hidden_size = int(hidden_size)
        self.n_outputs = len(targets) if targets else int(n_outputs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.head = (MultiTaskHead(hidden_size, list(targets), head_hidden, dropout) if targets
                         else MLPHead(hidden_size, n_outputs, head_hidden, dropout))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head(embeddings)


class WeightStore(nn.Module):
    """Named tensors as trainable parameters (nested modules per dotted name), so that
    ``trainable_state_dict`` / ``load_trainable_state_dict`` work on a BioNeMo checkpoint's
    exchanged weights. Not callable: BioNeMo runs the model."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        for name, value in (tensors or {}).items():
            *path, leaf = name.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part) or not isinstance(getattr(module, part), nn.Module):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            tensor = torch.as_tensor(value).detach().to("cpu", copy=True)
            module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))

    def forward(self, *args, **kwargs):
        raise FedbioError("a BioNeMo full/lora model runs inside BioNeMo (finetune_esm2 / "
                          "infer_esm2); use the learner's fit/outputs")


@dataclass
class CsvData:
    """A record set as BioNeMo reads it: the CSV (global class list, fedbio's crop) and targets."""

    path: Path
    y: torch.Tensor
    labels: list[str]

    def __len__(self) -> int:
        return len(self.y)


# -- the learner --------------------------------------------------------------------------------
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
        self.runner = runner or run_command
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
            from fedbio.models.presets import get_preset

            self._head = EmbeddingHead(get_preset(model_cfg.name).hidden_size, codec.n_outputs,
                                       model_cfg.head_hidden, model_cfg.dropout, train_cfg.seed,
                                       codec.targets)
            self._head.to(self.place.device)

    @classmethod
    def build(cls, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
              codec: LabelCodec, cache_dir: str | Path | None = None, progress: bool = True,
              **kwargs) -> BioNemoLearner:
        """Check the configuration (fails here, not half-way through a run) and build."""
        from fedbio.backends.bionemo.args import checkpoint_tag
        from fedbio.config import TUNING_MODES

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
        from fedbio.models import trainable_state_dict

        if self.head_mode:
            return trainable_state_dict(self._head)
        if self._store is not None:  # may hold received weights not yet trained on
            return trainable_state_dict(self._store)
        if self.checkpoint is None:
            return {}
        from fedbio.backends.bionemo.exchange import to_exchange
        from fedbio.backends.bionemo.weights import model_weights, read_checkpoint_weights

        state = to_exchange(model_weights(read_checkpoint_weights(self.checkpoint)), self.model_cfg.tuning)
        return {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}

    def load_trainable_state(self, state: dict) -> list[str]:
        """Load received weights; full/lora: they go into the checkpoint the next ``fit``
        restores from. Returns the local names ``state`` did not have."""
        from fedbio.models import load_trainable_state_dict

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
        from fedbio.backends.bionemo.csvio import write_bionemo_csv

        key = cache_key({"kind": "csv", "max_length": self.data_cfg.max_length,
                            "crop": self.data_cfg.crop, "codec": self.codec.to_dict(),
                            "labels": [str(r.label) for r in records]}, seqs)
        path = self.work_dir / "data" / f"{key}.csv"
        if self.codec.task_type == "classification":  # the CSV checks labels: DataErrors first
            labels = [str(r.label) for r in records]
            write_bionemo_csv(records, path, self.codec.classes, max_length=self.data_cfg.max_length,
                              crop=self.data_cfg.crop)
            y = self.codec.encode(records)
        else:  # standardised targets, so BioNeMo's outputs decode with the codec
            y = self.codec.encode(records)
            labels = [repr(float(v)) for v in y.reshape(-1).tolist()]
            write_bionemo_csv(list(zip(seqs, labels, strict=True)), path, task_type="regression",
                              max_length=self.data_cfg.max_length, crop=self.data_cfg.crop)
        return CsvData(path, y, labels)

    def embedding_key(self, seqs: Sequence[str]) -> str:
        return cache_key({"backend": "bionemo", "model": self.model_cfg.name,
                             "max_length": self.data_cfg.max_length, "crop": self.data_cfg.crop,
                             "precision": self.place.precision}, seqs)

    def _embeddings(self, seqs: list[str]) -> torch.Tensor:
        """BioNeMo's pooled embeddings of ``seqs`` (cached), float32 on the CPU."""
        from fedbio.backends.bionemo.args import bionemo_precision, infer_args, to_infer_argv
        from fedbio.backends.bionemo.csvio import write_sequences_csv

        key = self.embedding_key(seqs)
        path = self.cache_dir / f"emb-bionemo-{key}.safetensors" if self.cache_dir else None
        if path is not None and path.exists():
            from safetensors.torch import load_file

            return load_file(path)["embeddings"]
        job = self.work_dir / "embed" / key
        shutil.rmtree(job / "results", ignore_errors=True)  # never read a stale result
        csv_path = write_sequences_csv(seqs, job / "sequences.csv",
                                       max_length=self.data_cfg.max_length, crop=self.data_cfg.crop)
        args = infer_args(self.pretrained_checkpoint(), csv_path, job / "results", embeddings=True,
                          micro_batch_size=self.train_cfg.batch_size,
                          precision=bionemo_precision(self.place.precision))
        self.runner(["infer_esm2", *to_infer_argv(args)])
        out = embeddings_from(read_predictions(job / "results"), len(seqs), str(job / "results"))
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            save_file({"embeddings": out}, str(tmp))
            tmp.replace(path)
        return out

    def pretrained_checkpoint(self) -> Path:
        """The ESM-2nv checkpoint of the preset (``bionemo.core.data.load.load``, once)."""
        if self._pretrained is None:
            from fedbio.backends.bionemo.args import _bionemo_load, checkpoint_tag

            self._pretrained = Path((self.load or _bionemo_load)(checkpoint_tag(self.model_cfg.name)))
        return self._pretrained

    # -- training and scoring -------------------------------------------------------------------
    def fit(self, train, valid, epochs: float, *, writer=None, tag: str = "", prox=None,
            select: bool = True, step_offset: int = 0, **kwargs) -> list[dict]:
        """head: fedbio's trainer on the embeddings; full/lora: one ``finetune_esm2`` run."""
        if self.head_mode:
            from fedbio.training.trainer import fit

            return fit(self.module, train, valid, self.train_cfg, self.codec.task_type, epochs,
                       codec=self.codec, progress=self.progress, writer=writer, tag=tag, prox=prox,
                       select=select, step_offset=step_offset, **kwargs)
        if prox is not None:
            raise FedbioError("FedProx's proximal term is not available with backend 'bionemo' in "
                              f"{self.model_cfg.tuning!r} mode (BioNeMo's trainer runs the loss)")
        return self._finetune(train, valid, epochs, writer, tag, step_offset)

    def finetune_command(self, train: CsvData, valid: CsvData | None, epochs: float,
                         result_dir: Path, checkpoint: Path) -> list[str]:
        """The ``finetune_esm2`` command line of one ``fit`` (pure: nothing runs)."""
        from fedbio.backends.bionemo.args import bionemo_precision, finetune_args, to_argv

        args = finetune_args(
            self.model_cfg, replace(self.train_cfg, epochs=epochs), self.data_cfg,
            task_type=self.codec.task_type, n_train=len(train), train_csv=train.path,
            valid_csv=(valid if valid is not None and len(valid) else train).path,
            result_dir=result_dir, checkpoint=checkpoint,
            classes=self.codec.classes if self.codec.task_type == "classification" else None,
            precision=bionemo_precision(self.place.precision), experiment=EXPERIMENT)
        return ["finetune_esm2", *to_argv(args)]

    def _restore_from(self) -> Path:
        """The checkpoint the next ``finetune_esm2`` starts from: received weights written into
        the latest checkpoint, else the latest, else the pretrained one."""
        base = self.checkpoint or self.pretrained_checkpoint()
        if self._store is None or not list(self._store.parameters()):
            return base
        from fedbio.backends.bionemo.exchange import is_head
        from fedbio.backends.bionemo.weights import write_checkpoint_weights
        from fedbio.models import trainable_state_dict

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
        from fedbio.backends.bionemo.metrics import read_metrics

        result_dir = self.work_dir / f"finetune-{self._fits:03d}"
        argv = self.finetune_command(train, valid, epochs, result_dir, self._restore_from())
        self.runner(argv)
        found = read_metrics(result_dir, EXPERIMENT)
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
        return history

    def outputs(self, data) -> np.ndarray:
        """Probabilities over the global classes (classification) or standardised values."""
        if self.head_mode:
            from fedbio.training.trainer import predict

            return predict(self.module, data, task_type=self.codec.task_type,
                           device=self.place.device, precision=self.place.precision)
        return self._infer(data)

    def infer_command(self, data: CsvData, results_dir: Path) -> list[str]:
        """The ``infer_esm2`` command line scoring ``data`` with the fine-tuned model (pure)."""
        from fedbio.backends.bionemo.args import bionemo_precision, infer_args, to_infer_argv

        if self.checkpoint is None:
            raise FedbioError("no fine-tuned BioNeMo model yet: call fit first")
        lora = self.model_cfg.tuning == "lora"
        args = infer_args(self.pretrained_checkpoint() if lora else self.checkpoint, data.path,
                          results_dir, fine_tuned=True,
                          lora_checkpoint=self.checkpoint if lora else None,
                          micro_batch_size=self.train_cfg.batch_size,
                          precision=bionemo_precision(self.place.precision))
        return ["infer_esm2", *to_infer_argv(args)]

    def _infer(self, data: CsvData) -> np.ndarray:
        results = self.work_dir / f"infer-{self._fits:03d}-{data.path.stem}"
        shutil.rmtree(results, ignore_errors=True)  # never read a stale result
        self.runner(self.infer_command(data, results))
        pred = read_predictions(results)
        if self.codec.task_type == "classification":
            logits = pred.get("classification_output")
            if logits is None:
                raise FedbioError(f"{results}: no classification_output in the predictions")
            probs = torch.softmax(logits.float().reshape(len(data), -1), dim=-1).numpy()
            return to_global_columns(probs, self.label_order or list(self.codec.classes),
                                     self.codec.classes)
        values = pred.get("regression_output")
        if values is None:
            raise FedbioError(f"{results}: no regression_output in the predictions")
        return values.float().reshape(len(data), -1).numpy()

    def score(self, data, ci: bool = False) -> dict:
        from fedbio.training.trainer import scores_of

        return scores_of(data.y.numpy(), self.outputs(data), self.codec.task_type, self.codec, ci)

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
        from fedbio.backends.bionemo.args import checkpoint_tag

        return checkpoint_tag(self.model_cfg.name)
