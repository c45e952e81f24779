"""What this machine is, what fedbio will do on it, and what each profile costs here.

    from fedbio.bench import env_check
    env = env_check.check_environment()      # a dict: python, torch, CUDA, GPU, bf16, BioNeMo...
    env_check.environment_table(env)         # the same as a table (pandas)
    env_check.profile_table(env)             # quick / laptop / reference: model, tuning, crop,
                                             # epochs, and the estimated wall time on this machine

    python -m fedbio.bench.env_check               # both tables in a terminal

Nothing here downloads, trains or imports NVFlare or BioNeMo (versions come from package
metadata; BioNeMo is only located). The wall-time estimates are a FLOPs model of one central run
on the default split of the shipped data (see ``estimate_seconds``), calibrated on measured runs;
read them as "within a factor of two", and measure with ``fedbio bench train`` (CPU) or
``fedbio bench gpu`` (GPU).
"""

from __future__ import annotations

import math
import os
import platform
from functools import lru_cache
from importlib import metadata
from typing import Any

from fedbio.bench.common import cpu_count
from fedbio.bench.gpu import Shape, encoder_params, forward_flops, head_params

# Effective fp32 training/encoding throughput of one CPU core running fedbio's models, from
# `fedbio bench train` on this project's 2-core machine: esm2-tiny training at crop 512 and
# esm2-8m encoding both come to 70-80 GFLOP/s of model FLOPs on 2 cores.
CPU_FLOPS_PER_CORE = 35e9
# Dense bf16 tensor-core peaks (datasheets, TFLOP/s) by name fragment; the first match wins.
GPU_PEAK_TFLOPS = (("H200", 989), ("H100 PCIe", 756), ("H100", 989), ("H800", 989),
                   ("GH200", 989), ("B200", 2250), ("A100", 312), ("A800", 312), ("L40S", 362),
                   ("L40", 181), ("L4", 121), ("A30", 165), ("A10", 125), ("RTX 4090", 165),
                   ("RTX 6000 Ada", 364), ("A6000", 155))
UNKNOWN_GPU_TFLOPS = 100
GPU_EFFICIENCY = 0.30          # fraction of the bf16 peak a fedbio run reaches end to end
GPU_STEP_OVERHEAD_S = 0.004    # launch/optimizer/Python cost per batch, what small models pay
FIXED_S = {"cpu": 8.0, "gpu": 20.0}   # imports, model build, CUDA context, data reading
WEIGHTS_LOAD_S_PER_GB = 4.0    # reading a checkpoint from local disk

PACKAGES = (("torch", "torch"), ("transformers", "transformers"), ("NVFlare", "nvflare"),
            ("fedbio", "fedbio"))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _bionemo_version() -> str | None:
    from fedbio.backends.bionemo.backend import bionemo_esm2_available

    if not bionemo_esm2_available():
        return None
    return _version("bionemo-esm2") or _version("bionemo-core") or "present (version unknown)"


def check_environment() -> dict[str, Any]:
    """Facts about this machine and what fedbio picks on it, as a flat dict.

    Keys: python, platform, cpu_cores, torch, torch_cuda_build, cuda, gpu_count, gpu,
    gpu_memory_gb, bf16, bionemo, nvflare, transformers, fedbio, backend (what ``auto``
    resolves to: "bionemo" or "hf"), backend_reason, profile (what ``auto`` picks),
    profile_reason, profile_env ($FEDBIO_PROFILE or None), profile_session (what a notebook
    or ``fedbio run`` without ``--profile`` uses), backend_session / device / precision /
    runtime_reason (what that session profile runs on here: ``fedbio.training.profiles.runtime``, the
    resolvers ``Learner.build`` and the trainer use), machine (a short description).
    """
    import torch

    from fedbio.backends.bionemo.backend import bionemo_available, resolve_backend
    from fedbio.training.profiles import resolve_profile, runtime

    cuda = bool(torch.cuda.is_available())
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_cores": cpu_count(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda": cuda,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu": None,
        "gpu_memory_gb": None,
        "bf16": None,
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(props.total_memory / 1e9, 1)
        env["bf16"] = bool(torch.cuda.is_bf16_supported())
    env["bionemo"] = _bionemo_version()
    env["nvflare"] = _version("nvflare")
    env["transformers"] = _version("transformers")
    env["fedbio"] = _version("fedbio")
    env["backend"] = resolve_backend("auto")
    env["backend_reason"] = bionemo_available()[1]
    auto = resolve_profile("auto")
    env["profile"], env["profile_reason"] = auto.name, auto.reason
    env["profile_env"] = os.environ.get("FEDBIO_PROFILE") or None
    session = resolve_profile(None)
    env["profile_session"] = session.name
    ran = runtime(session)
    env["backend_session"], env["device"] = ran["backend"], ran["device"]
    env["precision"], env["runtime_reason"] = ran["precision"], ran["reason"]
    env["machine"] = machine_label(env)
    return env


