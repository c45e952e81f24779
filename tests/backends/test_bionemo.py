"""fedbio.backends.bionemo without BioNeMo: backend choice, finetune_esm2 arguments, CSVs, weight names,
result folders. BioNeMo itself never runs here (it needs CUDA); a stand-in package on sys.path
plays ``bionemo`` where an import must be seen to happen, or not to."""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, SCL
from torch import nn

from fedbio.backends.bionemo import (
    BACKENDS,
    bionemo_available,
    checkpoint_tag,
    finetune_args,
    from_exchange,
    num_steps,
    read_bionemo_csv,
    read_metrics,
    resolve_backend,
    split_prefix,
    to_argv,
    to_exchange,
    wrapper_prefix,
    write_bionemo_csv,
)
from fedbio.backends.bionemo.args import FINETUNE_ESM2_OPTIONS
from fedbio.config import ModelConfig
from fedbio.data.records import Record, class_list, read_records
from fedbio.errors import DataError, FedbioError
from fedbio.training.profiles import resolve_profile

CLASSES = ["Cell_membrane", "Cytoplasm", "Endoplasmic_reticulum", "Extracellular",
           "Golgi_apparatus", "Lysosome/Vacuole", "Mitochondrion", "Nucleus", "Peroxisome",
           "Plastid"]


@pytest.fixture
def fake_bionemo(tmp_path):
    """A stand-in ``bionemo`` namespace: ``bionemo.esm2`` records being imported,
    ``bionemo.core.data.load.load`` returns a path under the cache."""
    root = tmp_path / "site"
    (root / "bionemo" / "esm2").mkdir(parents=True)
    (root / "bionemo" / "esm2" / "__init__.py").write_text(
        "import os\nopen(os.environ['FAKE_BIONEMO_MARK'], 'w').write('imported')\n")
    (root / "bionemo" / "core" / "data").mkdir(parents=True)
    (root / "bionemo" / "core" / "__init__.py").write_text("")
    (root / "bionemo" / "core" / "data" / "__init__.py").write_text("")
    (root / "bionemo" / "core" / "data" / "load.py").write_text(
        "def load(tag):\n    return '/cache/bionemo/' + tag.replace('/', '_').replace(':', '_')\n")
    return root


def _run(code: str, fake_root, tmp_path, cuda: bool = False) -> subprocess.CompletedProcess:
    mark = tmp_path / "mark"
    prelude = "import torch\ntorch.cuda.is_available = lambda: True\n" if cuda else ""
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
        env={"PYTHONPATH": f"{fake_root}:{ROOT}", "FAKE_BIONEMO_MARK": str(mark),
             "PATH": "/usr/bin:/bin"}, timeout=120, cwd=tmp_path)


# -- importing never imports BioNeMo (or NVFlare) ------------------------------------------------
def test_import_does_not_import_bionemo_or_nvflare(fake_bionemo, tmp_path):
    out = _run("""
        import sys
        import fedbio.backends.bionemo
        from fedbio.backends.bionemo import resolve_backend
        assert resolve_backend("auto") == "bionemo", resolve_backend("auto")   # located, not imported
        loaded = [m for m in sys.modules if m.startswith(("bionemo.", "nvflare"))]
        assert not loaded, loaded
        print("ok")
    """, fake_bionemo, tmp_path, cuda=True)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "mark").exists(), "bionemo.esm2 was imported"


