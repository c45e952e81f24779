"""``fedbio predict``: score every record of a FASTA or CSV file with a saved model.

    fedbio predict --model runs/central/model --fasta new_proteins.fasta --out preds.csv

Writes ``id,predicted,<one probability column per class>`` (classification), ``id,predicted``
(regression, original units) or ``id,task,predicted,<one column per task>`` (multi-task
regression, original units; ``predicted`` is the record's own task's value when the file has a
``task`` column). Labels in the input are ignored; bad input fails as ``split`` does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from fedbio.config import DataConfig, from_dict
from fedbio.data import read_records
from fedbio.errors import FedbioError
from fedbio.tasks import LabelCodec


def load_predictor(folder: str | Path, trust_remote_code: bool = False):
    """(learner-like objects) for a saved model folder: tokenizer, model, codec, data config.

    ``trust_remote_code``: see ``fedbio.models.load_model`` (remote-code encoders only)."""
    from fedbio.models import load_model

    folder = Path(folder)
    meta_path = folder / "fedbio_task.json"
    if not meta_path.is_file():
        raise FedbioError(f"--model {folder} is not a fedbio model folder (no fedbio_task.json)")
    meta = json.loads(meta_path.read_text())
    codec = LabelCodec(**meta["codec"])
    data_cfg = from_dict(DataConfig, meta["data"])
    tokenizer, model, model_meta = load_model(folder, trust_remote_code=trust_remote_code)
    return tokenizer, model, codec, data_cfg, model_meta


def _unlabelled(path: Path):
    """Records whatever their labels say (values, classes, or none)."""
    return read_records(path, labelled=False)


def predict_file(model_dir: str | Path, fasta: str | Path, out: str | Path,
                 overwrite: bool = False, batch_size: int = 32, device: str = "auto",
                 precision: str = "auto", trust_remote_code: bool = False) -> int:
    """Predict every record of ``fasta`` with the saved model; returns the number of records.

    ``device``/``precision`` as ``TrainConfig``'s (``fedbio.device``): the model and each batch
    go to the device, outputs come back float32 on the CPU.
    """
    from fedbio.batching import TensorData, tokenize
    from fedbio.config import ModelConfig
    from fedbio.device import placement
    from fedbio.trainer import predict

    out = Path(out)
    if out.exists() and not overwrite:
        raise FedbioError(f"--out {out} exists; pass --overwrite to replace it")
    place = placement(device=device, precision=precision)  # bad values fail before any loading
    tokenizer, model, codec, data_cfg, model_meta = load_predictor(model_dir, trust_remote_code)
    model.to(place.device)
    records = _unlabelled(Path(fasta))
    dummy = torch.zeros(len(records), dtype=torch.long)
    model_cfg = from_dict(ModelConfig, model_meta.get("model_config", {}))
    if model_cfg.is_composition:
        from fedbio.models import composition_features

        data = TensorData(torch.from_numpy(composition_features([r.sequence for r in records])), dummy)
    else:
        data = tokenize([r.sequence for r in records], dummy, tokenizer, data_cfg.max_length, data_cfg.crop)
    outputs = predict(model, data, batch_size, codec.task_type, device=place.device,
                      precision=place.precision)
    write_predictions(out, records, outputs, codec)
    return len(records)


def write_predictions(out: str | Path, records, outputs, codec: LabelCodec,
                      truth: bool = False) -> Path:
    """Write one row per record (all at once): ``id,[label,]predicted,<class probabilities>``.

    ``truth=True`` adds the record's own label (the runs keep test-set predictions for reports).
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.part")
    out.parent.mkdir(parents=True, exist_ok=True)
    label = ["label"] if truth else []
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if codec.task_type == "classification":
            writer.writerow(["id", *label, "predicted", *codec.classes])
            for rec, p in zip(records, outputs, strict=True):
                mark = [rec.label] if truth else []
                writer.writerow([rec.id, *mark, codec.classes[int(p.argmax())],
                                 *(f"{v:.6f}" for v in p)])
        elif codec.task_type == "multitask":
            # every task's prediction; ``predicted`` is the record's own task's, when it has one
            values = codec.decode_values(outputs)
            writer.writerow(["id", "task", *label, "predicted", *codec.classes])
            for rec, v in zip(records, values, strict=True):
                mark = [rec.label] if truth else []
                own = f"{float(v[codec.classes.index(rec.task)]):.6g}" if rec.task in codec.classes else ""
                writer.writerow([rec.id, rec.task or "", *mark, own, *(f"{float(x):.6g}" for x in v)])
        else:
            values = codec.decode_values(outputs)
            writer.writerow(["id", *label, "predicted"])
            for rec, v in zip(records, values, strict=True):
                mark = [rec.label] if truth else []
                writer.writerow([rec.id, *mark, f"{float(v[0]):.6g}"])
    tmp.replace(out)
    return out
