"""Device and precision (fedbio.training.device), backend dispatch (Learner.build -> BioNemoLearner)
and the profiles' resolution as env_check reports it. No GPU and no BioNeMo here: CUDA is faked
where only the choice is tested. (The BioNeMo learner itself, with stand-ins for BioNeMo's
commands: tests/backends/test_bionemo_learner.py; remote-code checkpoints: tests/models/test_remote.py.)"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import SCL

import fedbio.training.device as device_mod
from fedbio.config import DataConfig, ModelConfig, TrainConfig
from fedbio.data.records import class_list, read_records
from fedbio.data.tasks import LabelCodec
from fedbio.errors import FedbioError
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


# -- CPU numbers do not depend on the device options ------------------------------------------------
# A 1-epoch fit of esm2-tiny (1 thread) with device "cpu" is the reference: "auto" (on a CPU) and an
# explicit precision "32" must give exactly its numbers. The reference is computed in the same run,
# not written down: PyTorch's CPU kernels differ by instruction set (the numbers recorded on one
# machine, 2.377495288848877 for the full fit's loss, were 2.377495765686035 on an AMD EPYC).
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


@pytest.fixture(scope="module")
def reference_fits(tiny_records):
    return {tuning: _tiny_fit(tiny_records, tuning, device="cpu") for tuning in ("full", "head")}


@needs_no_cuda
@pytest.mark.parametrize("tuning", ["full", "head"])
@pytest.mark.parametrize("train", [{"device": "cpu"}, {}, {"device": "cpu", "precision": "32"}])
def test_cpu_fit_is_bit_identical_whatever_the_device_options(tiny_records, reference_fits, tuning, train):
    learner, hist, out, wsum = _tiny_fit(tiny_records, tuning, **train)
    _, ref_hist, ref_out, ref_wsum = reference_fits[tuning]
    assert learner.placement.device == torch.device("cpu") and learner.placement.precision == "32"
    assert hist[0]["train_loss"] == ref_hist[0]["train_loss"]
    assert wsum == ref_wsum
    assert float(out[0, 0]) == float(ref_out[0, 0])
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