def test_the_default_checkpoint_loader_imports_bionemo_lazily(fake_bionemo, tmp_path):
    out = _run("""
        from fedbio.backends.bionemo import finetune_args, load_checkpoint
        from fedbio.training.profiles import resolve_profile
        p = resolve_profile("reference")
        print(load_checkpoint("esm2-8m"))
        a = finetune_args(p.model, p.train, p.data, task_type="regression", n_train=10,
                          train_csv="t.csv", valid_csv="v.csv", result_dir="r", bf16=True)
        print(a["restore_from_checkpoint_path"])
    """, fake_bionemo, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/cache/bionemo/esm2_8m_2.0", "/cache/bionemo/esm2_650m_2.0"]


def test_load_checkpoint_without_bionemo_says_where_to_run():
    from fedbio.backends.bionemo import load_checkpoint

    if importlib.util.find_spec("bionemo") is not None:  # pragma: no cover - inside the container
        pytest.skip("BioNeMo is installed here")
    with pytest.raises(FedbioError, match="inside the container"):
        load_checkpoint("esm2-650m")


# -- resolve_backend -----------------------------------------------------------------------------
@pytest.fixture
def machine(monkeypatch):
    """Set what torch and importlib report: ``machine(cuda=..., bionemo=...)``."""
    real = importlib.util.find_spec

    def set_machine(cuda: bool, bionemo: bool | str):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)

        def find_spec(name, *args):
            if name == "bionemo.esm2":
                if bionemo == "no-parent":
                    raise ModuleNotFoundError("No module named 'bionemo'")
                return object() if bionemo else None
            return real(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return set_machine


@pytest.mark.parametrize("cuda,bionemo,expected", [
    (False, False, "hf"), (False, "no-parent", "hf"), (False, True, "hf"),
    (True, False, "hf"), (True, "no-parent", "hf"), (True, True, "bionemo")])
def test_auto_picks_bionemo_only_with_cuda_and_bionemo(machine, cuda, bionemo, expected):
    machine(cuda, bionemo)
    assert resolve_backend("auto") == expected
    assert resolve_backend() == expected
    assert bionemo_available()[0] == (expected == "bionemo")
    assert resolve_backend("hf") == "hf"


@pytest.mark.parametrize("cuda,bionemo,missing", [
    (False, True, "a CUDA GPU"), (True, False, "BioNeMo Framework"),
    (False, "no-parent", "a CUDA GPU and BioNeMo Framework")])
def test_asking_for_bionemo_where_it_cannot_run_says_why(machine, cuda, bionemo, missing):
    machine(cuda, bionemo)
    with pytest.raises(FedbioError) as err:
        resolve_backend("bionemo")
    assert missing in str(err.value) and "docker compose up" in str(err.value)


def test_bionemo_where_it_can_run(machine):
    machine(True, True)
    assert resolve_backend("bionemo") == "bionemo"
    assert resolve_backend(" BioNeMo ") == "bionemo"


def test_unknown_backend():
    with pytest.raises(FedbioError, match="unknown backend"):
        resolve_backend("jax")
    assert BACKENDS == ("auto", "hf", "bionemo")


def test_this_cpu_machine_picks_hf():
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("this machine has CUDA")
    assert resolve_backend("auto") == "hf"


# -- finetune_args -------------------------------------------------------------------------------
def fake_load(calls):
    def load(tag):
        calls.append(tag)
        return f"/ckpt/{tag}"
    return load


@pytest.mark.parametrize("name,tag", [("esm2-8m", "esm2/8m:2.0"), ("esm2-650m", "esm2/650m:2.0"),
                                      ("esm2-3b", "esm2/3b:2.0")])
def test_checkpoint_tags(name, tag):
    assert checkpoint_tag(name) == tag


@pytest.mark.parametrize("name", ["esm2-tiny", "esm2-35m", "esm2-150m", "composition", "/some/folder"])
def test_other_models_have_no_bionemo_checkpoint(name):
    with pytest.raises(FedbioError, match="no BioNeMo ESM-2nv checkpoint"):
        checkpoint_tag(name)


def _reference_args(tuning="head", **kw):
    prof = resolve_profile("reference")
    calls = []
    model = ModelConfig(**{**prof.model.__dict__, "tuning": tuning})
    args = finetune_args(model, prof.train, prof.data,
                         **{"task_type": "classification", "classes": CLASSES, "n_train": 1510,
                            "train_csv": "site-1/train.csv", "valid_csv": "site-1/valid.csv",
                            "result_dir": "runs/bionemo", "bf16": True, "load": fake_load(calls),
                            **kw})
    return args, calls


def test_reference_profile_as_bionemo_arguments():
    args, calls = _reference_args()
    assert calls == ["esm2/650m:2.0"]
    assert args["restore_from_checkpoint_path"] == "/ckpt/esm2/650m:2.0"
    assert args["task_type"] == "classification" and args["mlp_target_size"] == 10
    assert args["encoder_frozen"] is True and args["lora_finetune"] is False
    assert args["mlp_hidden_size"] == 256 and args["mlp_ft_dropout"] == 0.1
    assert args["lr"] == 5e-4 and args["micro_batch_size"] == 64
    assert args["num_steps"] == math.ceil(50 * 1510 / 64) == 1180
    assert args["val_check_interval"] == math.ceil(1510 / 64)  # once per epoch
    assert args["max_seq_length"] == 512 + 2
    assert args["precision"] == "bf16-mixed"
    assert args["classes"] == CLASSES  # the global order, untouched
    assert args["train_data_path"] == "site-1/train.csv"


@pytest.mark.parametrize("tuning,frozen,lora", [("head", True, False), ("lora", False, True),
                                                ("full", False, False)])
def test_tuning_modes(tuning, frozen, lora):
    args, _ = _reference_args(tuning)
    assert (args["encoder_frozen"], args["lora_finetune"]) == (frozen, lora)
    argv = to_argv(args)
    assert ("--encoder-frozen" in argv) == frozen
    assert ("--lora-finetune" in argv) == lora


def test_regression_and_precision_and_gpus():
    args, _ = _reference_args(task_type="regression", classes=None, bf16=False, num_gpus=4)
    assert args["task_type"] == "regression" and args["mlp_target_size"] == 1
    assert args["classes"] is None
    assert args["precision"] == "fp32"
    assert args["micro_batch_size"] == 16 and args["num_gpus"] == 4
    args, calls = _reference_args(checkpoint="/my/ckpt", precision="16-mixed")
    assert args["restore_from_checkpoint_path"] == "/my/ckpt" and calls == []
    assert args["precision"] == "16-mixed"


def test_precision_follows_the_machine_when_not_given():
    args, _ = _reference_args(bf16=None)
    expected = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    assert args["precision"] == expected


@pytest.mark.parametrize("change,match", [
    ({"task_type": "regression"}, "takes no class list"),
    ({"classes": None}, "global class list"),
    ({"classes": ["a"]}, "global class list"),
    ({"classes": ["a", "a"]}, "repeats"),
    ({"task_type": "ranking"}, "unknown task type"),
    ({"num_gpus": 3}, "does not split"),
    ({"precision": "int8"}, "unknown precision"),
    ({"n_train": 0}, "no training records"),
])
def test_bad_arguments_are_refused(change, match):
    with pytest.raises(FedbioError, match=match):
        _reference_args(**change)


def test_models_without_a_bionemo_counterpart_are_refused():
    prof = resolve_profile("quick")
    kw = {"task_type": "classification", "classes": CLASSES, "n_train": 10, "train_csv": "a",
          "valid_csv": "b", "result_dir": "r", "load": fake_load([])}
    with pytest.raises(FedbioError, match="no BioNeMo ESM-2nv checkpoint"):
        finetune_args(prof.model, prof.train, prof.data, **kw)  # esm2-tiny
    with pytest.raises(FedbioError, match="composition"):
        finetune_args(ModelConfig(name="composition"), prof.train, prof.data, **kw)


def test_num_steps():
    assert num_steps(1, 64, 64) == 1
    assert num_steps(1, 65, 64) == 2
    assert num_steps(0.5, 100, 32) == 2
    assert num_steps(3, 1000, 32) == 94
    with pytest.raises(FedbioError):
        num_steps(0, 10, 2)


def _upstream_parser() -> argparse.ArgumentParser:
    """The options of BioNeMo's ``finetune_esm2`` that finetune_args sets, with their types."""
    p = argparse.ArgumentParser()
    for name in ("train-data-path", "valid-data-path", "result-dir", "experiment-name",
                 "restore-from-checkpoint-path", "config-class", "dataset-class", "task-type",
                 "precision"):
        p.add_argument(f"--{name}", type=str)
    for name in ("mlp-target-size", "mlp-hidden-size", "micro-batch-size", "num-gpus", "num-steps",
                 "val-check-interval", "log-every-n-steps", "max-seq-length", "save-top-k"):
        p.add_argument(f"--{name}", type=int)
    for name in ("mlp-ft-dropout", "lr", "limit-val-batches"):
        p.add_argument(f"--{name}", type=float)
    for name in ("encoder-frozen", "lora-finetune", "create-tensorboard-logger"):
        p.add_argument(f"--{name}", action="store_true")
    return p


def test_argv_parses_back_to_the_arguments():
    args, _ = _reference_args("lora")
    argv = to_argv(args)
    assert "--classes" not in argv  # the stock finetune_esm2 has no such option
    parsed = vars(_upstream_parser().parse_args(argv))
    for key, value in args.items():
        if key in ("classes", "checkpoint_tag"):
            continue
        assert key in FINETUNE_ESM2_OPTIONS
        assert parsed[key] == value, key


def test_argv_with_the_class_list():
    args, _ = _reference_args()
    argv = to_argv(args, classes=True)
    assert argv[-2:] == ["--classes", ",".join(CLASSES)]
    args["classes"] = ["a,b", "c"]
    with pytest.raises(FedbioError, match="comma"):
        to_argv(args, classes=True)
    with pytest.raises(FedbioError, match="not finetune_esm2 options"):
        to_argv({**args, "seed": 1})


# -- the CSV -------------------------------------------------------------------------------------
def test_csv_round_trip_with_the_global_class_list(tmp_path):
    records = read_records(SCL)
    classes = class_list(records)
    site = [r for r in records if r.label not in ("Peroxisome", "Plastid")][:50]  # a skewed site
    path = write_bionemo_csv(site, tmp_path / "site-1" / "train.csv", classes)
    lines = path.read_text().splitlines()
    assert lines[0] == "sequences,labels" and len(lines) == 51
    back = read_bionemo_csv(path, classes)
    assert [(r.sequence, r.label) for r in back] == [(r.sequence, r.label) for r in site]
    assert any(r.label == "Lysosome/Vacuole" for r in read_bionemo_csv(
        write_bionemo_csv(records, tmp_path / "all.csv", classes), classes))


def test_csv_refuses_a_label_outside_the_class_list(tmp_path):
    records = [Record("p1", "MKTAYIAK", "Nucleus"), Record("p2", "MKLLV", "Vacuole")]
    with pytest.raises(DataError, match="p2: label 'Vacuole' is not in the global class list"):
        write_bionemo_csv(records, tmp_path / "x.csv", CLASSES)
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(FedbioError, match="global class list"):
        write_bionemo_csv(records, tmp_path / "x.csv", task_type="classification")
    (tmp_path / "y.csv").write_text("sequences,labels\nMKT,Nucleus\nMKV,Golgi\n")
    with pytest.raises(DataError, match="y.csv:3"):
        read_bionemo_csv(tmp_path / "y.csv", CLASSES)


def test_csv_regression_values(tmp_path):
    pairs = [("MKTAYIAK", 0.1), ("MKLLVW", -2.5e-7), ("ACDE", 3)]
    path = write_bionemo_csv(pairs, tmp_path / "r.csv")
    back = read_bionemo_csv(path)
    assert [r.label for r in back] == [0.1, -2.5e-7, 3.0]
    with pytest.raises(DataError, match="not a number"):
        write_bionemo_csv([("MKT", "high")], tmp_path / "bad.csv")
    with pytest.raises(DataError, match="finite"):
        write_bionemo_csv([("MKT", float("nan"))], tmp_path / "bad.csv")
    with pytest.raises(FedbioError, match="no class list"):
        write_bionemo_csv(pairs, tmp_path / "bad.csv", CLASSES, task_type="regression")


def test_csv_crops_both_ends_and_checks_sequences(tmp_path):
    seq = "M" + "A" * 100 + "KDEL"
    path = write_bionemo_csv([(seq, "Nucleus")], tmp_path / "c.csv", CLASSES, max_length=10)
    cropped = read_bionemo_csv(path, CLASSES)[0].sequence
    assert cropped == "MAAAA" + "AKDEL"  # the C-terminal signal survives
    with pytest.raises(DataError, match="not a protein sequence"):
        write_bionemo_csv([("MK1", "Nucleus")], tmp_path / "c.csv", CLASSES)
    with pytest.raises(FedbioError, match="no records"):
        write_bionemo_csv([], tmp_path / "c.csv", CLASSES)


# -- weight exchange -----------------------------------------------------------------------------
class TELinear(nn.Linear):
    """A linear layer with TransformerEngine-style extra state in its state dict."""

    def get_extra_state(self):
        return torch.tensor([1.0, 2.0])

    def set_extra_state(self, state):
        self.loaded_extra = state


class Adapter(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.linear_in = nn.Linear(h, 2, bias=False)
        self.linear_out = nn.Linear(2, h, bias=False)


class QKV(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.to_wrap = TELinear(h, 3 * h)
        self.adapter = Adapter(h)


class Layer(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.self_attention = nn.Module()
        self.self_attention.linear_qkv = QKV(h)


class TinyESM2(nn.Module):
    """Megatron-ish names: embedding., encoder.layers.N..., classification_head."""

    def __init__(self, h=8, n=3):
        super().__init__()
        self.embedding = nn.Module()
        self.embedding.word_embeddings = nn.Embedding(33, h)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([Layer(h), Layer(h)])
        self.encoder.final_layernorm = nn.LayerNorm(h)
        self.classification_head = nn.Module()
        self.classification_head.finetune_model = nn.Sequential(nn.Linear(h, 4), nn.ReLU(),
                                                                nn.Linear(4, n))


class Wrap(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def wrapped(precision: str, seed: int):
    torch.manual_seed(seed)
    inner = TinyESM2()
    return Wrap(Wrap(inner)) if precision == "bf16-mixed" else Wrap(inner)


def test_state_dict_of_the_stand_in_looks_like_megatron():
    sd = wrapped("bf16-mixed", 0).state_dict()
    assert "module.module.encoder.layers.0.self_attention.linear_qkv.to_wrap._extra_state" in sd
    assert "module.module.classification_head.finetune_model.2.weight" in sd


@pytest.mark.parametrize("tuning", ["full", "lora", "head"])
def test_exchange_round_trip_between_precisions(tuning):
    sender, receiver = wrapped("bf16-mixed", 0), wrapped("fp32", 1)
    sent = to_exchange(sender.state_dict(), tuning)
    assert not any(k.startswith(("module.", "model.")) or k.endswith("_extra_state") for k in sent)
    if tuning == "head":
        assert all(k.startswith("classification_head.") for k in sent) and len(sent) == 4
    if tuning == "lora":
        assert {k for k in sent if ".adapter." in k} and not any("to_wrap" in k for k in sent)
    if tuning == "full":
        assert "embedding.word_embeddings.weight" in sent
    local = receiver.state_dict()
    loaded = from_exchange(sent, precision="fp32", local=local)
    assert all(k.startswith("module.") and not k.startswith("module.module.") for k in loaded)
    result = receiver.load_state_dict(loaded, strict=False)
    assert not result.unexpected_keys
    after = receiver.state_dict()
    for name, value in sent.items():
        assert torch.equal(after["module." + name], value)


def test_exchange_keeps_only_trainable_parameters():
    model = wrapped("bf16-mixed", 0)
    for name, p in model.named_parameters():
        p.requires_grad_("classification_head" in name or "adapter" in name)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    sent = to_exchange(model.state_dict(), "full", trainable=trainable)
    assert set(sent) == {split_prefix(n)[1] for n in trainable}
    sent = to_exchange(model.state_dict(), "lora", trainable=trainable)
    assert set(sent) == {split_prefix(n)[1] for n in trainable}


def test_exchange_refusals():
    sd = wrapped("bf16-mixed", 0).state_dict()
    with pytest.raises(FedbioError, match="nothing to exchange"):
        to_exchange({"module.x._extra_state": 1}, "full")
    with pytest.raises(FedbioError, match="share the name"):
        to_exchange({"module.a.weight": 1, "module.module.a.weight": 2}, "full")
    with pytest.raises(FedbioError, match="unknown tuning"):
        to_exchange(sd, "prefix")
    with pytest.raises(FedbioError, match="wrapper prefix"):
        from_exchange({"module.a.weight": 1})
    with pytest.raises(FedbioError, match="extra state"):
        from_exchange({"a._extra_state": 1})
    with pytest.raises(FedbioError, match="not in the local model"):
        from_exchange({"classification_head.nope.weight": 1}, local=sd)


def test_prefixes():
    assert split_prefix("module.module.encoder.x") == ("module.module.", "encoder.x")
    assert split_prefix("model.module.classification_head.w") == ("model.module.",
                                                                  "classification_head.w")
    assert split_prefix("encoder.x") == ("", "encoder.x")
    assert wrapper_prefix("bf16-mixed") == "module.module."
    assert wrapper_prefix("fp32") == "module."
    assert from_exchange({"a.w": 1}, prefix="") == {"a.w": 1}


# -- BioNeMo's result folder ---------------------------------------------------------------------
def _fake_run(tmp_path, experiment="fedbio"):
    from torch.utils.tensorboard import SummaryWriter

    exp = tmp_path / "results" / experiment
    ckpts = exp / "dev" / "checkpoints"
    for name in ("checkpoint-step=9-consumed_samples=640.0",
                 "checkpoint-step=19-consumed_samples=1280.0-last",
                 "checkpoint-step=19-consumed_samples=1280.0"):
        (ckpts / name / "weights").mkdir(parents=True)
    for sub, steps in (("dev", (9,)), (f"{experiment}/version_0", (19,))):
        writer = SummaryWriter(str(exp / sub))
        for step in steps:
            writer.add_scalar("val_acc", 0.5 + step / 100, step)
            writer.add_scalar("val_loss", 2.0 - step / 10, step)
        writer.add_scalar("reduced_train_loss", 1.0 + steps[0], steps[0])
        writer.close()
    return tmp_path / "results"


def test_read_metrics_from_the_assumed_layout(tmp_path):
    result = read_metrics(_fake_run(tmp_path))
    assert result["checkpoint"].endswith("checkpoint-step=19-consumed_samples=1280.0-last")
    assert [c["step"] for c in result["checkpoints"]] == [19, 19, 9]
    assert result["checkpoints"][0]["last"]
    assert result["scalars"]["val_acc"] == [(9, pytest.approx(0.59)), (19, pytest.approx(0.69))]
    assert result["final"]["val_loss"] == pytest.approx(0.1)
    assert set(result["final"]) == {"val_acc", "val_loss", "reduced_train_loss"}
    assert len(result["event_files"]) == 2


def test_read_metrics_of_a_missing_run(tmp_path):
    with pytest.raises(FedbioError, match="not found"):
        read_metrics(tmp_path, "nothing-here")
    (tmp_path / "empty" / "dev").mkdir(parents=True)
    result = read_metrics(tmp_path, "empty")
    assert result["checkpoint"] is None and result["scalars"] == {} and result["final"] == {}
