"""``fedbio predict``: score every record of a FASTA or CSV file with a saved model.

    fedbio predict --model runs/central/model --fasta new_proteins.fasta --out preds.csv

Writes ``id,predicted,<one probability column per class>`` (classification), ``id,predicted``
(regression, original units) or ``id,task,predicted,<one column per task>`` (multi-task
regression, original units; ``predicted`` is the record's own task's value when the file has a
``task`` column). Labels in the input are ignored; bad input fails as ``split`` does.

Every input (device and precision, ``--out``, the model folder and each of its files, the
sequences) is checked before anything is written; each problem is one FedbioError that starts
with the file at fault. ``--out`` follows ``fedbio.outputs.output_file``: written beside as
``NAME.running`` and renamed when complete, so a failure leaves nothing behind.
"""

from __future__ import annotations

import csv
import errno
import math
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbio.config import CROP_POLICIES, TASK_TYPES, DataConfig
from fedbio.data.records import read_records
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError
from fedbio.models.checkpoint_files import RESAVE

TASK_FILE = "fedbio_task.json"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_scale(codec: dict, path: Path) -> None:
    """``mean``/``std``: finite numbers (one per task for ``multitask``), ``std`` above 0."""
    n = len(codec["classes"]) if codec["task_type"] == "multitask" else None
    for key in ("mean", "std"):
        value = codec.get(key, 0.0 if key == "mean" else 1.0)
        per_task = n is not None and isinstance(value, list)  # multitask: one per task, or one
        values = value if per_task else [value]
        if (per_task and len(values) != n) or not all(_finite(v) for v in values):
            want = "a finite number" + (f" or a list of {n}" if n is not None else "")
            raise FedbioError(f"{path}: codec {key} is {value!r}, expected {want}; {RESAVE}")
        if key == "std" and not all(v > 0 for v in values):
            raise FedbioError(f"{path}: codec std is {value!r}, expected above 0; {RESAVE}")


def read_codec(path: Path, meta: dict) -> LabelCodec:
    """The ``LabelCodec`` in ``fedbio_task.json``, checked field by field."""
    codec = meta.get("codec")
    if not isinstance(codec, dict):
        raise FedbioError(f"{path}: has no codec object (task type and classes); {RESAVE}")
    task_type = codec.get("task_type")
    if task_type not in TASK_TYPES:
        raise FedbioError(f"{path}: codec task_type is {task_type!r}, expected one of "
                          f"{', '.join(TASK_TYPES)}; {RESAVE}")
    classes = codec.get("classes")
    if task_type != "regression" or classes is not None:
        if not isinstance(classes, list) or not classes or \
                not all(isinstance(c, str) for c in classes):
            raise FedbioError(f"{path}: codec classes is {classes!r}, expected a list of names; "
                              f"{RESAVE}")
        if len(set(classes)) != len(classes):
            raise FedbioError(f"{path}: codec classes name a class twice; {RESAVE}")
    _check_scale(codec, path)
    return LabelCodec(task_type, classes, codec.get("mean", 0.0), codec.get("std", 1.0))


def read_data_config(path: Path, meta: dict) -> DataConfig:
    """The ``DataConfig`` in ``fedbio_task.json`` (how sequences were cut for training)."""
    from fedbio.models.saving import typed_config

    if "data" not in meta:
        raise FedbioError(f"{path}: has no data object (max_length, crop); {RESAVE}")
    data_cfg = typed_config(DataConfig, meta["data"], f"{path}: data")
    if data_cfg.max_length < 1 or data_cfg.crop not in CROP_POLICIES:
        raise FedbioError(f"{path}: data max_length {data_cfg.max_length!r} / crop "
                          f"{data_cfg.crop!r} cannot cut sequences; {RESAVE}")
    return data_cfg


def _check_fit(codec: LabelCodec, model_meta: dict, task_path: Path, meta_path: Path) -> None:
    """The codec must decode exactly the model's outputs (classes or tasks) and be its task."""
    n_outputs = int(model_meta["n_outputs"])
    if codec.n_outputs != n_outputs:
        what = {"regression": "value", "multitask": "tasks"}.get(codec.task_type, "classes")
        raise FedbioError(f"{task_path}: the codec has {codec.n_outputs} {what} but "
                          f"{meta_path.name} says the model has {n_outputs} output(s); the two "
                          f"files come from different models: {RESAVE}")
    if codec.task_type != "regression" and list(model_meta.get("labels", [])) != codec.classes:
        raise FedbioError(f"{task_path}: the codec names {codec.classes} but {meta_path.name} "
                          f"names {model_meta.get('labels')}; the two files come from different "
                          f"models: {RESAVE}")
    task = {"scl": "classification"}.get(model_meta.get("task"), model_meta.get("task"))
    if task is not None and task != codec.task_type:
        raise FedbioError(f"{task_path}: codec task_type {codec.task_type!r} but "
                          f"{meta_path.name} says task {task!r}; {RESAVE}")


