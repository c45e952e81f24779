"""Device and precision (fedbio.training.device), backend dispatch (Learner.build -> BioNemoLearner), the
BioNeMo learner's file formats with stand-ins, and opt-in remote-code checkpoints. No GPU and no
BioNeMo here: CUDA is faked where only the choice is tested, BioNeMo's commands are stand-ins that
write what the real ones write."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SCL

import fedbio.training.device as device_mod
from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.batching import TensorData
from fedbio.data.records import Record, class_list, read_records
from fedbio.data.tasks import LabelCodec
from fedbio.errors import DataError, FedbioError
from fedbio.training.device import (
    autocast,
    autocast_kwargs,
    placement,
    resolve_device,
    resolve_precision,
    to_device,
)
from fedbio.training.learner import Learner

NO_CUDA = not torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch says it has 2 CUDA devices with bfloat16 (choices only: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(device_mod, "_bf16_supported", lambda dev: dev.type == "cuda")


# -- resolving device and precision --------------------------------------------------------------
@needs_no_cuda
def test_auto_is_cpu_and_float32_here():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "32"
    place = placement(TrainConfig())
    assert (place.device, place.precision) == (torch.device("cpu"), "32")
    assert "no CUDA GPU here" in place.reason


@needs_no_cuda
@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_names_the_field(asked):
    with pytest.raises(FedbioError, match=r"^device .* asks for a CUDA GPU.*'auto' or 'cpu'") as err:
        placement(TrainConfig(device=asked))
    assert "\n" not in str(err.value)
    with pytest.raises(FedbioError, match="^TrainConfig.device"):
        resolve_device(asked, field="TrainConfig.device")


def test_unknown_devices_and_precisions():
    with pytest.raises(FedbioError, match="unknown device 'gpu'.*cuda:N"):
        resolve_device("gpu")
    with pytest.raises(FedbioError, match="unknown precision 'fp16'.*bf16-mixed"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("32", torch.device("cpu")) == "32"
    assert resolve_device("cpu") == torch.device("cpu")


def test_bf16_mixed_is_refused_on_the_cpu_not_downgraded():
    with pytest.raises(FedbioError, match="'bf16-mixed' needs a CUDA device.*does not downgrade"):
        resolve_precision("bf16-mixed", torch.device("cpu"))
    with pytest.raises(FedbioError, match="^precision 'bf16-mixed'"):
        placement(TrainConfig(device="cpu", precision="bf16-mixed"))


def test_choices_on_a_cuda_machine(fake_cuda, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(FedbioError, match="2 CUDA device"):
        resolve_device("cuda:2")
    assert resolve_precision("auto", torch.device("cuda")) == "bf16-mixed"
    assert resolve_precision("auto", torch.device("cpu")) == "32"  # device cpu on a GPU machine
    place = placement(TrainConfig())
    assert (str(place.device), place.precision, place.is_cuda) == ("cuda", "bf16-mixed", True)
    assert "Fake GPU" in place.reason
    monkeypatch.setattr(device_mod, "_bf16_supported", lambda dev: False)  # e.g. a V100
    assert resolve_precision("auto", torch.device("cuda")) == "32"
    with pytest.raises(FedbioError, match="does not support bfloat16"):
        resolve_precision("bf16-mixed", torch.device("cuda"))


# -- the autocast choice (pure) ------------------------------------------------------------------
def test_autocast_kwargs_is_a_pure_choice():
    assert autocast_kwargs("cuda", "bf16-mixed") == {"device_type": "cuda", "dtype": torch.bfloat16}
    assert autocast_kwargs("cuda", "32") is None
    assert autocast_kwargs("cpu", "32") is None
    with pytest.raises(FedbioError, match="CUDA only"):
        autocast_kwargs("cpu", "bf16-mixed")
    with pytest.raises(FedbioError, match="unknown precision"):
        autocast_kwargs("cuda", "auto")  # only resolved precisions get here
    assert isinstance(autocast("cpu", "32"), contextlib.nullcontext)


def test_to_device_keeps_cpu_tensors_as_they_are():
    a, b = torch.zeros(2), torch.ones(3, dtype=torch.long)
    moved = to_device((a, b, None), torch.device("cpu"))
    assert moved[0] is a and moved[1] is b and moved[2] is None


# -- CPU numbers are what they were ---------------------------------------------------------------
# A 1-epoch fit of esm2-tiny (1 thread), recorded with fedbio as it was before device/precision
# existed: the same seeds must give exactly these numbers with device "cpu" and "auto" (on a CPU).
BEFORE = {
    "full": {"train_loss": 2.377495288848877, "wsum": 1147.7590115784255,
             "out00": 0.17775586247444153},
    "head": {"train_loss": 2.267925977706909, "wsum": -3.1226740230058567,
             "out00": 0.28802648186683655},
}


@pytest.fixture(scope="module")
def tiny_records():
    recs = read_records(SCL)[::40]
    return recs[:48], recs[48:64], LabelCodec("classification", class_list(recs))


def _tiny_fit(tiny_records, tuning, **train):
    train_recs, valid_recs, codec = tiny_records
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        learner = Learner.build(ModelConfig(name="esm2-tiny", tuning=tuning), DataConfig(max_length=40),
                                TrainConfig(epochs=1, lr=3e-3, batch_size=16, threads=1, **train),
                                codec, None, progress=False)
        tr, va = learner.inputs(train_recs), learner.inputs(valid_recs)
        hist = learner.fit(tr, va, 1)
        out = learner.outputs(va)
        with torch.no_grad():
            wsum = float(sum(p.double().sum() for p in learner.module.parameters()))
    finally:
        torch.set_num_threads(threads)
    return learner, hist, out, wsum


@needs_no_cuda
@pytest.mark.parametrize("tuning", ["full", "head"])
@pytest.mark.parametrize("train", [{"device": "cpu"}, {}, {"device": "cpu", "precision": "32"}])
def test_cpu_fit_is_bit_identical_to_before(tiny_records, tuning, train):
    learner, hist, out, wsum = _tiny_fit(tiny_records, tuning, **train)
    assert learner.placement.device == torch.device("cpu") and learner.placement.precision == "32"
    assert hist[0]["train_loss"] == BEFORE[tuning]["train_loss"]
    assert wsum == BEFORE[tuning]["wsum"]
    assert float(out[0, 0]) == BEFORE[tuning]["out00"]
    assert out.dtype == np.float32
    assert all(p.device.type == "cpu" for p in learner.model.parameters())


def test_learner_refuses_a_bad_device_before_building(tiny_records):
    _, _, codec = tiny_records
    with pytest.raises(FedbioError, match="unknown device"):
        Learner.build(ModelConfig(), DataConfig(), TrainConfig(device="tpu"), codec)


def test_predict_file_takes_device_and_precision(tmp_path, tiny_records):
    from fedbio.training.predict import predict_file

    learner, _, _, _ = _tiny_fit(tiny_records, "full", device="cpu")
    learner.save(tmp_path / "model")
    fasta = tmp_path / "x.fasta"
    fasta.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in tiny_records[1]))
    assert predict_file(tmp_path / "model", fasta, tmp_path / "a.csv", device="cpu", precision="32") == 16
    assert predict_file(tmp_path / "model", fasta, tmp_path / "b.csv") == 16
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with pytest.raises(FedbioError, match="bf16-mixed"):
        predict_file(tmp_path / "model", fasta, tmp_path / "c.csv", device="cpu", precision="bf16-mixed")
    assert not (tmp_path / "c.csv").exists()


# -- backend dispatch ----------------------------------------------------------------------------
@pytest.fixture
def bionemo_here(monkeypatch):
    """resolve_backend as on a CUDA machine with BioNeMo (only the answer is faked)."""
    import fedbio.backends.bionemo.backend as backend

    monkeypatch.setattr(backend, "resolve_backend", lambda name="auto": "hf" if name == "hf" else "bionemo")


CODEC = LabelCodec("classification", ["a", "b", "c"])


def test_auto_and_hf_build_the_pytorch_learner_here():
    for backend in ("auto", "hf"):
        learner = Learner.build(ModelConfig(backend=backend), DataConfig(), TrainConfig(), CODEC,
                                progress=False)
        assert type(learner) is Learner and learner.backend == "hf"


@needs_no_cuda
def test_bionemo_without_cuda_or_bionemo_is_the_resolvers_error():
    with pytest.raises(FedbioError, match="backend 'bionemo' is not available here.*a CUDA GPU"):
        Learner.build(ModelConfig(name="esm2-8m", backend="bionemo"), DataConfig(), TrainConfig(), CODEC)
    with pytest.raises(FedbioError, match="unknown backend 'jax'"):
        Learner.build(ModelConfig(backend="jax"), DataConfig(), TrainConfig(), CODEC)


def test_dispatch_to_the_bionemo_learner(bionemo_here, tmp_path):
    from fedbio.backends.bionemo.learner import BioNemoLearner
    from fedbio.models import build_model

    learner = Learner.build(ModelConfig(name="esm2-8m", backend="bionemo", tuning="head"),
                            DataConfig(), TrainConfig(), CODEC, tmp_path, progress=False)
    assert isinstance(learner, BioNemoLearner) and learner.backend == "bionemo"
    assert learner.module is learner.model.head and learner.tokenizer is None
    assert learner.model.head.in_dim == 320  # esm2-8m's hidden size
    # auto: bionemo only for a model BioNeMo has a checkpoint of
    auto = Learner.build(ModelConfig(name="esm2-650m", backend="auto", tuning="head"),
                         DataConfig(), TrainConfig(), CODEC, progress=False)
    assert isinstance(auto, BioNemoLearner)
    for name in ("esm2-tiny", "composition"):
        kept = Learner.build(ModelConfig(name=name, backend="auto"), DataConfig(), TrainConfig(),
                             CODEC, progress=False)
        assert type(kept) is Learner
        with pytest.raises(FedbioError, match="backend 'bionemo' cannot run.*esm2-8m"):
            Learner.build(ModelConfig(name=name, backend="bionemo"), DataConfig(), TrainConfig(), CODEC)
    with pytest.raises(FedbioError, match="Learner.build"):
        build_model(ModelConfig(name="esm2-8m", backend="bionemo"), 3)
    multitask = LabelCodec("multitask", ["t1", "t2"], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(FedbioError, match="one classification or regression task"):
        Learner.build(ModelConfig(name="esm2-8m", backend="bionemo", tuning="full"), DataConfig(),
                      TrainConfig(), multitask)


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


# -- remote code (trust_remote_code) -------------------------------------------------------------
REMOTE_CODE = '''
import pathlib
from transformers import EsmConfig, EsmModel

MARKER = pathlib.Path(FOLDER) / "CODE_RAN"  # transformers runs a copy of this file elsewhere


class TinyRemoteConfig(EsmConfig):
    model_type = "fedbio_remote_esm"


class TinyRemoteModel(EsmModel):
    config_class = TinyRemoteConfig

    def __init__(self, config, add_pooling_layer=True):
        MARKER.write_text("yes")
        super().__init__(config, add_pooling_layer=add_pooling_layer)
'''


def _remote_folder(folder: Path) -> Path:
    """A checkpoint in the layout of NVIDIA's TE ESM-2 hub models: model_type fedbio does not
    know, an auto_map into a Python file shipped alongside, safetensors weights."""
    from safetensors.torch import save_file
    from transformers import EsmConfig, EsmModel

    folder.mkdir(parents=True)
    (folder / "esm_nv.py").write_text(REMOTE_CODE.replace("FOLDER", repr(str(folder))))
    config = EsmConfig(vocab_size=33, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=1026, pad_token_id=1,
                       mask_token_id=32, position_embedding_type="rotary")
    torch.manual_seed(0)
    model = EsmModel(config, add_pooling_layer=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    data = config.to_dict()
    data.update(model_type="fedbio_remote_esm", architectures=["TinyRemoteModel"],
                auto_map={"AutoConfig": "esm_nv.TinyRemoteConfig", "AutoModel": "esm_nv.TinyRemoteModel"})
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_remote_code_needs_the_opt_in_and_runs_nothing_without_it(tmp_path):
    from fedbio.models import build_model, load_backbone

    folder = _remote_folder(tmp_path / "te-esm")
    for attempt in (lambda: load_backbone(str(folder)),
                    lambda: build_model(ModelConfig(name=str(folder)), 2)):
        with pytest.raises(FedbioError, match="auto_map.*runs Python code.*trust_remote_code=True"
                                              ".*--trust-remote-code") as err:
            attempt()
        assert "\n" not in str(err.value)
    assert not (folder / "CODE_RAN").exists()


def test_remote_hub_id_is_refused_before_its_code_is_fetched(tmp_path, monkeypatch):
    """A hub id whose cached config.json has an auto_map: refused from the config alone."""
    from fedbio.models import load_backbone

    snap = tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "refs").mkdir()
    (tmp_path / "hub" / "models--nvidia--esm2_t6_8M_UR50D" / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(json.dumps(
        {"model_type": "nv_esm", "vocab_size": 33, "auto_map": {"AutoModel": "esm_nv.NVEsmModel"}}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FedbioError, match="nvidia/esm2_t6_8M_UR50D.*nv_esm.*--trust-remote-code"):
        load_backbone("nvidia/esm2_t6_8M_UR50D")
    with pytest.raises(FedbioError, match="HF_HUB_OFFLINE"):  # opted in, but no weights or code here
        load_backbone("nvidia/esm2_t6_8M_UR50D", trust_remote_code=True)
    with pytest.raises(FedbioError, match="neither a preset, an existing folder nor"):
        load_backbone("someone/not-cached")


def test_remote_code_with_the_opt_in_keeps_the_backbone_interface(tmp_path):
    """Loaded in a fresh process with its own HF_MODULES_CACHE (transformers copies the code)."""
    folder = _remote_folder(tmp_path / "te-esm")
    code = textwrap.dedent(f"""
        import torch
        from fedbio.config import ModelConfig
        from fedbio.errors import FedbioError
        from fedbio.models import build_model, load_backbone, load_model, save_model
        tok, bb = load_backbone({str(folder)!r}, trust_remote_code=True)
        assert bb.family == "remote" and bb.hidden_size == 16 and bb.pad_token_id == 1, bb.family
        ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
        hidden = bb(ids, (ids != 1).long())
        assert hidden.shape == (2, 5, 16) and hidden.dtype == torch.float32
        assert not any(p.requires_grad for n, p in bb.named_parameters() if "pooler" in n)
        cfg = ModelConfig(name={str(folder)!r}, tuning="full", trust_remote_code=True)
        _, model = build_model(cfg, 3)
        model(ids).sum().backward()
        _, lora = build_model(ModelConfig(name={str(folder)!r}, tuning="lora", trust_remote_code=True), 3)
        save_model(model, cfg, ["a", "b", "c"], {str(tmp_path / "saved")!r})
        try:
            load_model({str(tmp_path / "saved")!r})
            raise SystemExit("loaded remote code without the opt-in")
        except FedbioError as err:
            assert "trust_remote_code" in str(err)
        _, back, _ = load_model({str(tmp_path / "saved")!r}, trust_remote_code=True)
        model.eval()
        assert torch.equal(back(ids), model(ids))
        print("OK")
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert (folder / "CODE_RAN").exists()


