"""fedbio.bench.env_check (what this machine is, what each profile costs here) and fedbio.bench.gpu's
arithmetic and its refusal to run without CUDA."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from fedbio.bench import env_check
from fedbio.bench import gpu as gpu_bench
from fedbio.bench.gpu import (
    Shape,
    attention_flops_per_token,
    encoder_params,
    forward_flops,
    head_params,
    matmul_flops,
    mfu,
    train_flops_per_step,
)
from fedbio.cli import main as cli_main
from fedbio.errors import FedbioError
from fedbio.training.profiles import resolve_profile

H100 = {"cuda": True, "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1, "bf16": True}


@pytest.fixture(scope="module")
def env():
    return env_check.check_environment()


# -- check_environment ---------------------------------------------------------------------------
def test_environment_facts(env):
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["torch"] == torch.__version__
    assert env["cuda"] == torch.cuda.is_available()
    assert env["nvflare"] == "2.9.0"
    assert env["transformers"].split(".")[0] in ("4", "5")
    assert env["cpu_cores"] >= 1
    assert env["profile"] == resolve_profile("auto").name
    assert env["profile_session"] == resolve_profile().name
    assert env["backend"] in ("hf", "bionemo")


def test_cpu_machine_is_reported_honestly(env):
    if env["cuda"]:  # pragma: no cover - GPU machines
        pytest.skip("this machine has CUDA")
    assert env["backend"] == "hf"
    assert env["gpu"] is None and env["gpu_memory_gb"] is None and env["bf16"] is None
    assert env["gpu_count"] == 0
    assert env["bionemo"] is None
    assert env["profile"] in ("quick", "laptop")
    assert env["machine"].startswith("CPU, ")
    assert "CUDA GPU" in env["backend_reason"]


def test_check_environment_imports_neither_nvflare_nor_bionemo():
    code = ("import sys; from fedbio.bench import env_check; env_check.check_environment(); "
            "bad = [m for m in sys.modules if m.startswith(('nvflare', 'bionemo'))]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_environment_table(env):
    table = env_check.environment_table(env)
    assert table.loc["CUDA available", "value"] == ("yes" if env["cuda"] else "no")
    assert table.loc["backend `auto` picks", "value"] == env["backend"]
    assert table.loc["profile `auto` picks", "value"] == env["profile"]
    assert table.loc["NVFlare", "value"] == "2.9.0"
    assert table.loc["profile `auto` picks", "note"] == env["profile_reason"]


# -- the profile table and its cost model --------------------------------------------------------
def test_profile_table(env):
    table = env_check.profile_table(env)
    assert list(table.index) == ["quick", "laptop", "reference"]
    assert table.loc["quick", "model"] == "esm2-tiny"
    assert table.loc["quick", "tuning"] == "full" and table.loc["quick", "crop"] == 64
    assert table.loc["reference", "model"] == "esm2-650m"
    assert table.loc["reference", "tuning"] == "head" and table.loc["reference", "epochs"] == 50
    assert table.loc[env["profile"], "auto picks"] == "<- auto"
    assert (table["auto picks"] == "<- auto").sum() == 1
    assert table.loc["quick", "available here"] == "yes"
    seconds = table["seconds (est.)"]
    assert 0 < seconds["quick"] < seconds["laptop"] < seconds["reference"]
    column = [c for c in table.columns if c.startswith("est. one central run")]
    assert column == [f"est. one central run ({env['machine']})"]


def test_cpu_estimates_match_what_was_measured(env):
    """Calibration points (2 cores): a quick central run about a minute; encoding every record
    with esm2-8m at crop 512 about 6-7 minutes (`fedbio bench train`: 12 proteins/s)."""
    two_cores = env_check.with_machine(env, cuda=False, cpu_cores=2)
    table = env_check.profile_table(two_cores)
    assert 30 <= table.loc["quick", "seconds (est.)"] <= 180
    assert 240 <= table.loc["laptop", "seconds (est.)"] <= 900
    assert table.loc["reference", "seconds (est.)"] > 3 * 3600  # hours: a GPU job


def test_gpu_estimates(env):
    gpu = env_check.with_machine(env, **H100)
    assert gpu["profile"] == "reference" and gpu["machine"] == "NVIDIA H100 80GB HBM3"
    table = env_check.profile_table(gpu)
    cpu = env_check.profile_table(env_check.with_machine(env, cuda=False, cpu_cores=2))
    assert table.loc["reference", "seconds (est.)"] < cpu.loc["reference", "seconds (est.)"] / 100
    assert table.loc["reference", "seconds (est.)"] < 300
    assert table.loc["reference", "auto picks"] == "<- auto"


def test_gpu_peaks():
    assert env_check.gpu_peak_tflops("NVIDIA H100 80GB HBM3") == (989.0, True)
    assert env_check.gpu_peak_tflops("NVIDIA H100 PCIe") == (756.0, True)
    assert env_check.gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == (312.0, True)
    assert env_check.gpu_peak_tflops("NVIDIA L40S") == (362.0, True)
    assert env_check.gpu_peak_tflops("NVIDIA L4") == (121.0, True)
    assert env_check.gpu_peak_tflops("Mystery GPU")[1] is False


def test_workload_is_the_default_split():
    parts = env_check.workload(64)
    assert (len(parts["train"]), len(parts["valid"]), len(parts["test"])) == (1510, 168, 2768 + 490)
    assert max(parts["train"]) == 66 and min(parts["train"]) >= 42  # crop + <cls>/<eos>


def test_human_durations():
    assert env_check.human_duration(30) == "< 1 min"
    assert env_check.human_duration(600) == "~10 min"
    assert env_check.human_duration(5400) == "~1.5 h"


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "fedbio.bench.env_check"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "backend `auto` picks" in out.stdout and "reference" in out.stdout


# -- gpu_bench arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["esm2-tiny", "esm2-8m"])
def test_encoder_params_match_the_model(preset):
    from fedbio.models import esm_config
    from fedbio.models.backbone_loading import random_backbone

    backbone = random_backbone(esm_config(preset), preset)
    counted = sum(p.numel() for name, p in backbone.named_parameters()
                  if "word_embeddings" not in name and "contact_head" not in name)
    assert encoder_params(Shape.of(preset)) == counted


def test_counted_params_of_a_sequence_model():
    from fedbio.bench.common import random_model

    model = random_model("esm2-tiny", 10, "full")
    shape = Shape.of("esm2-tiny")
    assert gpu_bench.counted_params(model) == encoder_params(shape) + head_params(shape.hidden)


def test_known_parameter_counts():
    # Meta's published sizes include embeddings and the LM head; the encoder alone is close below
    assert 7.0e6 < encoder_params(Shape.of("esm2-8m")) < 7.8e6
    assert 640e6 < encoder_params(Shape.of("esm2-650m")) < 652e6
    assert head_params(1280, 256, 10) == 1280 * 256 + 256 + 256 * 10 + 10


def test_training_flops_formula():
    shape = Shape(layers=2, hidden=4, ffn=16)
    n, batch, seq = 1000, 3, 10
    tokens = batch * seq
    assert attention_flops_per_token(shape, seq, training=False) == 4 * 2 * 4 * 10
    assert attention_flops_per_token(shape, seq) == 12 * 2 * 4 * 10
    assert train_flops_per_step(n, shape, batch, seq) == 6 * n * tokens + 12 * 2 * 4 * seq * tokens
    # training = 3 x forward when every sequence has the same length
    assert train_flops_per_step(n, shape, batch, seq) == 3 * forward_flops(n, shape, [seq] * batch)


def test_flops_of_the_benchmarked_shapes():
    """The 650M shape at batch 16 x 514 tokens: about 3.5e13 model FLOPs a step, of which
    attention is a few percent."""
    shape = Shape.of("esm2-650m")
    n = encoder_params(shape) + head_params(shape.hidden)
    flops = train_flops_per_step(n, shape, 16, 514)
    dense = 6 * n * 16 * 514
    assert 3.0e13 < flops < 3.6e13
    assert 0.02 < (flops - dense) / flops < 0.1


def test_mfu_and_matmul_flops():
    assert matmul_flops(8192) == 2 * 8192 ** 3
    assert mfu(4e14, 1.0, 1e15) == pytest.approx(0.4)
    assert mfu(1e12, 0.01, 5e14) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        mfu(1.0, 0.0, 1.0)
    assert math.isclose(gpu_bench.MFU_GOAL, 0.35)


def test_checks_table_puts_the_goal_on_the_largest_model():
    row = {"batch": 16, "seq_len": 514, "tokens_per_s": 1e5, "proteins_per_s": 200.0,
           "model_tflops_per_s": 300.0}
    result = {"device": "GPU", "peak": {"tflops": 800.0},
              "models": {"esm2-8m": {**row, "params_counted": 7e6, "mfu": 0.1},
                         "esm2-650m": {**row, "params_counted": 6.5e8, "mfu": 0.4}}}
    rows = gpu_bench.checks(result)
    goals = {r["measure"].split()[0]: r["ok"] for r in rows if "MFU" in r["measure"]}
    assert goals == {"esm2-8m": None, "esm2-650m": True}


# -- gpu_bench refuses to run without CUDA -------------------------------------------------------
def test_gpu_bench_refuses_cpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FedbioError, match="needs|sees\\s+none|CUDA GPU"):
        gpu_bench.run_gpu_bench()
    assert gpu_bench.main([]) == 2
    assert "CUDA GPU" in capsys.readouterr().err
    assert cli_main(["bench", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedbio: error: fedbio bench gpu measures a CUDA GPU")


def test_gpu_bench_module_exits_nonzero_on_this_machine():
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("this machine has CUDA")
    out = subprocess.run([sys.executable, "-m", "fedbio.bench.gpu"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "sees none" in out.stderr and "Traceback" not in out.stderr


def test_gpu_bench_rejects_unknown_presets_before_any_gpu_work(capsys):
    assert gpu_bench.main(["--models", "esm9-huge"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