LABELS = (
    ("python", "Python"), ("platform", "platform"), ("cpu_cores", "CPU cores (usable)"),
    ("torch", "torch"), ("torch_cuda_build", "torch built for CUDA"), ("cuda", "CUDA available"),
    ("gpu_count", "GPUs"), ("gpu", "GPU"), ("gpu_memory_gb", "GPU memory (GB)"),
    ("bf16", "bf16 supported"), ("bionemo", "BioNeMo (bionemo.esm2)"), ("nvflare", "NVFlare"),
    ("transformers", "transformers"), ("fedbio", "fedbio"),
    ("backend", "backend `auto` picks"), ("profile", "profile `auto` picks"),
    ("profile_env", "FEDBIO_PROFILE"), ("profile_session", "profile used here"),
    ("backend_session", "backend it runs on"), ("device", "device"), ("precision", "precision"),
)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def environment_table(env: dict[str, Any] | None = None):
    """``check_environment()`` as a pandas table: check, value, note."""
    import pandas as pd

    env = env or check_environment()
    notes = {
        "cuda": "" if env["cuda"] else "CPU only: the hf backend, small models",
        "torch_cuda_build": "" if env["torch_cuda_build"] else "a CPU build of torch",
        "bionemo": "" if env["bionemo"] else "only inside the GPU container (docker/README.md)",
        "backend": env["backend_reason"],
        "profile": env["profile_reason"],
        "profile_env": "" if env["profile_env"] else "unset: notebooks use `auto`",
        "backend_session": "ModelConfig.backend (profiles keep hf; --backend auto|bionemo)",
        "device": env.get("runtime_reason", ""),
        "precision": "TrainConfig.precision auto: bf16-mixed on a bf16 GPU, else 32",
    }
    rows = [{"check": label, "value": _shown(env.get(key)), "note": notes.get(key, "")}
            for key, label in LABELS]
    return pd.DataFrame(rows).set_index("check")


# -- cost model ----------------------------------------------------------------------------------
def machine_label(env: dict[str, Any]) -> str:
    if env.get("cuda"):
        n = env.get("gpu_count") or 1
        return f"{n} x {env['gpu']}" if n > 1 else str(env["gpu"])
    return f"CPU, {env['cpu_cores']} core{'s' if env['cpu_cores'] != 1 else ''}"


def gpu_peak_tflops(name: str | None) -> tuple[float, bool]:
    """(dense bf16 peak in TFLOP/s, known?) for a GPU name; unknown names get a guess."""
    for fragment, tflops in GPU_PEAK_TFLOPS:
        if name and fragment.lower() in name.lower():
            return float(tflops), True
    return float(UNKNOWN_GPU_TFLOPS), False


def machine_rate(env: dict[str, Any]) -> dict[str, Any]:
    """Effective model FLOP/s of a fedbio run here, and the per-batch overhead."""
    if env.get("cuda"):
        peak, known = gpu_peak_tflops(env.get("gpu"))
        bf16 = env["precision"] == "bf16-mixed" if env.get("precision") else env.get("bf16")
        if not bf16:
            peak /= 2  # float32 (TF32) training: roughly half the bf16 rate
        return {"kind": "gpu", "flops": peak * 1e12 * GPU_EFFICIENCY,
                "step_overhead": GPU_STEP_OVERHEAD_S, "known": known}
    cores = min(int(env.get("cpu_cores") or 1), 32)
    return {"kind": "cpu", "flops": CPU_FLOPS_PER_CORE * cores, "step_overhead": 0.0,
            "known": True}


@lru_cache(maxsize=1)
def _shipped_lengths() -> dict[str, tuple[int, ...]]:
    """Residue counts of the shipped records: the train pool, the test set and setHARD."""
    from fedbio.data.records import read_records
    from fedbio.paths import shipped

    records = read_records(shipped("scl/deeploc_valtest.fasta"))
    hard = read_records(shipped("scl/deeploc_setHARD.fasta"))
    return {"pool": tuple(len(r.sequence) for r in records if r.set != "test"),
            "test": tuple(len(r.sequence) for r in records if r.set == "test"),
            "hard": tuple(len(r.sequence) for r in hard)}


def workload(max_length: int, valid_fraction: float | None = None) -> dict[str, list[int]]:
    """Token lengths (crop + <cls>/<eos>) of the default split's parts: train, valid, test."""
    from fedbio.data.split import SplitConfig

    frac = SplitConfig().valid_fraction if valid_fraction is None else valid_fraction
    lengths = _shipped_lengths()
    tok = [min(n, max_length) + 2 for n in lengths["pool"]]
    n_valid = round(len(tok) * frac)
    return {"train": tok[n_valid:], "valid": tok[:n_valid],
            "test": [min(n, max_length) + 2 for n in lengths["test"] + lengths["hard"]]}