def test_lora_is_refused_for_fused_attention():
    from torch import nn

    from fedbio.models.backbone import Backbone

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"hidden_size": 8, "pad_token_id": 1})()
            self.layernorm_qkv = nn.Linear(8, 24)

    assert Backbone(Fused(), "te", family="remote").lora_targets == []


# -- profiles and env_check report the same resolution ------------------------------------------
@needs_no_cuda
def test_profile_runtime_and_env_check_agree():
    from fedbio.bench import env_check
    from fedbio.training.profiles import resolve_profile, runtime

    ran = runtime(resolve_profile("quick"))
    assert (ran["backend"], ran["device"], ran["precision"]) == ("hf", "cpu", "32")
    env = env_check.check_environment()
    assert (env["backend_session"], env["device"], env["precision"]) == ("hf", "cpu", "32")
    table = env_check.environment_table(env)
    assert table.loc["device", "value"] == "cpu" and table.loc["precision", "value"] == "32"
    gpu = env_check.with_machine(env, cuda=True, gpu="NVIDIA H100 80GB HBM3", gpu_count=1, bf16=True)
    assert gpu["precision"] == "bf16-mixed" and gpu["device"] == "cuda"
    fp32 = env_check.with_machine(env, cuda=True, gpu="NVIDIA H100 80GB HBM3", gpu_count=1, bf16=True,
                                  precision="32")
    assert env_check.machine_rate(fp32)["flops"] == env_check.machine_rate(gpu)["flops"] / 2


def test_run_key_follows_every_setting_that_decides_a_result():
    from dataclasses import replace

    from fedbio.training.run import plan, run_key

    cfg = plan(mode="central", model="composition", profile="quick", seed=0)
    key = run_key(cfg)
    assert len(key) == 10 and key == run_key(plan(mode="central", model="composition", profile="quick"))
    assert key != run_key(replace(cfg, train=replace(cfg.train, device="cpu")))
    assert key != run_key(replace(cfg, model=replace(cfg.model, trust_remote_code=True)))
    assert key == run_key(replace(cfg, profile_reason="another reason"))  # says why, decides nothing
    assert plan(profile="quick", device="cpu", precision="32", backend="auto").train.device == "cpu"


def test_write_sequences_csv(tmp_path):
    from fedbio.backends.bionemo.csvio import write_sequences_csv

    path = write_sequences_csv(["MKVL" + "A" * 20 + "KDEL", "mkv"], tmp_path / "s.csv", max_length=8)
    assert path.read_text().splitlines() == ["sequences", "MKVLKDEL", "MKV"]
    with pytest.raises(DataError, match="record 2: not a protein"):
        write_sequences_csv(["MKV", "M1V"], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
