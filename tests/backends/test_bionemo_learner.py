"""The BioNeMo learner (fedbio.backends.bionemo.learner, .results, .weights, .csvio) and its file
formats, with stand-ins: BioNeMo's commands (infer_esm2, finetune_esm2) are played by a stand-in
that records each command and writes what the real ones write. No GPU and no BioNeMo here."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.batching import TensorData
from fedbio.data.records import Record
from fedbio.data.tasks import LabelCodec
from fedbio.errors import DataError, FedbioError

CODEC = LabelCodec("classification", ["a", "b", "c"])


# -- BioNeMo stand-ins ---------------------------------------------------------------------------
def _infer_parser() -> argparse.ArgumentParser:
    """BioNeMo's ``infer_esm2`` options (bionemo.esm2.scripts.infer_esm2.get_parser, 2.5-2.7)."""
    p = argparse.ArgumentParser()
    for name in ("checkpoint-path", "data-path", "results-path", "precision", "prediction-interval",
                 "config-class", "lora-checkpoint-path"):
        p.add_argument(f"--{name}", type=str)
    for name in ("num-gpus", "num-nodes", "micro-batch-size", "pipeline-model-parallel-size",
                 "tensor-model-parallel-size"):
        p.add_argument(f"--{name}", type=int)
    for name in ("include-hiddens", "include-input-ids", "include-embeddings", "include-logits"):
        p.add_argument(f"--{name}", action="store_true")
    return p


class StandIn:
    """Plays infer_esm2 / finetune_esm2: records every command, writes what BioNeMo writes."""

    def __init__(self, hidden=320, n_classes=3):
        self.calls: list[list[str]] = []
        self.hidden, self.n_classes = hidden, n_classes

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "infer_esm2":
            args = _infer_parser().parse_args(argv[1:])
            seqs = Path(args.data_path).read_text().splitlines()[1:]
            n = len(seqs)
            out = Path(args.results_path)
            out.mkdir(parents=True, exist_ok=True)
            if args.include_embeddings:  # BioNeMo writes bf16 under bf16-mixed: any float dtype
                emb = torch.stack([torch.full((self.hidden,), float(len(s.split(",")[0]))) for s in seqs])
                torch.save({"embeddings": emb.to(torch.bfloat16)}, out / "predictions__rank_0.pt")
            else:
                logits = torch.arange(n * self.n_classes, dtype=torch.float32).reshape(n, -1) % 5
                torch.save({"classification_output": logits}, out / "predictions__rank_0.pt")
        elif argv[0] == "finetune_esm2":
            make_finetune_result(argv)


def _fake_load(tmp_path):
    def load(tag):
        folder = tmp_path / "bionemo-cache" / tag.replace("/", "_")
        if not folder.exists():
            _dcp(folder, {"module.encoder.w": torch.ones(4, 3), "module.embedding.w": torch.ones(5, 3)})
        return folder
    return load


def _dcp(folder: Path, state: dict) -> Path:
    """A NeMo2-like checkpoint folder: weights/ in torch.distributed.checkpoint format."""
    from torch.distributed.checkpoint.format_utils import torch_save_to_dcp

    (folder / "context").mkdir(parents=True, exist_ok=True)
    (folder / "context" / "model.yaml").write_text("stand-in\n")
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "flat.pt")
    torch_save_to_dcp(str(folder / "flat.pt"), str(folder / "weights"))
    (folder / "flat.pt").unlink()
    (folder / "weights" / "common.pt").write_bytes(b"megatron common state")
    return folder