def load_predictor(folder: str | Path, trust_remote_code: bool = False):
    """(learner-like objects) for a saved model folder: tokenizer, model, codec, data config.

    Both JSON files are checked, and against each other, before the model is built.
    ``trust_remote_code``: see ``fedbio.models.load_model`` (remote-code encoders only)."""
    from fedbio.models import load_model
    from fedbio.models.checkpoint_files import read_json_object
    from fedbio.models.saving import META_FILE, bionemo_refusal, is_bionemo, read_model_meta

    folder = Path(folder)
    model_meta = read_model_meta(folder, option="--model")
    task_path = folder / TASK_FILE
    if not task_path.is_file():
        raise FedbioError(f"{folder}: has no {TASK_FILE} (the labels the model predicts); "
                          "save the model with Learner.save, or give the folder fedbio run wrote "
                          "(RUN/model)")
    if is_bionemo(model_meta):
        raise bionemo_refusal(folder, model_meta)
    meta = read_json_object(task_path, RESAVE)
    codec = read_codec(task_path, meta)
    data_cfg = read_data_config(task_path, meta)
    _check_fit(codec, model_meta, task_path, folder / META_FILE)
    model_meta["trained_tasks"] = read_trained_tasks(task_path, meta, codec)
    tokenizer, model, loaded = load_model(folder, trust_remote_code=trust_remote_code)
    return tokenizer, model, codec, data_cfg, {**loaded, "trained_tasks": model_meta["trained_tasks"]}


def read_trained_tasks(task_path: Path, meta: dict, codec: LabelCodec) -> list[str] | None:
    """The tasks whose heads learnt (``Learner.save``); None: every output is trained."""
    tasks = meta.get("trained_tasks")
    if tasks is None:
        return None
    if codec.task_type != "multitask" or not isinstance(tasks, list) or not tasks \
            or not set(tasks) <= set(codec.classes):
        raise FedbioError(f"{task_path}: trained_tasks {tasks!r} is not a list of the codec's tasks; "
                          f"{RESAVE}")
    return tasks


def check_input_file(path: str | Path, option: str = "--fasta") -> Path:
    """``path`` must be a readable regular file: a folder, a link loop, a pipe or an unreadable
    file is one FedbioError that starts with it (``read_records`` says what is wrong inside)."""
    path = Path(path)
    use = f"give {option} a FASTA or CSV file of sequences"
    try:
        mode = path.stat().st_mode  # stat first: opening a pipe would wait for a writer
    except OSError as err:
        why = {errno.ELOOP: "a symbolic link loop, not a file",
               errno.ENOENT: "no such file"}.get(err.errno, f"cannot read it ({err.strerror})")
        raise FedbioError(f"{path}: {why}; {use}") from None
    if stat.S_ISDIR(mode):
        raise FedbioError(f"{path}: a folder, not a file; {use}")
    if not stat.S_ISREG(mode):
        raise FedbioError(f"{path}: not a regular file (a pipe or a device); {use}")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as err:
        raise FedbioError(f"{path}: cannot read it ({err.strerror}); {use}") from None
    return path


def _unlabelled(path: Path):
    """Records whatever their labels say (values, classes, or none)."""
    return read_records(path, labelled=False)


def check_outputs(outputs: Any, records: list, codec: LabelCodec, source: str | Path) -> np.ndarray:
    """One row per record, one column per output the codec decodes; else a FedbioError (a model
    whose head does not fit its codec would write wrong class names, or fail half-way)."""
    array = np.asarray(outputs)
    if array.ndim != 2 or array.shape[0] != len(records) or array.shape[1] != codec.n_outputs:
        raise FedbioError(f"{source}: the model gave outputs of shape {array.shape} for "
                          f"{len(records)} record(s), the codec decodes {codec.n_outputs} "
                          "column(s); the model does not fit its codec")
    return array