def estimate_seconds(model_cfg, data_cfg, train_cfg, env: dict[str, Any]) -> float:
    """Estimated wall seconds of one central run on the default split, on machine ``env``.

    Model FLOPs (``fedbio.bench.gpu``: 2 N per token forward plus attention) over the crop's
    token lengths: ``full`` trains (3x forward) on the training part every epoch, ``lora`` about
    2x forward (activation gradients through the frozen encoder), both score the validation part
    every epoch; ``head`` encodes every record once (cached embeddings) and trains only the head.
    All score the test sets once. Divided by the machine's effective rate (``machine_rate``),
    plus a per-batch overhead on GPUs and a fixed start-up cost.
    """
    from fedbio.models.presets import PRESETS

    rate = machine_rate(env)
    preset = PRESETS[model_cfg.name]
    shape = Shape(preset.num_layers, preset.hidden_size, preset.ffn_size)
    n = encoder_params(shape) + head_params(shape.hidden, model_cfg.head_hidden)
    parts = workload(data_cfg.max_length)
    fwd = {k: forward_flops(n, shape, v) for k, v in parts.items()}
    batches = {k: math.ceil(len(v) / train_cfg.batch_size) for k, v in parts.items()}
    epochs = train_cfg.epochs
    if model_cfg.tuning == "head":
        flops = sum(fwd.values())
        steps = sum(batches.values())
    else:
        factor = 3.0 if model_cfg.tuning == "full" else 2.0
        flops = epochs * (factor * fwd["train"] + fwd["valid"]) + fwd["test"]
        steps = epochs * (batches["train"] + batches["valid"]) + batches["test"]
    seconds = flops / rate["flops"] + steps * rate["step_overhead"] + FIXED_S[rate["kind"]]
    if preset.pretrained:
        seconds += 4 * (encoder_params(shape) / 1e9) * WEIGHTS_LOAD_S_PER_GB  # fp32 bytes
    return seconds


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return "< 1 min"
    if seconds < 3600:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


PROFILE_MEANING = {
    "quick": "the mechanics in minutes; a random encoder, so its accuracy is not the science",
    "laptop": "real protein-language-model features on a CPU (cached embeddings, MLP head)",
    "reference": "the reference recipe (NVIDIA: local 78.8 % -> FedAvg 81.7 %); a GPU job",
}


def profile_table(env: dict[str, Any] | None = None):
    """What each profile does and costs here, as a pandas table (one row per profile).

    Columns: model, tuning, crop, epochs, batch, lr, needs, available here, picked by ``auto``,
    the estimated wall time of one central run on this machine, and what its numbers mean.
    A local run (every site alone) costs about the same in total; a federated run the same
    compute plus NVFlare's fixed start-up and shut-down (about 20 s in the simulator).
    """
    import pandas as pd

    from fedbio.models import find_local_weights
    from fedbio.training.profiles import (
        LAPTOP_MODELS,
        laptop_settings,
        quick_settings,
        reference_settings,
    )

    env = env or check_environment()
    laptop_found = next((m for m in LAPTOP_MODELS if find_local_weights(m)), None)
    ref_found = find_local_weights("esm2-650m")
    plans = {
        "quick": (quick_settings(), "nothing (random init, offline)", True),
        "laptop": (laptop_settings(laptop_found or LAPTOP_MODELS[0]),
                   "esm2-8m or esm2-35m weights (`fedbio weights download esm2-8m`)",
                   laptop_found is not None),
        "reference": (reference_settings(), "esm2-650m weights (2.6 GB) and, in practice, a GPU",
                      ref_found is not None or env.get("backend") == "bionemo"),
    }
    column = f"est. one central run ({env.get('machine') or machine_label(env)})"
    rows = []
    for name, ((model_cfg, data_cfg, train_cfg), needs, available) in plans.items():
        model = model_cfg.name
        if name == "laptop" and laptop_found is None:
            model = f"{model} (or {LAPTOP_MODELS[1]})"
        seconds = estimate_seconds(model_cfg, data_cfg, train_cfg, env)
        rows.append({
            "profile": name,
            "model": model,
            "tuning": model_cfg.tuning,
            "crop": data_cfg.max_length,
            "epochs": train_cfg.epochs,
            "batch": train_cfg.batch_size,
            "lr": train_cfg.lr,
            "needs": needs,
            "available here": "yes" if available else "no",
            "auto picks": "<- auto" if env.get("profile") == name else "",
            column: human_duration(seconds),
            "seconds (est.)": round(seconds),
            "what its numbers mean": PROFILE_MEANING[name],
        })
    return pd.DataFrame(rows).set_index("profile")


def with_machine(env: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``env`` describing another machine (e.g. ``cuda=True, gpu="NVIDIA H100"``),
    for cost tables of machines one does not have."""
    out = dict(env, **changes)
    if out.get("cuda") and "profile" not in changes:
        out["profile"] = "reference"  # what `auto` picks on any CUDA machine
    if "precision" not in changes:  # what precision `auto` resolves to on that machine
        out["precision"] = "bf16-mixed" if out.get("cuda") and out.get("bf16") else "32"
    if "device" not in changes:
        out["device"] = "cuda" if out.get("cuda") else "cpu"
    out["machine"] = machine_label(out)
    return out


def main() -> int:
    import pandas as pd

    env = check_environment()
    with pd.option_context("display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 60):
        print(environment_table(env).to_string())
        print()
        print(profile_table(env).drop(columns=["what its numbers mean"]).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