def make_finetune_result(argv):
    """What finetune_esm2 leaves: a -last checkpoint (weights as Megatron names them, optimizer
    state and TE extra state included) and TensorBoard scalars."""
    import io

    from torch.utils.tensorboard import SummaryWriter

    opts = dict(zip(argv[1::1], argv[2::1], strict=False))
    result = Path(opts["--result-dir"]) / opts["--experiment-name"]
    steps = int(opts["--num-steps"])
    restore = Path(opts["--restore-from-checkpoint-path"])
    from fedbio.backends.bionemo.weights import read_checkpoint_weights

    encoder = read_checkpoint_weights(restore)["module.encoder.w"]
    ckpt = result / "dev" / "checkpoints" / f"checkpoint-step={steps - 1}-consumed_samples=1.0-last"
    _dcp(ckpt, {"module.encoder.w": encoder + 1,  # "trained"
                "module.embedding.w": torch.ones(5, 3),
                "module.classification_head.finetune_model.0.weight": torch.full((2, 3), 0.5),
                "module.encoder.layers.self_attention._extra_state/shard_0_1": io.BytesIO(b"fp8"),
                "optimizer.state.exp_avg.module.encoder.w": torch.zeros(4, 3)})
    writer = SummaryWriter(str(result / "dev"))
    per_epoch = int(opts["--val-check-interval"])
    for step in range(steps):
        writer.add_scalar("reduced_train_loss", 2.0 - step / 10, step)
        if (step + 1) % per_epoch == 0:
            writer.add_scalar("val_acc", 0.5 + step / 100, step + 1)
            writer.add_scalar("val_loss", 1.5 - step / 100, step + 1)
    writer.close()


def _bionemo_learner(tmp_path, tuning, codec=CODEC, **kw):
    from fedbio.backends.bionemo.learner import BioNemoLearner

    runner = StandIn(n_classes=len(codec.classes or [1]))
    learner = BioNemoLearner.build(ModelConfig(name="esm2-8m", backend="bionemo", tuning=tuning),
                                   DataConfig(max_length=12), TrainConfig(batch_size=4, epochs=2, **kw),
                                   codec, tmp_path / "cache", progress=False, runner=runner,
                                   load=_fake_load(tmp_path), work_dir=tmp_path / "work")
    return learner, runner


def _recs(n=10, labels=("a", "b")):
    return [Record(f"p{i}", "M" + "KLV" * (i + 1), labels[i % len(labels)]) for i in range(n)]


def test_head_mode_embeds_once_with_infer_esm2_and_trains_fedbios_head(tmp_path):
    learner, runner = _bionemo_learner(tmp_path, "head")
    recs = _recs(10)
    data = learner.inputs(recs)
    assert isinstance(data, TensorData) and data.x.dtype == torch.float32
    assert data.x.shape == (10, 320)
    assert data.x[0, 0] == len(recs[0].sequence)  # stand-in: the (cropped) length, in CSV order
    assert data.x[9, 0] == 12  # cropped to max_length
    (cmd,) = runner.calls
    args = _infer_parser().parse_args(cmd[1:])
    assert cmd[0] == "infer_esm2" and args.include_embeddings and args.config_class == "ESM2Config"
    assert args.checkpoint_path.endswith("esm2_8m:2.0") and args.precision == "fp32"
    assert args.micro_batch_size == 4 and args.prediction_interval == "epoch"
    lines = Path(args.data_path).read_text().splitlines()
    assert lines[0] == "sequences" and len(lines) == 11 and max(len(x) for x in lines[1:]) == 12
    again = learner.inputs(recs)  # cached: infer_esm2 runs once per record set
    assert len(runner.calls) == 1 and torch.equal(again.x, data.x)
    assert list((tmp_path / "cache").glob("emb-bionemo-*.safetensors"))
    history = learner.fit(data, data, 2)
    assert [row["epoch"] for row in history] == [1, 2] and "valid_accuracy" in history[0]
    assert learner.outputs(data).shape == (10, 3)
    state = learner.trainable_state()
    assert sorted(state) == ["head.net.0.bias", "head.net.0.weight", "head.net.3.bias", "head.net.3.weight"]
    learner.load_trainable_state(state)
    folder = learner.save(tmp_path / "saved")
    meta = json.loads((folder / "fedbio_model.json").read_text())
    assert meta["kind"] == "bionemo-head" and meta["checkpoint_tag"] == "esm2/8m:2.0"
    from fedbio.models import load_model

    with pytest.raises(FedbioError, match="backend 'bionemo'"):
        load_model(folder)