def predict_file(model_dir: str | Path, fasta: str | Path, out: str | Path,
                 overwrite: bool = False, batch_size: int = 32, device: str = "auto",
                 precision: str = "auto", trust_remote_code: bool = False) -> int:
    """Predict every record of ``fasta`` with the saved model; returns the number of records.

    ``device``/``precision`` as ``TrainConfig``'s (``fedbio.training.device``): the model and each batch
    go to the device, outputs come back float32 on the CPU. Every input is checked before
    anything is written; ``out`` is written whole or not at all (``fedbio.outputs``).
    """
    from fedbio.outputs import check_output, output_file
    from fedbio.training.device import placement

    place = placement(device=device, precision=precision)  # bad values fail before any loading
    model_dir, fasta = Path(model_dir), Path(fasta)
    inputs = [model_dir, fasta]
    check_output(out, overwrite=overwrite, inputs=inputs, file=True)  # writes nothing
    check_input_file(fasta)
    tokenizer, model, codec, data_cfg, model_meta = load_predictor(model_dir, trust_remote_code)
    records = _unlabelled(fasta)
    outputs = _predict(model, tokenizer, model_meta, data_cfg, codec, records, batch_size, place)
    outputs = check_outputs(outputs, records, codec, model_dir)
    with output_file(out, overwrite=overwrite, inputs=inputs) as running:
        _write_rows(running, records, outputs, codec, tasks=model_meta.get("trained_tasks"))
    return len(records)


def _predict(model, tokenizer, model_meta: dict, data_cfg: DataConfig, codec: LabelCodec,
             records: list, batch_size: int, place) -> np.ndarray:
    """The model's outputs for ``records`` (probabilities, or standardised values)."""
    from fedbio.data.batching import TensorData, tokenize
    from fedbio.training.trainer import predict

    model.to(place.device)
    dummy = torch.zeros(len(records), dtype=torch.long)
    if model_meta.get("kind") == "composition":  # the saved kind, checked against model_config
        from fedbio.models import composition_features

        data = TensorData(torch.from_numpy(composition_features([r.sequence for r in records])), dummy)
    else:
        data = tokenize([r.sequence for r in records], dummy, tokenizer, data_cfg.max_length, data_cfg.crop)
    return predict(model, data, batch_size, codec.task_type, device=place.device,
                   precision=place.precision)


def write_predictions(out: str | Path, records, outputs, codec: LabelCodec,
                      truth: bool = False) -> Path:
    """Write one row per record (all at once): ``id,[label,]predicted,<class probabilities>``.

    ``truth=True`` adds the record's own label (the runs keep test-set predictions for reports).
    ``out`` is written completely or not at all: rows go to ``.NAME.part``, renamed when done
    and removed on any failure. Outputs that do not fit the codec are refused before writing.
    """
    out = Path(out)
    outputs = check_outputs(outputs, list(records), codec, out)
    tmp = out.with_name(f".{out.name}.part")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_rows(tmp, records, outputs, codec, truth)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _write_rows(path: Path, records, outputs, codec: LabelCodec, truth: bool = False,
                tasks: list[str] | None = None) -> None:
    """The CSV itself (see ``write_predictions``). ``tasks``: multi-task columns to write (the
    tasks whose heads learnt; default all): an untrained head's output is no prediction."""
    label = ["label"] if truth else []
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if codec.task_type == "classification":
            writer.writerow(["id", *label, "predicted", *codec.classes])
            for rec, p in zip(records, outputs, strict=True):
                mark = [rec.label] if truth else []
                writer.writerow([rec.id, *mark, codec.classes[int(p.argmax())],
                                 *(f"{v:.6f}" for v in p)])
        elif codec.task_type == "multitask":
            # each learnt task's prediction; ``predicted`` is the record's own task's, when it has one
            values = codec.decode_values(outputs)
            tasks = tasks or codec.classes
            cols = [codec.classes.index(t) for t in tasks]
            writer.writerow(["id", "task", *label, "predicted", *tasks])
            for rec, v in zip(records, values, strict=True):
                mark = [rec.label] if truth else []
                own = f"{float(v[codec.classes.index(rec.task)]):.6g}" if rec.task in tasks else ""
                writer.writerow([rec.id, rec.task or "", *mark, own, *(f"{float(v[j]):.6g}" for j in cols)])
        else:
            values = codec.decode_values(outputs)
            writer.writerow(["id", *label, "predicted"])
            for rec, v in zip(records, values, strict=True):
                mark = [rec.label] if truth else []
                writer.writerow([rec.id, *mark, f"{float(v[0]):.6g}"])