def test_read_predictions_per_batch_files_and_bad_shapes(tmp_path):
    from fedbio.backends.bionemo.results import embeddings_from, read_predictions

    for i in (0, 2, 1, 10):
        torch.save({"embeddings": torch.full((2, 3), float(i))}, tmp_path / f"predictions__rank_0__batch_{i}.pt")
    got = read_predictions(tmp_path)["embeddings"]
    assert got[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 10, 10]
    with pytest.raises(FedbioError, match=r"expected \[7, hidden\]"):
        embeddings_from({"embeddings": got}, 7)
    with pytest.raises(FedbioError, match="include-embeddings"):
        embeddings_from({"logits": got}, 8)
    with pytest.raises(FedbioError, match="no predictions__rank_0.pt"):
        read_predictions(tmp_path / "nothing")


def test_full_mode_csvs_use_the_global_class_list(tmp_path):
    learner, _ = _bionemo_learner(tmp_path, "full")
    site = _recs(6, labels=("c", "a"))  # a site that never saw "b"
    data = learner.inputs(site)
    lines = data.path.read_text().splitlines()
    assert lines[0] == "sequences,labels" and [x.split(",")[1] for x in lines[1:]] == ["c", "a"] * 3
    assert data.y.tolist() == [2, 0] * 3  # ids in the global list, not the site's
    with pytest.raises(DataError, match="not in the global class list"):
        learner.inputs(_recs(2, labels=("z",)))


def test_full_mode_runs_finetune_esm2_and_exchanges_bare_trainable_names(tmp_path):
    from fedbio.backends.bionemo.weights import read_checkpoint_weights
    from fedbio.models import load_trainable_state_dict, trainable_state_dict

    learner, runner = _bionemo_learner(tmp_path, "full")
    assert learner.trainable_state() == {} and not list(learner.model.parameters())
    train, valid = learner.inputs(_recs(8, ("c", "a"))), learner.inputs(_recs(4, ("a", "c")))
    history = learner.fit(train, valid, 2)
    cmd = runner.calls[-1]
    assert cmd[0] == "finetune_esm2"
    opts = dict(zip(cmd[1::1], cmd[2::1], strict=False))
    assert opts["--restore-from-checkpoint-path"].endswith("esm2_8m:2.0")  # pretrained first
    assert opts["--mlp-target-size"] == "3" and opts["--num-steps"] == "4" and opts["--precision"] == "fp32"
    assert opts["--train-data-path"] == str(train.path) and opts["--valid-data-path"] == str(valid.path)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0]["valid_accuracy"] == pytest.approx(0.51) and history[0]["train_loss"] == pytest.approx(1.9)
    state = learner.trainable_state()
    assert sorted(state) == ["classification_head.finetune_model.0.weight", "embedding.w", "encoder.w"]
    assert torch.equal(state["encoder.w"], torch.full((4, 3), 2.0))
    assert sorted(trainable_state_dict(learner.model)) == sorted(state)  # what site.py calls
    # outputs: BioNeMo's class ids are the sorted labels of the training CSV -> global columns
    probs = learner.outputs(valid)
    assert probs.shape == (4, 3) and np.allclose(probs[:, 1], 0) and np.allclose(probs.sum(1), 1)
    assert learner.score(valid)["accuracy"] >= 0
    # received weights go into the checkpoint the next fit restores from; the head cannot
    received = {k: v + 10 for k, v in state.items()}
    load_trainable_state_dict(learner.model, received)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner.fit(train, valid, 1)
    assert any("re-initialises the task head" in str(w.message) for w in caught)
    restore = Path(dict(zip(runner.calls[-1][1::1], runner.calls[-1][2::1], strict=False))
                   ["--restore-from-checkpoint-path"])
    assert restore.name == "restore-001"
    written = read_checkpoint_weights(restore)
    assert torch.equal(written["module.encoder.w"], torch.full((4, 3), 12.0))
    assert "optimizer.state.exp_avg.module.encoder.w" in written  # the rest is kept as it was
    assert (restore / "context" / "model.yaml").is_file() and (restore / "weights" / "common.pt").is_file()
    with pytest.raises(FedbioError, match="FedProx"):
        learner.fit(train, valid, 1, prox=(0.1, {}))


def test_lora_scores_through_the_adapter_checkpoint(tmp_path):
    learner, runner = _bionemo_learner(tmp_path, "lora")
    data = learner.inputs(_recs(4, ("a", "b")))
    with pytest.raises(FedbioError, match="call fit first"):
        learner.outputs(data)
    learner.fit(data, None, 1)
    cmd = learner.infer_command(data, tmp_path / "r")
    args = _infer_parser().parse_args(cmd[1:])
    assert args.config_class == "ESM2FineTuneSeqConfig" and args.checkpoint_path.endswith("esm2_8m:2.0")
    assert args.lora_checkpoint_path == str(learner.checkpoint) and not args.include_embeddings


def test_label_order_and_global_columns():
    from fedbio.backends.bionemo.results import history_from_scalars, label_order, to_global_columns

    assert label_order(["c", "a", "c"]) == ["a", "c"]
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.5, 0.0]], np.float32)  # 3rd column: untrained id
    out = to_global_columns(probs, ["a", "c"], ["a", "b", "c"])
    assert np.allclose(out, [[0.2 / 0.9, 0, 0.7 / 0.9], [0.5, 0, 0.5]])
    with pytest.raises(FedbioError, match="not in the global class list"):
        to_global_columns(probs, ["x"], ["a", "b"])
    rows = history_from_scalars({"reduced_train_loss": [(0, 3.0), (1, 1.0), (2, 2.0), (3, 0.0)],
                                 "val_acc": [(2, 0.5), (4, 0.75)], "val_loss": [(4, 0.3)]}, 2, 5)
    assert rows == [{"epoch": 6, "train_loss": 2.0, "valid_accuracy": 0.5},
                    {"epoch": 7, "train_loss": 0.0, "valid_accuracy": 0.75, "valid_loss": 0.3}]
    assert history_from_scalars({"reduced_train_loss": [(0, 1.0), (3, 3.0)]}, 2) == [
        {"epoch": 2, "train_loss": 2.0}]


def test_checkpoint_weights_are_checked(tmp_path):
    from fedbio.backends.bionemo.weights import (
        model_weights,
        read_checkpoint_weights,
        write_checkpoint_weights,
    )

    base = _dcp(tmp_path / "ckpt", {"module.a.w": torch.zeros(2), "optimizer.x": torch.zeros(2)})
    assert sorted(model_weights(read_checkpoint_weights(base))) == ["module.a.w"]
    with pytest.raises(FedbioError, match="no model weight named 'b.w'"):
        write_checkpoint_weights(base, {"b.w": torch.zeros(2)}, tmp_path / "out")
    with pytest.raises(FedbioError, match=r"shape \(3,\)"):
        write_checkpoint_weights(base, {"a.w": torch.zeros(3)}, tmp_path / "out")
    with pytest.raises(FedbioError, match="no torch.distributed checkpoint"):
        read_checkpoint_weights(tmp_path)


def test_write_sequences_csv(tmp_path):
    from fedbio.backends.bionemo.csvio import write_sequences_csv

    path = write_sequences_csv(["MKVL" + "A" * 20 + "KDEL", "mkv"], tmp_path / "s.csv", max_length=8)
    assert path.read_text().splitlines() == ["sequences", "MKVLKDEL", "MKV"]
    with pytest.raises(DataError, match="record 2: not a protein"):
        write_sequences_csv(["MKV", "M1V"], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
